"""The guard of the fast tier (tests/conftest.py) sees a test without the integration
marker start a process or open a pty. This test does both, takes the record back (so its
own teardown passes) and checks what was seen."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_a_process_or_a_pty_started_without_the_marker_is_recorded(
    request: pytest.FixtureRequest,
) -> None:
    guard = sys.modules["tests.conftest"]
    subprocess.run(["true"], check=True)
    primary, secondary = os.openpty()
    os.close(primary)
    os.close(secondary)
    started = guard._started.pop(request.node.nodeid, [])
    assert "a process (subprocess.Popen)" in started
    assert "a pty (os.openpty)" in started


@pytest.mark.integration
def test_with_the_marker_nothing_is_recorded(request: pytest.FixtureRequest) -> None:
    guard = sys.modules["tests.conftest"]
    subprocess.run(["true"], check=True)
    assert request.node.nodeid not in guard._started
