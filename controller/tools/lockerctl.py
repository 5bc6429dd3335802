"""``lockerctl``: the technician's and dispatch's tool.

::

    lockerctl demo [--keep] [--no-timing] [--broker-port N]
    lockerctl keygen --out DIR [--key-id ID]
    lockerctl keygen --out DIR --key-id ID --role technician --site S --root-key FILE
                     --root-key-id ID [--valid-hours H] [--grant-id G]
    lockerctl config check FILE | config show FILE
    lockerctl status  --broker HOST:PORT --site S --cabinet C [--compartments]
    lockerctl watch   --broker HOST:PORT --site S --cabinet C [--duration S]
    lockerctl cmd     --broker ... --key FILE --key-id ID open A01 --reason staff
    lockerctl commission --broker ... --key FILE --key-id ID [--compartments A01,A02]
                     [--code-key-id KEYID]
    lockerctl code-key pin --broker ... --site S --cabinet C --key-id KEYID [--replace]
    lockerctl code-key show [--code-key-pins FILE]
    lockerctl bus scan --config FILE --bus NAME [--from N --to M]
    lockerctl bus set-address --config FILE --bus NAME --from A --to B [--only-board-on-line]

Exit codes: 0 success; 1 the cabinet refused, a check or test failed, or the cabinet is
offline; 2 bad arguments, configuration or key file; 3 the broker, the bus or the
cabinet did not answer in time; 4 the cabinet's status shows another code key than the
one pinned (an incident: nothing was sealed or sent); 130 interrupted. Expected failures
print one line on stderr, ``lockerctl <command>: <what went wrong>``, never a traceback.

Every command that prints data takes ``--json``. Into a pipe or a file, text output is
neither wrapped nor cut and carries no colour (:func:`make_console`). ``--broker`` always
names its port. Every command is bounded in time (``watch`` without ``--duration`` runs
until Ctrl-C).
The subcommands live in ``demo`` (the demo), ``remote`` (over the broker),
``bus`` (on the RS-485 line) and ``render`` (how messages are shown), beside this module.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from controller import __version__
from controller.settings import ConfigError, load_settings
from controller.tools.remote import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_command_parsers,
    add_json_option,
    add_remote_options,
)

__all__ = ["build_parser", "main", "make_console"]


# -- keygen and config --------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace, console: Console) -> int:
    """A dispatch key pair: ``ID.key`` (0600) and ``ID.pub`` in ``--out``; prints the line
    for the cabinet config."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from controller.security.errors import KeyFileError
    from controller.security.signing import generate_keypair, save_private_key, save_public_key
    from controller.security.verify import KEY_ID_PATTERN

    if not KEY_ID_PATTERN.fullmatch(args.key_id):
        raise CliError(f"key id {args.key_id!r} must match {KEY_ID_PATTERN.pattern}")
    if args.role == "technician":
        return _technician_keygen(args)
    out: Path = args.out
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror}") from None
    private_path, public_path = out / f"{args.key_id}.key", out / f"{args.key_id}.pub"
    if public_path.exists():
        raise CliError(f"{public_path} exists; not overwriting a key")
    private_key, public_key = generate_keypair()
    try:
        save_private_key(private_key, private_path)
        save_public_key(public_key, public_path)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the key: {exc.strerror}") from None
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    inline = base64.b64encode(der).decode()
    key_id = args.key_id
    # What the cabinet config needs, as valid TOML: the file form of the example config
    # (the .pub copied to /etc/locker/keys/), the inline form as a comment.
    section = (f"[security.dispatch_public_keys]\n"
               f'{key_id} = "keys/{key_id}.pub"\n'
               f'# or inline, with no file to copy: {key_id} = "{inline}"\n')
    if args.json:
        print(json.dumps({"key_id": key_id, "private_key": str(private_path.resolve()),
                          "public_key": str(public_path.resolve()), "public_key_base64": inline,
                          "cabinet_config": section}))
        return EXIT_OK
    print(f"private key: {private_path.resolve()} (mode 0600: keep it on the dispatch side, "
          "never on a cabinet)")
    print(f"public key:  {public_path.resolve()} (copy it to each cabinet as "
          f"/etc/locker/keys/{public_path.name})")
    print("in each cabinet's /etc/locker/cabinet.toml, add this line to the section below "
          "(keep the other keys during a rotation):")
    print()
    print(section, end="")
    return EXIT_OK


