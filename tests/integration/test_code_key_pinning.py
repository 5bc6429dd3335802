"""The stolen-certificate attack on pickup codes, end to end, on a running lane (daemon,
simulator, mosquitto, redis-server: ``LaneRig``).

With the cabinet's certificate, an attacker may write the cabinet's retained ``status``.
They publish one carrying a code key of their own, hoping dispatch seals the next
customer's code to it. Here:

- the technician reads the real key id on the cabinet (``locker-controller
  --show-code-key``) and pins it with ``lockerctl code-key pin``; a wrong id is refused;
- with the forged status retained, ``lockerctl cmd ... assign --code`` refuses (exit 4,
  both key ids named) and sends nothing on the cabinet's ``cmd`` topic; without a pin it
  refuses too (exit 2); the SDK reports the change to its integration;
- with the real status back, the same command works and the code opens the door.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.contract.topics import CabinetTopics
from controller.dispatch import CodeKeyChanged, DispatchClient
from controller.lab.rig import LaneRig
from controller.security.codes import CodeKey
from controller.security.signing import save_private_key
from controller.tools.lockerctl import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    rig = LaneRig(tmp_path_factory.mktemp("lane"), redis="server", emulate_timing=False)
    with rig:
        yield rig


def _show_code_key(rig: LaneRig) -> dict[str, str]:
    """What the technician reads on the cabinet."""
    rig.pinned_code_key()  # the daemon has made its key
    done = subprocess.run(
        [sys.executable, "-m", "controller.daemon", "--config", str(rig.config_path),
         "--show-code-key"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields.items()}


async def _retained_status(rig: LaneRig, topics: CabinetTopics) -> bytes:
    async with aiomqtt.Client("127.0.0.1", rig.mqtt_port, identifier="t-read") as client:
        await client.subscribe(topics.status, qos=1)
        async with asyncio.timeout(20):
            async for message in client.messages:
                payload = bytes(message.payload)  # type: ignore[arg-type]
                if json.loads(payload).get("state") == "online":
                    return payload
    raise AssertionError("no retained status")


async def _publish_status(rig: LaneRig, topics: CabinetTopics, payload: bytes) -> None:
    """Publish a retained status, as the holder of the cabinet's certificate could."""
    async with aiomqtt.Client("127.0.0.1", rig.mqtt_port, identifier="t-cab") as client:
        await client.publish(topics.status, payload, qos=1, retain=True)


