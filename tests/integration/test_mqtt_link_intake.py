"""The link's intake under garbage: what looks like a command is served before what does
not, an oversized payload is kept cut to the limit plus one byte, each queue is bounded and
every message it cannot keep is counted, with one log line per incident, not per message."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from controller.contract.errors import CommandRejected
from controller.contract.messages import decode_command
from tests.integration.test_mqtt_link_commands import connected, make_link, receive
from tests.support.mqtt_client import probe
from tests.support.services import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_commands_first_junk_bounded_and_counted(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with make_link(mosquitto, incoming_queue_size=4, junk_queue_size=3,
                         max_command_bytes=1024) as link:
        await connected(link)
        with probe(mosquitto.port, link.topics.cmd) as dispatch:
            def send_all() -> None:
                for i in range(10):
                    dispatch.publish(link.topics.cmd, b"\xff\xfe junk %d" % i)
                dispatch.publish(link.topics.cmd, b"{" + b" " * 5000 + b"}")  # too large
                for i in range(3):
                    dispatch.publish(link.topics.cmd, json.dumps({"id": f"c{i}"}).encode())
            await asyncio.to_thread(send_all)
            await dispatch.await_count(14, topic=link.topics.cmd)
        async with asyncio.timeout(10):
            # Every message reached the link (the probe may see them first): the junk
            # over its budget dropped, the three commands queued.
            def arrived() -> bool:
                return link.snapshot().dropped_commands >= 8 and len(link._commands) >= 3

            while not arrived():  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.02)
        # The commands come first although they arrived last; then the junk kept.
        first = [await receive(link) for _ in range(3)]
        assert [json.loads(c.payload)["id"] for c in first] == ["c0", "c1", "c2"]
        rest = [await receive(link) for _ in range(3)]
        assert [r.payload for r in rest] == [b"\xff\xfe junk 0", b"\xff\xfe junk 1",
                                             b"\xff\xfe junk 2"]
        # 7 junk + the oversized one (it does not look like a command within the limit)
        assert link.snapshot().dropped_commands == 8
        assert link.snapshot().to_stats().dropped_commands == 8
    drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_lines) == 1


async def test_an_oversized_payload_is_kept_cut_and_refused_as_too_large(
    mosquitto: MosquittoProcess,
) -> None:
    async with make_link(mosquitto, max_command_bytes=1024) as link:
        await connected(link)
        with probe(mosquitto.port) as dispatch:
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b"x" * 100_000)
        incoming = await receive(link)
        assert len(incoming.payload) == 1025
        with pytest.raises(CommandRejected) as refused:
            decode_command(incoming.payload, max_bytes=1024)
        assert refused.value.code.value == "too_large"
