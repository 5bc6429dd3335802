"""The long fault campaign: door activity on a whole simulated lane while the broker is
restarted (random down times), the daemon is killed with SIGKILL at random phases (around
a command, a pulse, a poll, a commit, a publish) and redis-server is killed, in a seeded
random order. The runner and the verdict are :mod:`tests.support.campaign`, the same as the
CI-sized campaigns of ``tests/integration/test_daemon_faults.py``.

Prints, against the simulator's ground truth: events lost (and whether each falls inside
the unseen window), duplicates after dedupe, seq gaps, pulses per command id (max),
energised time per command against the cap (max), stale or phantom door events accepted,
the broker reconnect time (p50/p99/max) and the door event detection delay. Exits 1 when
a promise is broken.

    .venv/bin/python bench/fault_campaign.py [--broker 50] [--daemon 50] [--redis 15]
                                             [--seed N]   (or FAULT_CAMPAIGN_SEED=N)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lane import machine
from tests.support.campaign import SEED_ENV, Plan, run_campaign, seed_from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", type=int, default=50, help="broker restarts")
    parser.add_argument("--daemon", type=int, default=50, help="kill -9 of the daemon")
    parser.add_argument("--redis", type=int, default=15, help="kill -9 of redis-server")
    parser.add_argument("--board", type=int, default=15,
                        help="board faults: late replies, a lost/garbled/short pulse "
                        "acknowledgement, a flapping door switch")
    parser.add_argument("--broker-down", type=float, nargs=2, default=(0.2, 5.0),
                        metavar=("MIN", "MAX"), help="broker down time range, s")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the run's files (logs of every process) there")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"campaign seed (default: {SEED_ENV}, else random)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else seed_from_env(random.randrange(1, 10**6))
    plan = Plan(seed=seed, broker_restarts=args.broker, daemon_kills=args.daemon,
                redis_kills=args.redis, board_faults=args.board,
                broker_down_s=tuple(args.broker_down))
    print(machine())
    started = time.monotonic()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        verdict = asyncio.run(run_campaign(args.workdir, plan))
    else:
        with tempfile.TemporaryDirectory(prefix="fault-campaign-") as tmp:
            verdict = asyncio.run(run_campaign(Path(tmp), plan))
    print(f"wall time {time.monotonic() - started:.0f} s")
    print("verdict: " + ("all promises kept" if not verdict.problems
                         else f"{len(verdict.problems)} problem(s)"))
    return 1 if verdict.problems else 0


if __name__ == "__main__":
    sys.exit(main())
