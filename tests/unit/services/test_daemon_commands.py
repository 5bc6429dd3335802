"""A bug while handling one command is answered as `internal` and does not stop the daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controller.clock import CabinetClock
from controller.daemon import Daemon
from controller.mqtt.link import IncomingCommand
from controller.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


class _Exploding:
    async def handle(self, payload: bytes) -> bytes:
        raise KeyError("a bug")


class _Link:
    def __init__(self) -> None:
        self.replies: list[bytes] = []

    async def reply(self, incoming: IncomingCommand, payload: bytes) -> str:
        self.replies.append(payload)
        return "reply"


async def test_an_unexpected_error_is_an_internal_refusal_not_a_crash() -> None:
    daemon = Daemon(load_settings(ROOT / "deploy" / "sim-cabinet.toml", env={}))
    daemon.boot_id = "boot-00000001"
    daemon.cabinet_clock = lambda: CabinetClock("boot-00000001", 5)  # type: ignore[method-assign]
    link: Any = _Link()
    daemon.link = link
    daemon.commands = _Exploding()  # type: ignore[assignment]
    await daemon._handle_command(IncomingCommand(payload=b"{}", topic="t"))
    reply = json.loads(link.replies[0])
    assert reply["ok"] is False
    assert reply["error"]["code"] == "internal"


async def test_an_internal_refusal_carries_the_command_id_when_it_can_be_read() -> None:
    """A reply without its id reaches no one waiting for it (dispatch matches by id)."""
    daemon = Daemon(load_settings(ROOT / "deploy" / "sim-cabinet.toml", env={}))
    daemon.cabinet_clock = lambda: CabinetClock("boot-00000001", 5)  # type: ignore[method-assign]
    link: Any = _Link()
    daemon.link = link
    daemon.commands = _Exploding()  # type: ignore[assignment]
    await daemon._handle_command(IncomingCommand(
        payload=b'{"id": "o-11", "type": "open", "compartment": "A01"}', topic="t"))
    await daemon._handle_command(IncomingCommand(
        payload=json.dumps({"signed": json.dumps({"id": "o-12", "type": "open"}),
                            "sig": "x"}).encode(), topic="t"))
    first, second = (json.loads(r) for r in link.replies)
    assert (first["id"], first["error"]["code"]) == ("o-11", "internal")
    assert (second["id"], second["error"]["code"]) == ("o-12", "internal")
