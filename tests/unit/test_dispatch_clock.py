"""The dispatch client's estimate of the cabinet clock never goes back to an ended boot."""

from __future__ import annotations

from controller.contract.topics import CabinetTopics
from controller.mqtt.dispatch import DispatchClient


def _client() -> DispatchClient:
    return DispatchClient("127.0.0.1", 1, CabinetTopics("lockers/v1", "site", "cab"))


def _reading(boot: str, uptime_ms: int) -> dict[str, object]:
    return {"cabinet_clock": {"boot_id": boot, "uptime_ms": uptime_ms}}


async def test_clock_follows_a_new_boot_and_ignores_the_old_one_afterwards() -> None:
    client = _client()
    client._learn_clock(_reading("boot-old-0001", 50_000), at=100.0)
    client._learn_clock(_reading("boot-new-0002", 1_000), at=101.0)
    # A reply stored during the old boot, repeated now, carries the old boot's clock.
    client._learn_clock(_reading("boot-old-0001", 60_000), at=102.0)
    command = client.build("get_state", {})
    assert command["expires"]["boot_id"] == "boot-new-0002"


async def test_clock_never_moves_backwards_within_a_boot() -> None:
    client = _client()
    client._learn_clock(_reading("boot-a-000001", 10_000), at=100.0)
    client._learn_clock(_reading("boot-a-000001", 5_000), at=101.0)  # an older message
    estimate = client._estimate(101.0)
    assert estimate == ("boot-a-000001", 11_000)
