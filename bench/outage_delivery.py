"""Events across a broker outage, and across a daemon crash during that outage: how many
were produced, delivered, delivered twice, missing.

Starts a whole lane on loopback (``controller.lab.rig.LaneRig``: mosquitto with persistence,
redis-server with appendfsync always, ``locker-sim`` with line-timing emulation, the
daemon). A dispatch-side subscriber (paho, MQTT 5, clean_start false with a session
expiry: a persistent session that the broker keeps across its restart) subscribes to
``events`` at QoS 1 before the daemon starts. A thread makes door activity through the
simulator's control channel the whole time: a door forced open, then closed, compartment
after compartment (no broker is needed for that; a command could not reach the cabinet
during the outage). Then:

* scenario "broker outage": after ``--before`` seconds the broker is stopped (SIGTERM by
  pid) for ``--outage`` seconds and started again on the same port;
* scenario "broker outage + daemon crash": the same, and 3 s into the outage the daemon is
  killed (SIGKILL) and started again while the broker is still down. Door activity pauses
  from 0.5 s before the kill until the new daemon polls the boards again: a door that
  opens and closes while no process watches it cannot be reported by anybody, so it is
  kept out of the comparison.

At the end (the outbox drained, or a time limit) the received events are deduplicated by
id; the sequence numbers must run from 1 to the store's last one without a gap, and the
``door_opened``/``door_closed`` events must match the simulator's ground truth
(``door_forced`` + ``door_opened``, ``door_closed``). Target: all delivered.

Scenarios "catch-up": with the broker down, ``--backlog`` events are committed to the
outbox (as another process of the cabinet would); the broker comes back and the daemon
catches up. Printed: events/s from the first to the last delivery, the daemon's CPU-ms
per event, gaps, duplicates and order; the second run kills the daemon (SIGKILL) once
half of the backlog has arrived and starts it again (duplicates allowed, no gap).
Target: >= 2,000 events/s, in order, none lost.

    .venv/bin/python bench/outage_delivery.py [--outage 10] [--before 3] [--after 3]
    .venv/bin/python bench/outage_delivery.py --only catch-up [--backlog 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lane import EventCollector, cpu_ms, machine, topics_of
from controller.lab.rig import LaneRig
from controller.store import Store
from controller.store.records import NewEvent

COMPARTMENTS = ["A01", "A02", "A03", "A04", "A05", "A06",
                "B01", "B02", "B03", "B04", "B05", "B06"]


class DoorActivity:
    """Opens (crowbar) and closes doors one after the other until stopped; pausable."""

    def __init__(self, rig: LaneRig, step_s: float) -> None:
        self.rig = rig
        self.step_s = step_s
        self.stop_flag = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()  # set while paused with every door closed
        self.changes = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="door-activity", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        self.idle.clear()
        self.running.clear()
        self.idle.wait(10)

    def resume(self) -> None:
        self.running.set()

    def stop(self) -> None:
        self.stop_flag.set()
        self.running.set()
        self._thread.join(15)

    def _run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.running.wait(30)
                continue
            cid = COMPARTMENTS[n % len(COMPARTMENTS)]
            n += 1
            try:
                self.rig.control.call("force_open", compartment=cid)
                self.changes += 1
                self.stop_flag.wait(self.step_s)
                self.rig.control.call("close", compartment=cid)
                self.changes += 1
            except (OSError, RuntimeError) as exc:
                self.errors.append(str(exc))
            self.stop_flag.wait(self.step_s)


def _requests(rig: LaneRig) -> int:
    return int(rig.control.call("stats")["rs485-0"]["requests"])


def _wait_polling(rig: LaneRig, base: int, until: float) -> bool:
    """Until the (new) daemon polls the boards periodically (10 requests past ``base``)
    or the monotonic time ``until``; True if it does."""
    while time.monotonic() < until:
        if _requests(rig) - base >= 10:
            return True
        time.sleep(0.05)
    return False


async def _store_figures(rig: LaneRig) -> tuple[int, int]:
    store = await Store.connect(f"redis://127.0.0.1:{rig.redis_port}/0", f"locker:{rig.site}",
                                rig.cabinet)
    try:
        return await store.last_seq(), await store.depth()
    finally:
        await store.close()


def _settled(rig: Any, collector: Any, drain_s: float) -> tuple[int, int, list[Any]]:
    """The store's last seq and outbox depth once everything is delivered (the outbox
    empty and its last event received), or as they are at the deadline: a restarted
    daemon commits start-up events of its own after the backlog, so one read right away
    can find one still on its way."""
    deadline = time.monotonic() + drain_s
    while True:  # bounded by the deadline
        last_seq, depth = asyncio.run(_store_figures(rig))
        received = collector.snapshot()
        if (depth == 0 and last_seq in {p.get("seq") for _, p in received}) \
                or time.monotonic() >= deadline:
            return last_seq, depth, received
        time.sleep(0.1)


def _truth_doors(rig: LaneRig) -> tuple[int, int]:
    opened = forced = closed = 0
    for kind in ("door_opened", "door_forced", "door_closed"):
        events = rig.control.call("truth", kind=kind, limit=200_000)["events"]
        if kind == "door_opened":
            opened = len(events)
        elif kind == "door_forced":
            forced = len(events)
        else:
            closed = len(events)
    return opened + forced, closed


def scenario(crash: bool, outage_s: float, before_s: float, after_s: float, step_s: float,
             drain_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        # Doors change every --step (0.15 s), faster than the door debounce: this bench
        # measures delivery, so every change the poller reads must count.
        rig = LaneRig(Path(tmp), overrides={"timing.door_debounce_s": "0"})
        try:
            rig.start(daemon=False)
            collector = EventCollector("127.0.0.1", rig.mqtt_port, topics_of(rig).events)
            collector.start()
            rig.daemon.start(wait_port=False)
            if not _wait_polling(rig, _requests(rig), time.monotonic() + 30):
                raise TimeoutError("the daemon does not poll the boards")
            activity = DoorActivity(rig, step_s)
            activity.start()
            time.sleep(before_s)
            rig.broker.stop()
            down_at = time.monotonic()
            restart_s = None
            if crash:
                time.sleep(min(3.0, outage_s / 2))
                activity.pause()
                time.sleep(0.5)  # the last change polled and committed
                rig.daemon.kill()
                base, killed_at = _requests(rig), time.monotonic()
                time.sleep(0.2)
                rig.daemon.start(wait_port=False)
                if _wait_polling(rig, base, down_at + outage_s):
                    restart_s = time.monotonic() - killed_at
            time.sleep(max(0.0, down_at + outage_s - time.monotonic()))
            rig.broker.start()
            outage = time.monotonic() - down_at
            if crash:
                if restart_s is None:
                    if not _wait_polling(rig, base, time.monotonic() + 60):
                        raise TimeoutError("the restarted daemon does not poll the boards")
                    restart_s = time.monotonic() - killed_at
                activity.resume()
            time.sleep(after_s)
            activity.pause()
            activity.stop()
            time.sleep(0.5)
            truth_open, truth_closed = _truth_doors(rig)
            last_seq, depth, received = _settled(rig, collector, drain_s)
            collector.stop()
        finally:
            rig.close()
    ids = Counter(str(p.get("id")) for _, p in received)
    unique: dict[str, dict[str, Any]] = {}
    for _, p in received:
        unique.setdefault(str(p.get("id")), p)
    seqs = sorted(int(p["seq"]) for p in unique.values() if isinstance(p.get("seq"), int))
    missing = sorted(set(range(1, last_seq + 1)) - set(seqs))
    kinds = Counter(str(p.get("kind")) for p in unique.values())
    boots = len({p.get("boot_id") for p in unique.values()})
    return {
        "crash": crash, "outage": outage, "restart_s": restart_s, "produced": last_seq,
        "received": len(received), "delivered": len(unique),
        "duplicates": sum(c - 1 for c in ids.values()), "missing": missing, "depth": depth,
        "seq_dupes": len(seqs) - len(set(seqs)), "kinds": kinds, "boots": boots,
        "truth_open": truth_open, "truth_closed": truth_closed, "changes": activity.changes,
        "activity_errors": activity.errors, "reconnects": collector.connects,
    }


async def _inject(rig: LaneRig, count: int) -> int:
    """Commit ``count`` events to the daemon's outbox, as another process of the cabinet
    would (500 per transaction); returns the last seq."""
    store = await Store.connect(f"redis://127.0.0.1:{rig.redis_port}/0", f"locker:{rig.site}",
                                rig.cabinet, boot_id=uuid.uuid4().hex)
    try:
        left = count
        while left > 0:
            n = min(500, left)
            await store.commit([NewEvent("bench_backlog", {"n": count - left + i}, time.time())
                                for i in range(n)])
            left -= n
        return await store.last_seq()
    finally:
        await store.close()


def catch_up(backlog: int, kill: bool, drain_s: float) -> dict[str, Any]:
    """The broker is down while ``backlog`` events pile up in the outbox; then it comes
    back and the daemon catches up. With ``kill``, the daemon is killed (SIGKILL) once
    half of the backlog has reached the subscriber, and started again."""
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp:
        rig = LaneRig(Path(tmp))
        try:
            rig.start(daemon=False)
            collector = EventCollector("127.0.0.1", rig.mqtt_port, topics_of(rig).events)
            collector.start()
            rig.daemon.start(wait_port=False)
            if not _wait_polling(rig, _requests(rig), time.monotonic() + 30):
                raise TimeoutError("the daemon does not poll the boards")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and asyncio.run(_store_figures(rig))[1] > 0:
                time.sleep(0.1)  # the start-up events delivered
            rig.broker.stop()
            first_seq = asyncio.run(_store_figures(rig))[0] + 1
            last_seq = asyncio.run(_inject(rig, backlog))
            cpu = 0.0
            cpu_at = cpu_ms(rig.daemon.pid)
            rig.broker.start()
            up_at = time.monotonic()
            killed = False
            deadline = up_at + drain_s
            depth = -1
            while time.monotonic() < deadline:
                got = {p.get("seq") for _, p in collector.snapshot()}
                if kill and not killed and sum(1 for q in got if isinstance(q, int)
                                               and q >= first_seq) >= backlog // 2:
                    cpu += cpu_ms(rig.daemon.pid) - cpu_at
                    rig.daemon.kill()
                    killed = True
                    rig.daemon.start(wait_port=False)
                    time.sleep(0.05)
                    cpu_at = cpu_ms(rig.daemon.pid)
                if last_seq in got:
                    depth = asyncio.run(_store_figures(rig))[1]
                    if depth == 0:
                        break
                time.sleep(0.02)
            cpu += cpu_ms(rig.daemon.pid) - cpu_at
            final_seq, depth, received = _settled(rig, collector, drain_s)
            collector.stop()
        finally:
            rig.close()
    backlog_rx = [(at, p) for at, p in received
                  if isinstance(p.get("seq"), int) and first_seq <= p["seq"] <= last_seq]
    firsts: dict[int, float] = {}
    order_ok = True
    highest = 0
    for at, p in backlog_rx:
        seq = int(p["seq"])
        if seq not in firsts:
            firsts[seq] = at
            # The first delivery of each event comes in sequence order (a re-send after the
            # kill repeats earlier ones: those are duplicates, not disorder).
            order_ok = order_ok and seq > highest
            highest = max(highest, seq)
    missing = sorted(set(range(first_seq, last_seq + 1)) - set(firsts))
    times = sorted(firsts.values())
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    return {
        "kill": kill, "backlog": backlog, "delivered": len(firsts),
        "duplicates": len(backlog_rx) - len(firsts), "missing": missing, "order_ok": order_ok,
        "rate": (len(times) - 1) / span if span and span > 0 else float("nan"),
        "from_broker_up": (times[-1] - up_at) if times else float("nan"),
        "cpu_ms": cpu, "depth": depth, "final_seq": final_seq,
    }


def _report_catch_up(r: dict[str, Any]) -> bool:
    title = "catch-up after an outage" + (", daemon killed (SIGKILL) half-way and restarted"
                                          if r["kill"] else "")
    print(f"\n== {title}: {r['backlog']} events waiting in the outbox when the broker returns")
    rows = [
        ("events delivered (distinct)", f"{r['delivered']} / {r['backlog']}"),
        ("missing (seq gaps)", len(r["missing"])),
        ("duplicates (same id again)", r["duplicates"]),
        ("first deliveries in seq order", "yes" if r["order_ok"] else "NO"),
        ("catch-up rate, first to last event", f"{r['rate']:.0f} events/s"),
        ("broker back -> last event delivered", f"{r['from_broker_up']:.2f} s (includes the "
                                                 "daemon's reconnect back-off)"),
        ("daemon CPU per event", f"{r['cpu_ms'] / max(r['delivered'], 1):.3f} CPU-ms "
                                 f"({r['cpu_ms']:.0f} ms in all)"),
        ("outbox depth at the end", r["depth"]),
    ]
    for name, value in rows:
        print(f"{name:<40} {value}")
    ok = not r["missing"] and r["order_ok"] and r["depth"] == 0
    print(f"all delivered, in order: {'yes' if ok else 'NO'}")
    return ok


def _report(title: str, r: dict[str, Any]) -> bool:
    print(f"\n== {title}: broker down {r['outage']:.1f} s"
          + (f"; daemon killed 3 s into it, polling the boards again {r['restart_s']:.2f} s "
             "after the kill" if r["crash"] else ""))
    opened, closed = r["kinds"]["door_opened"], r["kinds"]["door_closed"]
    rows = [
        ("events produced (store's last seq)", r["produced"]),
        ("events received (with duplicates)", r["received"]),
        ("events delivered (distinct ids)", r["delivered"]),
        ("duplicates (same id again)", r["duplicates"]),
        ("seq gaps (missing seq numbers)", len(r["missing"])),
        ("outbox depth at the end", r["depth"]),
        ("boots seen in events", r["boots"]),
        ("door_opened: delivered / truth", f"{opened} / {r['truth_open']}"),
        ("door_closed: delivered / truth", f"{closed} / {r['truth_closed']}"),
    ]
    for name, value in rows:
        print(f"{name:<40} {value}")
    if r["missing"]:
        print(f"missing seq: {r['missing'][:20]}{' ...' if len(r['missing']) > 20 else ''}")
    if r["activity_errors"]:
        print(f"door activity errors: {r['activity_errors'][:3]}")
    ok = (not r["missing"] and r["seq_dupes"] == 0 and r["delivered"] == r["produced"]
          and opened == r["truth_open"] and closed == r["truth_closed"])
    print(f"all delivered: {'yes' if ok else 'NO'}; subscriber connections: {r['reconnects']}; "
          f"kinds: {dict(sorted(r['kinds'].items()))}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--outage", type=float, default=10.0, help="broker down, s (1..120)")
    parser.add_argument("--before", type=float, default=3.0, help="activity before, s (0..60)")
    parser.add_argument("--after", type=float, default=3.0, help="activity after, s (0..60)")
    parser.add_argument("--step", type=float, default=0.15,
                        help="seconds between two door changes (0.05..5)")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="longest wait for the outbox to drain, s (1..300)")
    parser.add_argument("--only", choices=("outage", "crash", "catch-up"), default=None)
    parser.add_argument("--backlog", type=int, default=20_000,
                        help="events waiting when the broker returns, catch-up scenarios "
                             "(100..200000)")
    args = parser.parse_args(argv)
    outage = max(1.0, min(args.outage, 120.0))
    before = max(0.0, min(args.before, 60.0))
    after = max(0.0, min(args.after, 60.0))
    step = max(0.05, min(args.step, 5.0))
    drain = max(1.0, min(args.drain, 300.0))
    print(machine())
    print("lane: mosquitto (persistence) + redis-server (appendfsync always) + locker-sim + "
          "locker-controller on 127.0.0.1; subscriber: MQTT 5 persistent session, QoS 1")
    print(f"door activity: force_open / close, one change every {step:.2f} s, over "
          f"{len(COMPARTMENTS)} compartments")
    results = []
    if args.only in (None, "outage"):
        results.append(_report("broker outage",
                               scenario(False, outage, before, after, step, drain)))
    if args.only in (None, "crash"):
        results.append(_report("broker outage + daemon kill -9 and restart during it",
                               scenario(True, outage, before, after, step, drain)))
    if args.only in (None, "catch-up"):
        backlog = max(100, min(args.backlog, 200_000))
        results.append(_report_catch_up(catch_up(backlog, False, drain)))
        results.append(_report_catch_up(catch_up(backlog, True, drain)))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
