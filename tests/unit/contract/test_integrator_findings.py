"""What an integrator found against the docs, without a broker: refusals that say what was
wrong, ``too_large`` with the real size and the id of a signed command, the clock stored
with each event and replayed with it, and the reply target kept with a command's claim."""

from __future__ import annotations

import json
import uuid

import pytest

from controller.contract.errors import CommandRejected, ErrorCode
from controller.contract.messages import decode_command
from controller.services.reporting import event_payload
from controller.store import Store
from controller.store.records import ReplyTarget
from controller.strictjson import recover_id


def refusal(payload: bytes, **kwargs: int) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        decode_command(payload, **kwargs)
    return info.value


@pytest.mark.parametrize(("payload", "said"), [
    (b'{"id":"c-1","type":"get_state","type":"open"}', 'duplicate key "type"'),
    (b'{"id":"c-1","type":"get_state","n":NaN}', "NaN not allowed"),
    (b'{"id":"c-1","type":"get_state","n":-Infinity}', "-Infinity not allowed"),
    (b'{"id":"c-1","type":"\xff"}', "not UTF-8 (byte 20)"),
    (b'{"id":"c-1",\n "type":}', "not JSON at line 2 column 9"),
])
def test_bad_json_says_what_is_wrong(payload: bytes, said: str) -> None:
    rejected = refusal(payload)
    assert rejected.code is ErrorCode.BAD_JSON
    assert said in rejected.message, rejected.message
    assert rejected.command_id == "c-1"


def _signed(size: int) -> bytes:
    inner = {"id": "c-signed-big", "type": "block", "cabinet": "cab-01",
             "expires": {"boot_id": "b" * 32, "uptime_ms": 5}, "args": {"reason": "x" * size}}
    text = json.dumps(inner, separators=(",", ":"))
    return json.dumps({"signed": text, "key_id": "k", "sig": "A" * 86 + "=="}).encode()


def test_too_large_states_the_size_received_and_names_a_signed_command() -> None:
    payload = _signed(20_000)
    limit = 16 * 1024
    kept = payload[:limit + 1]  # what the link keeps of it
    rejected = refusal(kept, max_bytes=limit, received_bytes=len(payload))
    assert rejected.code is ErrorCode.TOO_LARGE
    assert rejected.message == f"payload is {len(payload)} bytes, the limit is {limit}"
    assert rejected.command_id == "c-signed-big"
    # The size unknown and maybe cut: "more than", never the cut length.
    assert refusal(kept, max_bytes=limit).message == (
        f"payload is more than {limit} bytes, the limit is {limit}")
    assert refusal(payload, max_bytes=limit).message.startswith(f"payload is {len(payload)} ")


@pytest.mark.parametrize(("cut", "found"), [
    (10, None), (22, None), (23, None),  # inside the id, or before its closing quote
    (24, "c-signed-big"), (25, "c-signed-big"), (60, "c-signed-big"), (200, "c-signed-big"),
])
def test_the_id_of_a_cut_signed_command_is_read_from_its_start(
        cut: int, found: str | None) -> None:
    # The signed text is escaped inside the outer JSON: {\"id\":\"c-signed-big\",...
    payload = _signed(500)[:cut + len(b'{"signed": "')]
    assert recover_id(payload) == found


def test_a_cut_signed_text_that_names_no_id_first_gives_none() -> None:
    text = json.dumps({"type": "block", "id": "c-late", "args": {"r": "x" * 50}})
    payload = json.dumps({"signed": text}).encode()[:40]
    assert recover_id(payload) is None


async def test_each_event_keeps_the_clock_it_was_committed_with() -> None:
    name = uuid.uuid4().hex
    async with await Store.connect(f"memory://{name}", "locker", "cab-01",
                                   uptime_ms=lambda: 1234) as first:
        boot = await first.new_boot()
        event = await first.append("door_opened", {"authorised": True}, 1.7e9, "A01")
        assert event.cabinet_clock == {"boot_id": boot.id, "uptime_ms": 1234}
    # After a restart (another boot, another uptime) the replay carries the original.
    async with await Store.connect(f"memory://{name}", "locker", "cab-01",
                                   uptime_ms=lambda: 5) as second:
        await second.new_boot()
        (pending,) = await second.pending()
        assert pending.cabinet_clock == {"boot_id": boot.id, "uptime_ms": 1234}
        wire = json.loads(event_payload(pending))
        assert wire["cabinet_clock"] == {"boot_id": boot.id, "uptime_ms": 1234}


async def test_the_reply_target_is_kept_with_the_claim() -> None:
    async with await Store.connect("memory://", "locker", "cab-01") as store:
        target = ReplyTarget("lockers/v1/s/c/reply/to/x", b"\x00corr")
        await store.begin_command("c-1", "d", reply_to=target)
        await store.begin_command("c-2", "d")
        records = {r.id: r for r in await store.unfinished_commands()}
        assert records["c-1"].reply_to == target
        assert records["c-2"].reply_to is None
