"""Crash tests on a real redis-server (appendonly yes, appendfsync always): kill -9 Redis,
or the writing process, in the middle of a burst of appends and acks, and check that no
sequence number is missing or duplicated and that every event the writer saw committed
is still there with the same id.

Run as ``python -m tests.integration.test_store_crash URL COUNT`` this module is the
writer: it appends (acking every other event), prints ``seq id`` after each committed
append, and exits 3 on the first StoreError.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.store import Store, StoreError, StoreOptions
from tests.support.services import RedisProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX, CABINET = "locker", "cab-01"


async def _writer(url: str, count: int, ack_every: int) -> int:
    options = StoreOptions(socket_timeout_s=2, connect_timeout_s=1)
    try:
        store = await Store.connect(url, PREFIX, CABINET, options=options)
        await store.new_boot()
        for n in range(count):
            event = await store.append("burst", {"n": n, "pid": os.getpid()}, at=1.0e9 + n)
            print(event.seq, event.id, flush=True)
            if ack_every and n % ack_every == 0:
                await store.ack(event.id)
        await store.close()
    except StoreError as exc:
        print("ERR", type(exc).__name__, flush=True)
        return 3
    return 0


def start_writer(url: str, count: int, ack_every: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_store_crash", url, str(count),
         str(ack_every)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_committed(proc: subprocess.Popen[str], at_least: int) -> dict[int, str]:
    """Read ``seq id`` lines until ``at_least`` were seen (bounded by the line count)."""
    assert proc.stdout is not None
    committed: dict[int, str] = {}
    for _ in range(at_least):
        line = proc.stdout.readline()
        assert line, f"writer ended early: {proc.stderr.read() if proc.stderr else ''}"
        seq, event_id = line.split()
        assert int(seq) not in committed
        committed[int(seq)] = event_id
    return committed


def drain(proc: subprocess.Popen[str], committed: dict[int, str]) -> list[str]:
    """Wait for the writer to end (bounded) and collect what it printed after."""
    out, _err = proc.communicate(timeout=60)
    tail = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] != "ERR":
            committed[int(parts[0])] = parts[1]
        tail.append(line)
    return tail


async def check_outbox(url: str, committed: dict[int, str]) -> tuple[int, int]:
    """Every committed event survived with its id; pending and delivered split 1..last
    exactly. Returns (last_seq, pending count)."""
    async with await Store.connect(url, PREFIX, CABINET) as store:
        last = await store.last_seq()
        pending = await store.pending(last + 1)
        delivered = await store.delivered(last + 1)
    pending_seqs = [e.seq for e in pending]
    delivered_seqs = [d.event.seq for d in delivered]
    assert pending_seqs == sorted(pending_seqs)
    assert not set(pending_seqs) & set(delivered_seqs), "an event both pending and delivered"
    everything = sorted(pending_seqs + delivered_seqs)
    assert everything == list(range(1, last + 1)), "a gap or a duplicate in the seqs"
    ids = {e.seq: e.id for e in pending} | {d.event.seq: d.event.id for d in delivered}
    assert len(set(ids.values())) == last
    for seq, event_id in committed.items():
        assert ids[seq] == event_id
    # At most the one append in flight when the crash came can be there unconfirmed.
    assert max(committed, default=0) <= last <= max(committed, default=0) + 1
    return last, len(pending)


async def test_kill_redis_mid_burst_loses_nothing_and_leaves_no_gap(
    redis_server: RedisProcess,
) -> None:
    writer = start_writer(redis_server.url, 100_000, ack_every=2)
    try:
        committed = read_committed(writer, 300)
        redis_server.kill()
        tail = drain(writer, committed)
        assert writer.returncode == 3, tail[-3:]
        assert tail[-1] in ("ERR StoreUnavailable", "ERR StoreTimeout")
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    redis_server.start()
    last, pending = await check_outbox(redis_server.url, committed)
    assert last >= 300
    assert pending > 0


async def test_kill_the_writer_mid_burst_leaves_no_gap(redis_server: RedisProcess) -> None:
    writer = start_writer(redis_server.url, 100_000, ack_every=2)
    try:
        committed = read_committed(writer, 300)
        writer.kill()
        drain(writer, committed)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    await check_outbox(redis_server.url, committed)
    # And the next writer continues right after the last seq.
    async with await Store.connect(redis_server.url, PREFIX, CABINET) as store:
        last = await store.last_seq()
        await store.new_boot()
        assert (await store.append("after", {}, at=0)).seq == last + 1


async def test_kill_redis_then_the_next_writer_continues_the_sequence(
    redis_server: RedisProcess,
) -> None:
    first = start_writer(redis_server.url, 100_000)
    try:
        committed = read_committed(first, 200)
        redis_server.kill()
        drain(first, committed)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    redis_server.start()
    second = start_writer(redis_server.url, 50)
    more: dict[int, str] = {}
    drain(second, more)
    assert second.returncode == 0
    committed |= more
    last, _ = await check_outbox(redis_server.url, committed)
    assert sorted(more) == list(range(last - 49, last + 1))


if __name__ == "__main__":
    sys.exit(asyncio.run(_writer(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