async def _lockerctl_watching_cmd(rig: LaneRig, topics: CabinetTopics,
                                  argv: list[str]) -> tuple[int, list[dict[str, Any]]]:
    """Run lockerctl, and return its exit code and every command published on the
    cabinet's ``cmd`` topic meanwhile (up to a marker published after it ended)."""
    seen: list[dict[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", rig.mqtt_port, identifier="t-spy") as spy:
        await spy.subscribe(topics.cmd, qos=1)
        code = await asyncio.to_thread(main, argv)
        marker = f"marker-{time.monotonic_ns()}"
        await spy.publish(topics.cmd, json.dumps({"marker": marker}), qos=1)
        async with asyncio.timeout(20):
            async for message in spy.messages:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if payload.get("marker") == marker:
                    break
                # A signed command carries the command as the text it signs.
                seen.append(json.loads(payload["signed"]) if "signed" in payload else payload)
    return code, seen


async def test_a_forged_status_with_another_code_key_gets_no_code(
    lane: LaneRig, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    topics = CabinetTopics(lane.topic_root, lane.site, lane.cabinet)
    pins = tmp_path / "pins" / "code-keys.json"
    key_file = tmp_path / "dispatch.key"
    save_private_key(lane.key, key_file)
    remote = ["--broker", f"127.0.0.1:{lane.mqtt_port}", "--site", lane.site, "--cabinet",
              lane.cabinet, "--timeout", "20"]
    signed = [*remote, "--key", str(key_file), "--key-id", lane.key_id,
              "--code-key-pins", str(pins)]
    assign = ["assign", "--size", "S", "--zone", "ambient", "--pool", "parcel"]

    # Commissioning: the key id read on the cabinet, pinned over the broker.
    shown = await asyncio.to_thread(_show_code_key, lane)
    real_id = shown["key_id"]
    assert real_id == lane.pinned_code_key().key_id
    wrong = "0123456789abcdef"
    code = await asyncio.to_thread(main, ["code-key", "pin", *remote, "--key-id", wrong,
                                          "--code-key-pins", str(pins)])
    assert code == 4, capsys.readouterr()
    assert "nothing pinned" in capsys.readouterr().err
    assert not pins.exists()
    code = await asyncio.to_thread(main, ["code-key", "pin", *remote, "--key-id", real_id,
                                          "--code-key-pins", str(pins)])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["code-key", "show", "--json", "--code-key-pins",
                                          str(pins)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["pins"][f"{lane.site}/{lane.cabinet}"]["key_id"] == real_id

    # The attack: a retained status with the attacker's code key.
    real_status = await _retained_status(lane, topics)
    attacker = CodeKey.generate(scrypt_n=2)
    forged = dict(json.loads(real_status), code_key=attacker.published())
    await _publish_status(lane, topics, json.dumps(forged).encode())
    try:
        code, sent = await _lockerctl_watching_cmd(lane, topics, [
            "cmd", *signed, *assign, "--order", "atk-1", "--code", "deposit=DEPPIN7QRCODE4X9T2"])
        err = capsys.readouterr().err
        assert code == 4, err
        assert real_id in err
        assert attacker.key_id in err
        assert "nothing sent" in err
        assert sent == []

        # No pin at all: refused before anything is sent.
        code, sent = await _lockerctl_watching_cmd(lane, topics, [
            "cmd", *remote, "--key", str(key_file), "--key-id", lane.key_id,
            "--code-key-pins", str(tmp_path / "none.json"), *assign, "--order", "atk-2",
            "--code", "deposit=DEPPIN7QRCODE4X9T2"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "no code key pinned" in err
        assert sent == []

        # The SDK tells its integration.
        changes: list[CodeKeyChanged] = []
        async with DispatchClient("127.0.0.1", lane.mqtt_port, topics,
                                  code_key_pin=lane.pinned_code_key(),
                                  on_code_key_changed=changes.append) as dc:
            await dc.wait_for(lambda m: m.channel == "status", 20)
            assert [c.seen_key_id for c in changes] == [attacker.key_id]
            with pytest.raises(CodeKeyChanged):
                dc.seal_codes("atk-3", [("collect", "5830019274")])
    finally:
        await _publish_status(lane, topics, real_status)

    # The real status back: the same command works, sealed to the pinned key.
    code, sent = await _lockerctl_watching_cmd(lane, topics, [
        "cmd", *signed, *assign, "--order", "ok-1", "--compartment", "B01",
        "--code", "deposit=DEPPIN7QRCODE4X9T2"])
    out = capsys.readouterr()
    assert code == 0, out
    assigns = [c for c in sent if c.get("type") == "assign"]
    assert len(assigns) == 1
    assert [c["key_id"] for c in assigns[0]["args"]["codes"]] == [real_id]
    assert "DEPPIN7QRCODE4X9T2" not in json.dumps(sent)

    before = len(lane.control.call("truth", kind="pulse_received", limit=1000)["events"])
    await lane.control.acall("scan", code="DEPPIN7QRCODE4X9T2")
    deadline = time.monotonic() + 10
    events: list[Any] = []
    while time.monotonic() < deadline:  # bounded: until the pulse or the deadline
        events = (await lane.control.acall("truth", kind="pulse_received",
                                           limit=1000))["events"]
        if len(events) > before:
            break
        await asyncio.sleep(0.05)
    assert len(events) == before + 1
