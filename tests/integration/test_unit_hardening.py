"""The shipped systemd unit, rated by systemd's own tool: ``systemd-analyze security``
scores a unit from 0 (locked down) to 10 (exposed); the unit stays below 4."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "locker-controller.service"


def test_systemd_rates_the_unit_below_4() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                             str(UNIT)], capture_output=True, text=True, timeout=60,
                            check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if found is None and "--offline" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) < 4.0, result.stdout