def _technician_keygen(args: argparse.Namespace) -> int:
    """A technician key pair and dispatch's grant for it: ``ID.key``, ``ID.pub``,
    ``ID.grant.json``. Nothing to install on the cabinets: they check the grant offline."""
    import secrets
    import time

    from controller.security.errors import KeyFileError
    from controller.security.grants import MAX_GRANT_LIFETIME_S, issue_grant
    from controller.security.signing import (
        generate_keypair,
        load_private_key,
        save_private_key,
        save_public_key,
    )

    if args.site is None or args.root_key is None:
        raise CliError("--role technician needs --site and --root-key")
    lifetime = int(args.valid_hours * 3600)
    if not 0 < lifetime <= MAX_GRANT_LIFETIME_S:
        raise CliError(f"--valid-hours must be more than 0 and at most "
                       f"{MAX_GRANT_LIFETIME_S // 3600}")
    grant_id = args.grant_id or f"g-{secrets.token_hex(8)}"
    out: Path = args.out
    private_path, public_path = out / f"{args.key_id}.key", out / f"{args.key_id}.pub"
    grant_path = out / f"{args.key_id}.grant.json"
    try:
        root = load_private_key(args.root_key)
        private_key, public_key = generate_keypair()
        now = int(time.time())
        grant = issue_grant(root, args.root_key_id, grant_id=grant_id, key_id=args.key_id,
                            public_key=public_key, site=args.site, not_before=now - 300,
                            not_after=now + lifetime)
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        if grant_path.exists() or public_path.exists():
            raise CliError(f"{grant_path} or {public_path} exists; not overwriting a key")
        save_private_key(private_key, private_path)
        save_public_key(public_key, public_path)
        grant_path.write_text(json.dumps(grant) + "\n")
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the key: {exc.strerror}") from None
    summary = {"key_id": args.key_id, "role": "technician", "site": args.site,
               "grant_id": grant_id, "not_after": now + lifetime,
               "private_key": str(private_path.resolve()), "grant": str(grant_path.resolve())}
    if args.json:
        print(json.dumps(summary))
        return EXIT_OK
    print(f"technician key: {private_path.resolve()} (mode 0600) and grant "
          f"{grant_path.resolve()}")
    print(f"valid at site {args.site} for {lifetime // 3600} h, maintenance actions only; "
          f"revoke it by its id {grant_id}")
    print(f"use: lockerctl cmd --key {private_path.name} --key-id {args.key_id} "
          f"--grant {grant_path.name} ...")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace, console: Console) -> int:
    """Validate a cabinet config as the daemon would at start-up: the configuration, and
    (unless ``--no-file-checks``) the files on this machine the start refuses (the store's
    socket and password file, the code key and its directory, the TLS key)."""
    problems: list[str] = []
    try:
        settings = load_settings(args.file, check_files=not args.no_file_checks)
    except ConfigError as exc:
        problems = [str(issue) for issue in exc.issues]
    else:
        if not args.no_file_checks:
            from controller.daemon.startup import local_file_issues

            problems = local_file_issues(settings, args.file)
    if problems:
        if args.json:
            print(json.dumps({"file": str(args.file), "ok": False, "problems": problems}))
            return EXIT_USAGE
        print(f"{args.file}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({
            "file": str(args.file), "ok": True,
            "cabinet": f"{settings.cabinet.site}/{settings.cabinet.id}",
            "broker": f"{settings.mqtt.host}:{settings.mqtt.port}",
            "tls": settings.mqtt.tls is not None,
            "store": settings.to_public_dict()["redis"]["url"],
            "buses": [b.name for b in settings.buses],
            "boards": [{"name": b.name, "bus": b.bus, "address": b.address}
                       for b in settings.boards],
            "zones": [z.name for z in settings.zones],
            "compartments": [c.id for c in settings.compartments],
            "signed_commands": settings.security.require_signed_commands,
            "dispatch_keys": list(settings.security.dispatch_public_keys),
            "config_hash": settings.config_hash,
        }, ensure_ascii=False))
        return EXIT_OK
    table = Table(title=f"{args.file}: ok", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("cabinet", f"{settings.cabinet.site}/{settings.cabinet.id}"
                  + (f" ({settings.cabinet.name})" if settings.cabinet.name else ""))
    table.add_row("broker", f"{settings.mqtt.host}:{settings.mqtt.port} "
                  f"(MQTT {'5' if settings.mqtt.protocol == 5 else '3.1.1'}, "
                  f"{'TLS' if settings.mqtt.tls is not None else 'plain TCP: lab only'})")
    table.add_row("store", str(settings.to_public_dict()["redis"]["url"]))
    table.add_row("buses", ", ".join(f"{b.name} ({b.kind})" for b in settings.buses) or "-")
    table.add_row("boards", ", ".join(f"{b.name}@{b.bus}:{b.address}" for b in settings.boards))
    table.add_row("zones", ", ".join(f"{z.name} ({z.kind})" for z in settings.zones) or "-")
    table.add_row("compartments", f"{len(settings.compartments)}: "
                  + " ".join(c.id for c in settings.compartments))
    table.add_row("signed commands", "required" if settings.security.require_signed_commands
                  else "NOT required (lab only)")
    table.add_row("dispatch keys", ", ".join(settings.security.dispatch_public_keys) or "-")
    table.add_row("config hash", settings.config_hash[:16])
    console.print(table)
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace, console: Console) -> int:
    """The effective configuration (defaults, file, environment), secrets hidden."""
    try:
        settings = load_settings(args.file, check_files=not args.no_file_checks)
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.issues)} problem(s):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(settings.to_public_dict(), indent=2, ensure_ascii=False)
    if args.json or not console.is_terminal:
        print(text)
    else:
        console.print(Syntax(text, "json", background_color="default"))
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from controller.tools.demo import run_demo

    if args.broker_port is not None and not 1024 <= args.broker_port <= 65535:
        raise CliError("--broker-port must be in 1024..65535")
    return run_demo(console, keep=args.keep, emulate_timing=not args.no_timing,
                    broker_port=args.broker_port)


