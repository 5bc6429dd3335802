"""The outbox pump while the store refuses writes: an event the broker acknowledged but
whose removal the store refused is not published again; only the removal is retried."""

from __future__ import annotations

from controller.services.reporting import OutboxPump
from controller.store import Store
from controller.store.errors import StoreFull
from controller.store.records import NewEvent


async def test_an_event_whose_ack_is_refused_is_published_once() -> None:
    store = await Store.connect("memory://", "t", "cab-t")
    await store.new_boot()
    try:
        await store.commit([NewEvent("door_opened", {}, 1.0, "A01"),
                            NewEvent("door_closed", {}, 2.0, "A01")])
        published: list[bytes] = []
        refusals = {"left": 3}
        real_ack_many = store.ack_many

        async def ack_many(refs: list[str]) -> int:
            if refusals["left"]:
                refusals["left"] -= 1
                raise StoreFull("Redis refused the write: OOM", op="ack_many")
            return await real_ack_many(refs)

        store.ack_many = ack_many  # type: ignore[method-assign]

        async def publish(topic: str, payload: bytes) -> None:
            published.append(payload)

        async def connected() -> None:
            return None

        pump = OutboxPump(store, publish, "t/events", wait_connected=connected)
        for _ in range(3):  # the store refuses the events' removal three times
            try:
                await pump.drain()
            except StoreFull:
                pass
        assert len(published) == 2  # both went out once, in the first drain
        assert await store.depth() == 2
        assert await pump.drain() == 2  # room again: both removed, neither published again
        assert len(published) == 2
        assert await store.depth() == 0
    finally:
        await store.close()
