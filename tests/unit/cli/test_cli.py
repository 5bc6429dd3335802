"""lockerctl without a lane: parsing, keygen, config check/show, and the one-line errors
of the commands that cannot reach what they need."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest

from controller.lab.rig import free_port
from controller.security.signing import load_private_key
from controller.settings import load_settings
from controller.tools.lockerctl import build_parser, main
from controller.tools.remote import command_args, parse_broker
from tests.support.fresh_imports import modules_after

ROOT = Path(__file__).resolve().parents[3]
SIM_CONFIG = ROOT / "deploy" / "sim-cabinet.toml"
EXAMPLE_CONFIG = ROOT / "deploy" / "cabinet.example.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    for name in list(os.environ):
        if name.startswith("LOCKER_"):
            monkeypatch.delenv(name)


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:1884", ("127.0.0.1", 1884)),
    ("broker.lan:8883", ("broker.lan", 8883)),
    ("[::1]:8883", ("::1", 8883)),
])
def test_parse_broker(text: str, expected: tuple[str, int]) -> None:
    assert parse_broker(text) == expected


@pytest.mark.parametrize("text", ["host:port", ":1883", "host:0", "host:70000", "broker.lan",
                                  "::1", "[::1]"])
def test_parse_broker_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_broker(text)


def test_broker_without_a_port_is_an_error_not_a_guess(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["status", "--broker", "broker.lan", *REMOTE])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "broker 'broker.lan': give the port too, HOST:PORT" in err
    assert "broker.lan:8883 with TLS" in err


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(_all_parsers(child))
    return found


def test_every_option_and_argument_has_help_text() -> None:
    missing = []
    for parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction
                          | argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.parametrize("command", [
    ["keygen"], ["config", "check"], ["config", "show"], ["status"], ["watch"], ["cmd"],
    ["commission"], ["bus", "scan"], ["code-key", "pin"], ["code-key", "show"],
])
def test_every_command_that_prints_data_has_json(command: list[str]) -> None:
    parsers = {p.prog.removeprefix("lockerctl "): p for p in _all_parsers(build_parser())}
    options = {o for a in parsers[" ".join(command)]._actions for o in a.option_strings}
    assert "--json" in options


REMOTE = ["--site", "fr-lyon-07", "--cabinet", "cab-01"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["open", "A01"], ("open", {"compartment": "A01", "reason": "staff"})),
    (["open", "A01", "--reason", "customer_app"],
     ("open", {"compartment": "A01", "reason": "customer_app"})),
    (["assign", "--order", "g-1", "--size", "M", "--zone", "chilled", "--pool", "grocery",
      "--compartment", "A02"],
     ("assign", {"order_id": "g-1", "size": "M", "zone": "chilled", "pool": "grocery",
                 "compartment": "A02"})),
    (["release", "--order", "g-1"], ("release", {"order_id": "g-1"})),
    (["release", "--compartment", "A01"], ("release", {"compartment": "A01"})),
    (["block", "A01", "--reason", "hinge"], ("block", {"compartment": "A01",
                                                        "reason": "hinge"})),
    (["unblock", "A01", "--reason", "fixed"], ("unblock", {"compartment": "A01",
                                                            "reason": "fixed"})),
    (["clear-fault", "A03", "--reason", "latch replaced"],
     ("clear_fault", {"compartment": "A03", "reason": "latch replaced"})),
    (["get-state"], ("get_state", {})),
])
def test_command_args(argv: list[str], expected: tuple[str, dict[str, str]]) -> None:
    args = build_parser().parse_args(["cmd", *REMOTE, *argv])
    assert command_args(args) == expected


def test_release_needs_exactly_one_target(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cmd", *REMOTE, "--key", "/nonexistent", "release")
    assert code == 2
    assert err == ("lockerctl cmd: release takes exactly one of --compartment and --order\n")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["cmd", *REMOTE, "open"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["status", "--broker", "nohost:xx", *REMOTE])
    assert exc.value.code == 2
    capsys.readouterr()


# -- keygen ---------------------------------------------------------------------------------


def test_keygen_technician_writes_a_key_and_a_grant_the_cabinet_accepts_for_its_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    import time

    from controller.security.grants import RevocationList, check_grant
    from controller.security.signing import load_public_key

    code, _, err = run(capsys, "keygen", "--out", str(tmp_path / "root"), "--key-id", "root-1")
    assert code == 0, err
    code, stdout, err = run(capsys, "keygen", "--out", str(tmp_path / "tech"), "--json",
                            "--role", "technician", "--key-id", "tech-bob", "--site", "fr-x-1",
                            "--valid-hours", "2", "--root-key", str(tmp_path / "root/root-1.key"),
                            "--root-key-id", "root-1", "--grant-id", "g-bob")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["grant_id"] == "g-bob"
    assert stat.S_IMODE((tmp_path / "tech/tech-bob.key").stat().st_mode) == 0o600
    grant = json.loads((tmp_path / "tech/tech-bob.grant.json").read_text())
    roots = {"root-1": load_public_key(tmp_path / "root/root-1.pub")}
    checked = check_grant(grant, roots, site="fr-x-1", now_s=time.time(),
                          revoked=RevocationList())
    assert (checked.role, checked.key_id, checked.site) == ("technician", "tech-bob", "fr-x-1")
    assert checked.not_after - time.time() <= 2 * 3600
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path / "t2"), "--role", "technician",
                       "--key-id", "tech-eve", "--site", "fr-x-1", "--valid-hours", "200",
                       "--root-key", str(tmp_path / "root/root-1.key"))
    assert code == 2
    assert "valid-hours" in err


def test_keygen_writes_a_pair_and_prints_paths_and_the_config_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "keys"
    code, stdout, err = run(capsys, "keygen", "--out", str(out), "--key-id", "dispatch-2")
    assert code == 0, err
    private, public = out / "dispatch-2.key", out / "dispatch-2.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    load_private_key(private)
    assert f"private key: {private.resolve()} (mode 0600" in stdout
    assert f"public key:  {public.resolve()} (copy it to each cabinet as " \
        "/etc/locker/keys/dispatch-2.pub)" in stdout
    section = stdout[stdout.index("[security.dispatch_public_keys]"):]
    assert section.splitlines()[1] == 'dispatch-2 = "keys/dispatch-2.pub"'
    # The printed section, pasted into a cabinet config beside the copied .pub, is taken
    # by the cabinet's settings as it is; so is the inline form it gives as a comment.
    cabinet = tmp_path / "etc"
    (cabinet / "keys").mkdir(parents=True)
    (cabinet / "keys" / "dispatch-2.pub").write_bytes(public.read_bytes())
    base = SIM_CONFIG.read_text().replace("require_signed_commands = false",
                                          "require_signed_commands = true")
    inline = section.splitlines()[2].removeprefix("# or inline, with no file to copy: ")
    private_key = load_private_key(private)
    for text in (section, f"[security.dispatch_public_keys]\n{inline}\n"):
        config = cabinet / "cabinet.toml"
        config.write_text(base + "\n" + text)
        settings = load_settings(config, env={})
        assert list(settings.security.dispatch_public_keys) == ["dispatch-2"]
        assert settings.security.public_key("dispatch-2") == \
            private_key.public_key().public_bytes_raw()


def test_keygen_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "keygen", "--out", str(tmp_path), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["private_key"] == str((tmp_path / "dispatch-1.key").resolve())
    assert data["public_key"] == str((tmp_path / "dispatch-1.pub").resolve())
    assert data["cabinet_config"].startswith("[security.dispatch_public_keys]\n")


def test_output_into_a_pipe_is_never_wrapped(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS")
    code, stdout, err = run(capsys, "config", "check", str(EXAMPLE_CONFIG), "--no-files")
    assert code == 0, err
    ids = " ".join(f"A{n:02d}" for n in range(1, 17)) + " " + \
        " ".join(f"B{n:02d}" for n in range(1, 9))
    assert any(ids in line for line in stdout.splitlines()), stdout
    assert "\x1b[" not in stdout


def test_event_lines_are_not_cut_into_a_pipe() -> None:
    from controller.tools.lockerctl import make_console
    from controller.tools.render import describe_event

    payload = {"seq": 3, "kind": "door_opened", "compartment": "A01",
               "data": {"note": "x" * 300, "after_pulse_s": 0.05}}
    assert "…" in describe_event(payload).plain
    assert ("x" * 300) in describe_event(payload, full=True).plain
    assert not make_console().is_terminal  # pytest captures stdout
    assert make_console().width >= 10_000


def test_config_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "config", "check", str(EXAMPLE_CONFIG), "--json")
    assert code == 2
    data = json.loads(stdout)
    assert data["ok"] is False
    assert any("mqtt.tls.ca_file" in p for p in data["problems"])
    code, stdout, _ = run(capsys, "config", "check", str(EXAMPLE_CONFIG), "--no-files",
                          "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["ok"] is True
    assert data["cabinet"] == "fr-lyon-07/cab-01"
    assert len(data["compartments"]) == 24


def test_keygen_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "keygen", "--out", str(tmp_path))[0] == 0
    before = (tmp_path / "dispatch-1.key").read_bytes()
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path))
    assert code == 2
    assert "exists; not overwriting a key" in err
    assert (tmp_path / "dispatch-1.key").read_bytes() == before


def test_keygen_refuses_a_bad_key_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path), "--key-id", "no spaces")
    assert code == 2
    assert err.startswith("lockerctl keygen: key id 'no spaces' must match")
    assert list(tmp_path.iterdir()) == []


# -- config ---------------------------------------------------------------------------------


def test_config_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "config", "check", str(SIM_CONFIG))
    assert code == 0
    assert "fr-lyon-07/cab-sim-01" in out
    assert "12: A01 A02 A03 A04 A05 A06 B01 B02 B03 B04 B05 B06" in out
    assert "NOT required (lab only)" in out


def test_config_check_example_without_its_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "config", "check", str(EXAMPLE_CONFIG), "--no-file-checks")
    assert code == 0, err
    assert "TLS" in out


def test_config_check_lists_every_problem(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SIM_CONFIG.read_text().replace('active = "high" }', 'active = "hi" }', 1)
                   .replace("poll_interval_s = 0.1", "poll_interval_s = -1"))
    code, out, err = run(capsys, "config", "check", str(bad))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"{bad}: 2 problem(s):"
    assert any("timing.poll_interval_s" in line for line in lines)
    assert any("compartments[0].door.active" in line for line in lines)


def test_config_check_of_a_missing_file(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "config", "check", str(tmp_path / "none.toml"))
    assert code == 2
    assert "cannot read" in err


def test_config_show_hides_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    import base64

    inline = base64.b64encode(raw).decode()
    config = tmp_path / "cabinet.toml"
    config.write_text(SIM_CONFIG.read_text()
                      .replace('topic_root = "lockers/v1"',
                               'topic_root = "lockers/v1"\nusername = "cab"\n'
                               'password = "s3cret-pw"')
                      .replace("require_signed_commands = false",
                               f'require_signed_commands = true\n'
                               f'dispatch_public_keys = {{ d1 = "{inline}" }}'))
    code, out, err = run(capsys, "config", "show", str(config), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert "s3cret-pw" not in out
    assert inline not in out
    assert shown["mqtt"]["password"] == "***"
    assert shown["security"]["dispatch_public_keys"]["d1"].startswith("inline sha256:")
    assert len(shown["compartments"]) == 12


# -- what cannot be reached -----------------------------------------------------------------


def test_unreachable_broker_is_one_line_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    for argv in (["status"], ["watch", "--duration", "1"], ["cmd", "get-state"]):
        code, _, err = run(capsys, argv[0], "--broker", f"127.0.0.1:{port}", *REMOTE,
                           "--timeout", "2", *argv[1:])
        assert code == 3, (argv, err)
        assert err.startswith(f"lockerctl {argv[0]}: broker: "), err
        assert err.count("\n") == 1
        assert "Traceback" not in err


def test_bad_tls_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", *REMOTE, "--tls-ca", str(tmp_path / "ca.pem"))
    assert code == 2
    assert err.startswith("lockerctl status: TLS files:")
    code, _, err = run(capsys, "status", *REMOTE, "--tls-cert", str(tmp_path / "c.pem"))
    assert code == 2
    assert err == "lockerctl status: --tls-cert and --tls-key go together\n"


def test_bad_key_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.key"
    key.write_text("not a key")
    key.chmod(0o644)
    code, _, err = run(capsys, "cmd", *REMOTE, "--key", str(key), "open", "A01")
    assert code == 2
    assert "accessible by group or others" in err
    key.chmod(0o600)
    code, _, err = run(capsys, "cmd", *REMOTE, "--key", str(key), "open", "A01")
    assert code == 2
    assert "is not an unencrypted PEM private key" in err


def test_bus_scan_with_a_bad_config_and_range(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bus", "scan", "--config", str(SIM_CONFIG), "--bus", "rs485-0",
                       "--from", "9", "--to", "3")
    assert code == 2
    assert "--from/--to" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[cabinet\n")
    code, _, err = run(capsys, "bus", "scan", "--config", str(bad), "--bus", "rs485-0")
    assert code == 2
    assert err.startswith("lockerctl bus scan: configuration error:")
    assert err.count("\n") == 1


@pytest.mark.integration  # runs a Python process of its own
def test_lockerctl_does_not_import_hardware_libraries() -> None:
    loaded = modules_after("import controller.tools.lockerctl, controller.tools.bus, "
                           "controller.tools.demo; controller.tools.lockerctl.build_parser()")
    assert sorted(m for m in loaded
                  if m.split(".")[0] in ("pymodbus", "serial", "RPi", "gpiod")) == []


def test_assign_with_codes_and_no_pin_is_refused_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controller.security.signing import generate_keypair, save_private_key

    key_file = tmp_path / "d.key"
    save_private_key(generate_keypair()[0], key_file)
    pins = tmp_path / "pins.json"
    monkeypatch.setenv("LOCKERCTL_CODE_KEY_PINS", str(pins))
    # A broker port nobody listens on: the refusal comes before any connection.
    code = main(["cmd", "--broker", f"127.0.0.1:{free_port()}", *REMOTE, "--key",
                 str(key_file), "assign", "--order", "g-1", "--size", "S", "--zone",
                 "ambient", "--pool", "parcel", "--code", "collect=5830019274"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"no code key pinned for fr-lyon-07/cab-01 in {pins}" in err
    assert "locker-controller --show-code-key" in err
    assert main(["code-key", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(pins), "pins": {}}
    assert not pins.exists()
