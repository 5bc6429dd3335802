"""Dispatch's estimate of a cabinet's clock: per boot, never back, never to an ended boot."""

from __future__ import annotations

from typing import Any

import pytest

from controller.clock import CabinetClock
from controller.contract.topics import CabinetTopics
from controller.dispatch import ClockTracker, DispatchClient, reading_of


def _reading(boot: str, uptime_ms: int) -> dict[str, object]:
    return {"cabinet_clock": {"boot_id": boot, "uptime_ms": uptime_ms}}


def test_clock_follows_a_new_boot_and_ignores_the_old_one_afterwards() -> None:
    clock = ClockTracker()
    assert clock.learn(CabinetClock("boot-old-0001", 50_000), at=100.0)
    assert clock.learn(CabinetClock("boot-new-0002", 1_000), at=101.0)
    # A reply stored during the old boot, repeated now, carries the old boot's clock.
    assert not clock.learn(CabinetClock("boot-old-0001", 60_000), at=102.0)
    assert clock.estimate(102.0) == ("boot-new-0002", 2_000)
    assert clock.boots == ["boot-old-0001", "boot-new-0002"]
    assert clock.retired_boots == {"boot-old-0001"}


def test_clock_never_moves_backwards_within_a_boot() -> None:
    clock = ClockTracker()
    clock.learn(CabinetClock("boot-a-000001", 10_000), at=100.0)
    assert not clock.learn(CabinetClock("boot-a-000001", 5_000), at=101.0)  # older message
    assert clock.estimate(101.0) == ("boot-a-000001", 11_000)
    assert clock.learn(CabinetClock("boot-a-000001", 12_000), at=101.5)
    assert clock.estimate(101.5) == ("boot-a-000001", 12_000)


def test_no_estimate_before_a_reading() -> None:
    clock = ClockTracker()
    assert not clock.known
    with pytest.raises(LookupError):
        clock.estimate(1.0)


@pytest.mark.parametrize("payload", [
    {}, {"cabinet_clock": None}, {"cabinet_clock": {"boot_id": "b"}},
    {"cabinet_clock": {"boot_id": "", "uptime_ms": 1}},
    {"cabinet_clock": {"boot_id": "b", "uptime_ms": -1}},
    {"cabinet_clock": {"boot_id": "b", "uptime_ms": True}},
    {"cabinet_clock": {"boot_id": "b", "uptime_ms": "12"}},
])
def test_a_message_without_a_usable_clock_teaches_nothing(payload: dict[str, object]) -> None:
    assert reading_of(payload) is None
    clock = ClockTracker()
    assert not clock.learn_from(payload, at=1.0)
    assert not clock.known


async def test_commands_are_built_in_the_current_boot() -> None:
    client = DispatchClient("127.0.0.1", 1, CabinetTopics("lockers/v1", "site", "cab"))
    with pytest.raises(LookupError):
        client.build("get_state", {})
    client.clock.learn_from(_reading("boot-old-0001", 50_000), at=100.0)
    client.clock.learn_from(_reading("boot-new-0002", 1_000), at=101.0)
    client.clock.learn_from(_reading("boot-old-0001", 60_000), at=102.0)
    command = client.build("get_state", {}, ttl_ms=5_000)
    assert command["expires"]["boot_id"] == "boot-new-0002"
    assert command["expires"]["uptime_ms"] >= 1_000 + 5_000


async def test_a_clock_query_cut_short_by_the_cabinet_coming_back_is_unanswered() -> None:
    """The cabinet reconnecting while ``get_clock`` waits is no crash of the command that
    asked: the query is unanswered and the command falls back on its stale-clock retry."""
    from controller.dispatch import client as client_module

    client = client_module.DispatchClient(
        "127.0.0.1", 1, CabinetTopics("lockers/v1", "site", "cab"))

    async def send(payload: bytes, command_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
        raise client_module._CabinetBack

    client.send = send  # type: ignore[method-assign]
    assert await client.sync_clock(0.5) is False
