"""Outbox throughput and latency against a real redis-server with appendfsync always.

Starts its own redis-server (tests.support.services.RedisProcess: free loopback port,
appendonly yes, appendfsync always, its files in a temporary directory), then measures:

- append: one event committed (WATCH/GET, MULTI/SET/SET/ZADD/EXEC, one fsync);
- ack: one event removed and logged as delivered (one fsync);
- append+ack: the full life of one event, one after the other, as the publisher does;
- ack_many x128: events removed 128 per transaction, as the outbox pump does after a
  catch-up batch (the figures are per event);
- append x CONCURRENCY: several tasks appending at once through one Store.

Each line ends with the CPU time per operation of this process (the store's client,
``getrusage``) and of redis-server (``/proc/PID/stat``).

Prints the figures and stops redis-server by its pid. The numbers depend on the disk the
temporary directory is on: on a Raspberry Pi's SD card the fsync dominates.

    .venv/bin/python -m bench.store_outbox [--count 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._lane import cpu_ms
from controller.store import Store
from tests.support.services import RedisProcess


class _Cpu:
    """CPU time of this process (the store's client) and of redis-server, per phase."""

    def __init__(self, redis_pid: int | None) -> None:
        self.redis_pid = redis_pid
        self._at = self._now()

    def _now(self) -> tuple[float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (usage.ru_utime + usage.ru_stime) * 1000, cpu_ms(self.redis_pid)

    def lap(self, ops: int) -> str:
        now = self._now()
        client, server = (now[0] - self._at[0]) / ops, (now[1] - self._at[1]) / ops
        self._at = now
        return f"  CPU/op: client {client:.3f} ms, redis {server:.3f} ms"


def _summary(name: str, samples: list[float], wall: float) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    rate = len(samples) / wall if wall > 0 else float("inf")
    return (f"{name:<22} n={len(samples):>6}  {rate:>9.0f} ops/s  "
            f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  max {ordered[-1] * 1000:7.3f} ms")


async def _run(url: str, count: int, concurrency: int, redis_pid: int | None) -> list[str]:
    lines = []
    cpu = _Cpu(redis_pid)
    async with await Store.connect(url, "bench", "cab-01") as store:
        await store.new_boot()
        data = {"compartment": "A01", "by": "code", "pulse_ms": 400}

        appended, lat = [], []
        started = time.perf_counter()
        for n in range(count):
            t0 = time.perf_counter()
            appended.append(await store.append("door_opened", data | {"n": n}, at=time.time()))
            lat.append(time.perf_counter() - t0)
        lines.append(_summary("append", lat, time.perf_counter() - started) + cpu.lap(count))

        lat = []
        started = time.perf_counter()
        for event in appended:
            t0 = time.perf_counter()
            await store.ack(event.id)
            lat.append(time.perf_counter() - t0)
        lines.append(_summary("ack", lat, time.perf_counter() - started) + cpu.lap(count))

        lat = []
        started = time.perf_counter()
        for n in range(count):
            t0 = time.perf_counter()
            event = await store.append("door_closed", data | {"n": n}, at=time.time())
            await store.ack(event.id)
            lat.append(time.perf_counter() - t0)
        lines.append(_summary("append+ack", lat, time.perf_counter() - started)
                     + cpu.lap(count))

        # What the outbox pump does after a catch-up batch: one ack_many per run of 128.
        batch = [await store.append("door_opened", data | {"n": n}, at=time.time())
                 for n in range(count)]
        cpu.lap(count)
        lat = []
        started = time.perf_counter()
        for i in range(0, count, 128):
            t0 = time.perf_counter()
            run = batch[i:i + 128]
            await store.ack_many([e.id for e in run])
            lat.extend([(time.perf_counter() - t0) / len(run)] * len(run))
        lines.append(_summary("ack_many x128 (per ev)", lat, time.perf_counter() - started)
                     + cpu.lap(count))

        lat = []

        async def worker(share: int) -> None:
            for n in range(share):
                t0 = time.perf_counter()
                await store.append("temperature", {"n": n}, at=time.time())
                lat.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        lines.append(_summary(f"append x{concurrency} tasks", lat, time.perf_counter() - started)
                     + cpu.lap(max(len(lat), 1)))

        assert await store.last_seq() == 3 * count + (count // concurrency) * concurrency
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="events per phase (max 100000)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    count = max(1, min(args.count, 100_000))
    concurrency = max(1, min(args.concurrency, 64))
    with tempfile.TemporaryDirectory(prefix="store-bench-") as workdir:
        server = RedisProcess(Path(workdir))
        server.start()
        try:
            pid = server.proc.pid if server.proc is not None else None
            lines = asyncio.run(_run(server.url, count, concurrency, pid))
        finally:
            server.stop()  # SIGTERM by pid, SIGKILL if it lingers
    print(f"redis-server appendonly yes, appendfsync always, AOF in {tempfile.gettempdir()}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
