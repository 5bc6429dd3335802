"""Honest open replies: pulsed (and how it is known), not pulsed (``hardware``), or
unconfirmed: an ok reply that says the outcome is unknown, never a false refusal."""

from __future__ import annotations

from typing import Any

import jsonschema

from controller.contract import schemagen
from tests.support.ack_lost import AckLost
from tests.unit.services.conftest import Core

_REPLY = schemagen.generate()["reply"]
REPLY_SCHEMA = jsonschema.Draft202012Validator(_REPLY)
OPEN_RESULT = jsonschema.Draft202012Validator(
    {"$ref": "#/$defs/OpenResult", "$defs": _REPLY["$defs"]})


def _lose_acks(core: Core, cid: str, *, acts: bool) -> AckLost:
    lock = core.settings.compartment(cid).lock
    double = AckLost(core.board(lock.board), acts=acts)
    core.hardware.lock_boards[lock.board] = double  # type: ignore[assignment]
    return double


async def _kinds(core: Core, cid: str) -> list[str]:
    return [e["kind"] for e in await core.events() if e["compartment"] == cid]


async def test_a_pulsed_reply_says_how_the_pulse_is_known(core: Core) -> None:
    reply = await core.send(core.command("open", {"compartment": "A01", "reason": "staff"}))
    REPLY_SCHEMA.validate(reply)
    OPEN_RESULT.validate(reply["result"])
    pulse = reply["result"]["pulse"]
    assert pulse["outcome"] == "pulsed"
    assert pulse["accepted"] is True
    assert pulse["confirmed_by"] == "ack"
    assert pulse["timed_by"] == "board"


async def test_an_unconfirmed_pulse_is_an_ok_reply_that_says_so(core: Core) -> None:
    double = _lose_acks(core, "A02", acts=True)
    cmd = core.command("open", {"compartment": "A02", "reason": "staff"})
    reply = await core.send(cmd)
    REPLY_SCHEMA.validate(reply)
    assert reply["ok"] is True, reply
    OPEN_RESULT.validate(reply["result"])
    pulse = reply["result"]["pulse"]
    assert pulse["outcome"] == "unconfirmed"
    assert "accepted" not in pulse
    assert "read-back" in pulse["evidence"]
    assert pulse["open_detect_s"] == core.settings.timing.open_detect_timeout_s
    assert await _kinds(core, "A02") == [
        "open_requested", "unlock_pulse_sent", "unlock_pulse_unconfirmed"]
    # The declared open stands for the open-detection timeout.
    assert core.model.compartments.get("A02").pending_open is not None
    # One frame, and a repeat of the id answers the first reply without a second one.
    assert double.frames == 1
    again = await core.send(cmd)
    assert again == reply
    assert double.frames == 1


async def test_a_pulse_the_board_did_not_make_is_the_refusal_hardware(core: Core) -> None:
    lock = core.settings.compartment("A03").lock
    core.board(lock.board).inject("rejected", op="pulse")
    reply: dict[str, Any] = await core.send(core.command(
        "open", {"compartment": "A03", "reason": "staff"}))
    REPLY_SCHEMA.validate(reply)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "hardware"
    assert core.model.compartments.get("A03").pending_open is None
    assert "unlock_pulse_unconfirmed" not in await _kinds(core, "A03")
