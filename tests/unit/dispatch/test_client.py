"""The dispatch client without a broker: replies matched, events once, gaps reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient, Gap

TOPICS = CabinetTopics("lockers/v1", "site-1", "cab-1")


def _client(**kwargs: Any) -> DispatchClient:
    return DispatchClient("127.0.0.1", 1, TOPICS, client_id="dispatch-test", **kwargs)


def test_a_persistent_session_needs_a_stable_client_id() -> None:
    with pytest.raises(ValueError, match="client_id"):
        DispatchClient("127.0.0.1", 1, TOPICS, persistent=True)
    with pytest.raises(ValueError, match="protocol"):
        DispatchClient("127.0.0.1", 1, TOPICS, protocol=3)


async def test_events_are_delivered_once_and_gaps_reported() -> None:
    seen: list[dict[str, Any]] = []
    gaps: list[Gap] = []
    client = _client(on_event=seen.append, on_gap=gaps.append)
    for seq in (1, 2, 2, 4, 3):
        client.feed(TOPICS.events, {"id": f"e{seq}", "seq": seq, "boot_id": "b", "kind": "k"})
    assert [e["seq"] for e in seen] == [1, 2, 4, 3]
    assert [e["seq"] for e in client.events()] == [1, 2, 4, 3]
    assert gaps == [Gap(3, 3, 4, "b")]
    assert client.tracker.missing == []
    assert len(client.messages) == 5  # the raw messages, duplicates included


async def test_channels_and_the_clock_are_read_from_every_message() -> None:
    client = _client()
    got = client.feed(TOPICS.status, {"state": "online",
                                      "cabinet_clock": {"boot_id": "b1", "uptime_ms": 10}},
                      retained=True, at=5.0)
    assert (got.channel, got.retained) == ("status", True)
    assert client.clock.estimate(6.0) == ("b1", 1010)
    assert client.feed(client.reply_topic, {"id": "x"}).channel == "reply"


async def test_replies_are_matched_by_correlation_or_by_command_id() -> None:
    client = _client()
    loop = asyncio.get_running_loop()
    by_correlation = loop.create_future()
    by_id = loop.create_future()
    client._pending["c-1"] = by_correlation
    client._pending["c-2"] = by_id
    # MQTT 5: the correlation data decides, whatever the payload says.
    client.feed(client.reply_topic, {"id": "something-else", "ok": True},
                correlation=b"c-1")
    # MQTT 3.1.1: the cabinet's reply topic, matched on the command id.
    client.feed(TOPICS.reply, {"id": "c-2", "ok": False})
    client.feed(TOPICS.reply, {"id": "c-unknown", "ok": True})  # another dispatcher's
    assert by_correlation.result() == {"id": "something-else", "ok": True}
    assert by_id.result() == {"id": "c-2", "ok": False}


async def test_a_command_without_connection_fails_at_once() -> None:
    client = _client()
    client.clock.learn_from({"cabinet_clock": {"boot_id": "b", "uptime_ms": 1}}, at=0.0)
    with pytest.raises(ConnectionError):
        await client.command("get_state", timeout_s=1.0)


async def test_keep_messages_off_keeps_nothing_but_calls_back() -> None:
    seen: list[dict[str, Any]] = []
    client = _client(keep_messages=False, on_event=seen.append)
    client.feed(TOPICS.events, {"id": "e1", "seq": 1, "boot_id": "b", "kind": "k"})
    assert client.messages == []
    assert client.events() == []
    assert len(seen) == 1
