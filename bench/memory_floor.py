"""The floor of the daemon's resident set: what its libraries cost before any of its code.

The footprint target is RSS < 40 MB (the daemon's figure: :mod:`bench.daemon_footprint`).
This benchmark prints the resident set (VmRSS, with its anonymous and file-backed parts)
of a fresh interpreter that imports, in order, one library stack, so that the part of the
daemon's resident set that no change in its own code can remove is on record:

- ``current``: the runtime libraries the daemon uses now, from the project's own
  environment (asyncio with ssl, aiomqtt with paho, PyNaCl's Ed25519 and X25519, msgspec
  with one struct built: the settings and the wire messages are msgspec structs, decisions
  0022 and 0023), then the store with its own Redis client (decision 0024; with the
  settings it imports), then the rest of the daemon's modules;
- ``lighter``: the same roles filled by smaller libraries, installed by the benchmark
  into a virtual environment of its own (``--venv-dir``), never into the project's:
  hiredis (a C RESP parser, under a Redis client of the daemon's own), PyNaCl (as in the
  daemon), msgspec (typed decoding of the settings and wire messages). aiomqtt and
  asyncio stay.

Each stack is imported in a new process; RSS is read from ``/proc/self/status`` after
each import. The lighter stack is a measurement of libraries, not a working daemon: it
tells what a rewrite of the store client and the models could reach.

    .venv/bin/python bench/memory_floor.py [--venv-dir DIR] [--skip-lighter]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lane import ScratchVenvError, installed_bytecode, machine, scratch_venv

TARGET_MB = 40.0

LIGHTER_REQUIREMENTS = ["aiomqtt==2.5.1", "paho-mqtt==2.2.0", "hiredis==3.5.0",
                        "PyNaCl==1.6.2", "msgspec==0.23.0"]

_PROBE = r"""
import importlib, json, sys
def status():
    out = {}
    for line in open('/proc/self/status'):
        key = line.split(':')[0]
        if key in ('VmRSS', 'RssAnon', 'RssFile'):
            out[key] = int(line.split()[1]) / 1024
    return out
rows = [('interpreter', status())]
for label, code in json.loads(sys.argv[1]):
    exec(code, {})
    rows.append((label, status()))
print(json.dumps(rows))
"""

CURRENT = [
    ("asyncio (with ssl)", "import asyncio"),
    ("aiomqtt + paho-mqtt", "import aiomqtt"),
    ("PyNaCl (Ed25519, X25519)", "import nacl.signing, nacl.bindings"),
    ("msgspec (one Struct built)",
     "import msgspec\nclass M(msgspec.Struct):\n    x: int\n"
     "msgspec.json.decode(b'{\"x\": 1}', type=M)"),
    ("the store, its own Redis client", "import controller.store"),
    ("the daemon's modules", "import controller.daemon.main, controller.daemon.app"),
]

LIGHTER = [
    ("asyncio (with ssl)", "import asyncio"),
    ("aiomqtt + paho-mqtt", "import aiomqtt"),
    ("hiredis", "import hiredis"),
    ("PyNaCl (Ed25519)", "import nacl.signing"),
    ("msgspec (one Struct built)",
     "import msgspec\nclass M(msgspec.Struct):\n    x: int\n"
     "msgspec.json.decode(b'{\"x\": 1}', type=M)"),
]


def default_venv_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "locker-controller" / "bench-memory-floor"


def probe(python: str, steps: list[tuple[str, str]]) -> list[tuple[str, dict[str, float]]]:
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([python, "-c", _PROBE, json.dumps(steps)], capture_output=True,
                         text=True, timeout=120, check=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root}).stdout
    return [(label, values) for label, values in json.loads(out)]


def show(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"  {'after importing':<30} {'VmRSS':>8} {'growth':>8} {'anonymous':>10} "
          f"{'file-backed':>12}")
    previous = 0.0
    for label, values in rows:
        rss = values["VmRSS"]
        print(f"  {label:<30} {rss:>5.1f} MB {rss - previous:>+6.1f} {values['RssAnon']:>7.1f} MB "
              f"{values['RssFile']:>9.1f} MB")
        previous = rss
    print(f"  -> {rows[-1][1]['VmRSS']:.1f} MB against the target of < {TARGET_MB:g} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    parser.add_argument("--venv-dir", type=Path, default=None,
                        help=f"the lighter stack's environment (default {default_venv_dir()})")
    parser.add_argument("--skip-lighter", action="store_true",
                        help="measure the current stack only (no download)")
    args = parser.parse_args(argv)
    print(machine())
    print(installed_bytecode())
    show("current stack (the project's environment)", probe(sys.executable, CURRENT))
    if not args.skip_lighter:
        venv = args.venv_dir or default_venv_dir()
        print(f"\nlighter stack: {', '.join(LIGHTER_REQUIREMENTS)} in {venv}")
        try:
            python = scratch_venv(venv, LIGHTER_REQUIREMENTS)
        except ScratchVenvError as exc:
            print(f"lighter stack: not installed: {exc}")
            return 1
        show("lighter stack (libraries only, no daemon code)", probe(str(python), LIGHTER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
