"""Property: whatever the interleaving of appends, acks (by id or seq, repeated, racing)
and restarts, the outbox keeps pending in seq order, seqs gap-free and unique, and ids
stable."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.store import Event, Store

# An operation: ("append", n) appends n events concurrently; ("ack", picks) acks the
# pending events at those positions concurrently (some by id, some by seq, repeats
# included); ("ack_gone", k) re-acks an already delivered event; ("restart", 0) reopens.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4)),
        st.tuples(
            st.just("ack"),
            st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=4),
        ),
        st.tuples(st.just("ack_gone"), st.integers(0, 20)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=25,
)


async def _run(ops: list[tuple[str, Any]]) -> None:
    server = fakeredis.FakeServer()

    async def reopen() -> Store:
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        store = Store(client, "locker", "cab-01")
        await store.new_boot()
        return store

    store = await reopen()
    model: dict[int, Event] = {}  # seq -> event, what must be pending
    acked: list[Event] = []
    appended = 0
    try:
        for op, arg in ops:
            if op == "append":
                events = await asyncio.gather(
                    *(store.append("k", {"i": appended + i}, at=0) for i in range(arg))
                )
                appended += arg
                for event in events:
                    assert event.seq not in model
                    model[event.seq] = event
            elif op == "ack" and model:
                ordered = sorted(model)
                refs: list[str | int] = []
                targets: list[int] = []
                for position, by_seq in arg:
                    seq = ordered[position % len(ordered)]
                    targets.append(seq)
                    refs.append(seq if by_seq else model[seq].id)
                results = await asyncio.gather(*(store.ack(r) for r in refs))
                for seq in set(targets):
                    # Exactly one of the racing acks of one event removed it.
                    hits = [res for res, t in zip(results, targets, strict=True) if t == seq]
                    assert hits.count(True) == 1
                    acked.append(model.pop(seq))
            elif op == "ack_gone" and acked:
                assert await store.ack(acked[arg % len(acked)].id) is False
            elif op == "restart":
                await store.close()
                store = await reopen()

            pending = await store.pending(1000)
            assert [e.seq for e in pending] == sorted(model)
            assert pending == [model[s] for s in sorted(model)]
            assert await store.depth() == len(model)
            assert await store.last_seq() == appended
            # Gap-free and unique over everything ever appended.
            every = sorted([*model, *(e.seq for e in acked)])
            assert every == list(range(1, appended + 1))
        delivered = await store.delivered(1000)
        assert sorted(d.event.seq for d in delivered) == sorted(e.seq for e in acked)
    finally:
        await store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_any_interleaving_keeps_the_outbox_ordered_and_gap_free(
    ops: list[tuple[str, Any]],
) -> None:
    asyncio.run(_run(ops))