# -- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from controller.tools import bus as cli_bus
    from controller.tools import remote as cli_remote

    parser = argparse.ArgumentParser(
        prog="lockerctl", description="Technician and dispatch tool for locker cabinets.",
        epilog="Exit codes: 0 ok, 1 refused/failed/offline, 2 bad input, 3 no answer, "
               "4 code key differs from the pin, 130 interrupted. See docs/operations.md.")
    parser.add_argument("--version", action="version", version=f"lockerctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="a simulated lane with a dispatch stand-in (the main job)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (config, logs) and print its path")
    p.add_argument("--no-timing", action="store_true",
                   help="the simulated line answers at once instead of at 19200 baud")
    p.add_argument("--broker-port", type=int, metavar="N",
                   help="run the demo broker on this port (to watch it from another "
                        "terminal with lockerctl watch)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("keygen", help="a dispatch Ed25519 key pair")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="directory for ID.key (0600) and ID.pub; created 0700 if missing")
    p.add_argument("--key-id", default="dispatch-1",
                   help="the key's id in the cabinets' dispatch_public_keys "
                        "(default dispatch-1)")
    p.add_argument("--role", choices=("dispatch", "technician"), default="dispatch",
                   help="dispatch: a root key every cabinet trusts; technician: a key for one "
                        "site and a limited time, granted by a root key (default dispatch)")
    p.add_argument("--site", help="technician: the only site the key works at")
    p.add_argument("--root-key", type=Path, metavar="FILE",
                   help="technician: the dispatch root private key that signs the grant")
    p.add_argument("--root-key-id", default="dispatch-1",
                   help="technician: the root key's id (default dispatch-1)")
    p.add_argument("--valid-hours", type=float, default=12.0, metavar="H",
                   help="technician: how long the grant lasts (default 12, at most 168)")
    p.add_argument("--grant-id", help="technician: the id to revoke it by (default random)")
    add_json_option(p)
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("config", help="check or show a cabinet configuration")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, text in (("check", cmd_config_check, "validate as the daemon would"),
                             ("show", cmd_config_show, "the effective config, secrets hidden")):
        q = csub.add_parser(name, help=text)
        q.add_argument("file", type=Path, help="the cabinet TOML file")
        q.add_argument("--no-file-checks", "--no-files", action="store_true",
                       help="do not require the TLS and key files it names to exist here, "
                       "nor check the store's socket and the code key on this machine")
        add_json_option(q)
        q.set_defaults(func=func)

    p = sub.add_parser("status", help="the cabinet's retained status and state")
    add_remote_options(p)
    p.add_argument("--compartments", action="store_true", help="also the compartment table")
    add_json_option(p)
    p.set_defaults(func=cli_remote.cmd_status)

    p = sub.add_parser("watch", help="print status, state, events and telemetry as they come")
    add_remote_options(p)
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--no-retained", action="store_true",
                   help="skip the retained status/state shown on connection")
    add_json_option(p, "one JSON object per message: topic, channel, retained, payload")
    p.set_defaults(func=cli_remote.cmd_watch)

    p = sub.add_parser("cmd", help="send one signed command and print the reply")
    add_remote_options(p)
    add_json_option(p, "print the command sent and the reply as one JSON object")
    add_command_parsers(p)
    p.set_defaults(func=cli_remote.cmd_command)

    p = sub.add_parser("commission", help="open and close every door, one at a time")
    add_remote_options(p)
    p.add_argument("--key", type=Path, required=True, metavar="FILE",
                   help="dispatch private key that signs the test openings")
    p.add_argument("--key-id", default="dispatch-1",
                   help="the key's id in the cabinet's dispatch_public_keys "
                        "(default dispatch-1)")
    p.add_argument("--grant", type=Path, metavar="FILE",
                   help="a technician key's grant from dispatch (ID.grant.json)")
    p.add_argument("--compartments", metavar="A01,A02", help="only these (default: all)")
    p.add_argument("--open-timeout", type=float, default=15.0, metavar="S",
                   help="wait for door_opened / open_not_detected (default 15)")
    p.add_argument("--close-timeout", type=float, default=120.0, metavar="S",
                   help="wait for the technician to close the door (default 120)")
    p.add_argument("--auto-close-sim", type=int, metavar="PORT",
                   help="simulated cabinet only: the simulator's control port pulls and "
                        "closes the doors")
    p.add_argument("--code-key-id", metavar="KEYID",
                   help="also pin the cabinet's code key, if its id is this one (read on the "
                        "cabinet with locker-controller --show-code-key)")
    cli_remote.add_pins_option(p)
    add_json_option(p, "the results as JSON (the progress bar goes to stderr)")
    p.set_defaults(func=cli_remote.cmd_commission)

    p = sub.add_parser("code-key", help="pin a cabinet's code key, list the pins")
    ksub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ksub.add_parser("pin", help="pin the key the cabinet's status shows, if its id is "
                                    "the one read on the cabinet")
    add_remote_options(q)
    q.add_argument("--key-id", required=True, metavar="KEYID",
                   help="the key id read on the cabinet (locker-controller --show-code-key)")
    q.add_argument("--replace", action="store_true",
                   help="replace another key pinned for this cabinet (only after checking "
                        "the change on the cabinet: a changed key is an incident)")
    cli_remote.add_pins_option(q)
    add_json_option(q)
    q.set_defaults(func=cli_remote.cmd_code_key_pin)
    q = ksub.add_parser("show", help="list the pinned code keys")
    cli_remote.add_pins_option(q)
    add_json_option(q)
    q.set_defaults(func=cli_remote.cmd_code_key_show)

    p = sub.add_parser("bus", help="scan an RS-485 line, re-address a board")
    bsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = bsub.add_parser("scan", help="who answers on the line")
    q.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the cabinet TOML file (it names the line and its boards)")
    q.add_argument("--bus", required=True, help="the bus name in the config, e.g. rs485-0")
    q.add_argument("--from", dest="first", type=int, default=1, metavar="N",
                   help="first address (default 1)")
    q.add_argument("--to", dest="last", type=int, default=32, metavar="M",
                   help="last address (default 32)")
    q.add_argument("--unit-timeout", type=float, default=0.1, metavar="S",
                   help="wait per address (default 0.1)")
    add_json_option(q, "the units found as JSON (the progress bar goes to stderr)")
    q.set_defaults(func=cli_bus.cmd_bus_scan)
    q = bsub.add_parser("set-address", help="give a board a new address")
    q.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the cabinet TOML file (it names the line)")
    q.add_argument("--bus", required=True, help="the bus name in the config, e.g. rs485-0")
    q.add_argument("--from", dest="current", type=int, required=True, metavar="A",
                   help="its address now (0: broadcast, needs --only-board-on-line)")
    q.add_argument("--to", dest="new", type=int, required=True, metavar="B",
                   help="its new address (1..247)")
    q.add_argument("--only-board-on-line", action="store_true",
                   help="confirm that this board is the only one connected")
    q.set_defaults(func=cli_bus.cmd_bus_set_address)
    return parser


def make_console() -> Console:
    """The console of every command: on a terminal, rich as usual; into a pipe or a file,
    no wrapping and no cutting (a line is as long as its content), no colour codes. Rules,
    panels and tables are laid out at a fixed width there
    (:func:`controller.tools.render.show`): a rule takes its console's whole width."""
    console = Console(highlight=False)
    if console.is_terminal:
        return console
    return Console(highlight=False, width=UNWRAPPED_WIDTH, soft_wrap=True, no_color=True)


UNWRAPPED_WIDTH = 100_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = make_console()
    name = args.command + (f" {args.action}" if getattr(args, "action", None) else "")
    try:
        return int(args.func(args, console))
    except CliError as exc:
        print(f"lockerctl {name}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"lockerctl {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lockerctl watch | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
