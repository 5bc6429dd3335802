"""What a fresh interpreter loads: for tests that keep a library out of a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def modules_after(code: str, timeout_s: float = 60.0) -> frozenset[str]:
    """Every module name in ``sys.modules`` after a new interpreter of this environment ran
    ``code`` (from the repository's root)."""
    probe = f"{code}\nimport json as _j, sys as _s\nprint(_j.dumps(sorted(_s.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=timeout_s, check=True, cwd=ROOT).stdout
    return frozenset(json.loads(out.splitlines()[-1]))
