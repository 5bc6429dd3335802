"""Repeats of a signed command through the command service: the signature covers the
``signed`` text, not the envelope around it, so the same signed command in another
envelope spelling is the same command: the first reply again, never a second action."""

from __future__ import annotations

import asyncio
import json

from controller.contract.messages import Reply, from_json
from tests.fuzz.cabinet import FuzzCabinet


def test_a_reencoded_envelope_of_an_accepted_command_gets_the_first_reply() -> None:
    async def run() -> None:
        async with FuzzCabinet() as cab:
            message = cab.sign(cab.command("open", command_id="c-repeat-1"))
            first = await cab.service.handle(json.dumps(message).encode())
            assert from_json(Reply, first).ok
            # Other key order and whitespace, as another JSON library would write it.
            spellings = [
                json.dumps(dict(reversed(list(message.items())))).encode(),
                json.dumps(message, indent=2).encode(),
                json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode(),
            ]
            for payload in spellings:
                assert await cab.service.handle(payload) == first
            cab.boards()["locks-a"].assert_pulsed(0, times=1)

    asyncio.run(run())


def test_the_same_id_with_other_signed_content_is_still_a_conflict() -> None:
    async def run() -> None:
        async with FuzzCabinet() as cab:
            first = cab.sign(cab.command("open", command_id="c-repeat-2"))
            assert from_json(Reply,
                await cab.service.handle(json.dumps(first).encode())).ok
            before = await cab.observe()
            other = cab.sign(cab.command("open", {"compartment": "A02", "reason": "staff"},
                                         command_id="c-repeat-2"))
            reply = from_json(Reply, await cab.service.handle(
                json.dumps(other).encode()))
            assert reply.error is not None
            assert reply.error.code.value == "conflict"
            assert await cab.observe() == before

    asyncio.run(run())


def test_a_bad_signature_over_an_accepted_text_acts_no_more() -> None:
    async def run() -> None:
        async with FuzzCabinet() as cab:
            message = cab.sign(cab.command("open", command_id="c-repeat-3"))
            first = await cab.service.handle(json.dumps(message).encode())
            before = await cab.observe()
            forged = {**message, "sig": "A" * 86 + "=="}
            reply = await cab.service.handle(json.dumps(forged).encode())
            # Nothing new can be learned (the first reply was published) and nothing acts.
            assert reply == first or not from_json(Reply, reply).ok
            assert await cab.observe() == before

    asyncio.run(run())
