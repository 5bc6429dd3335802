"""Every benchmark in bench/ runs with a tiny count and prints its figures, so none of
them rots. The figures themselves are not checked here (speed is measured by the
benchmarks, never asserted by tests); only that the script ran and said what it measured.

The lane benchmarks start mosquitto, redis-server, the simulator and the daemon as
processes on loopback, hence the integration marker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_services = pytest.mark.skipif(
    not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
    or not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()),
    reason="mosquitto and redis-server are needed",
)


def _run(*argv: str, timeout: float = 180) -> str:
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.integration
def test_bus_throughput_prints_its_rate() -> None:
    out = _run("bench/bus_throughput.py", "--polls", "20")
    assert "polls/s" in out
    assert "theoretical max" in out
    assert "ms per poll transaction" in out


@pytest.mark.integration
@needs_services
def test_store_outbox_prints_its_phases() -> None:
    out = _run("-m", "bench.store_outbox", "--count", "16", "--concurrency", "2")
    for phase in ("append ", "ack ", "append+ack", "append x2 tasks"):
        assert phase in out


@pytest.mark.integration
@needs_services
def test_command_roundtrip_prints_both_shares() -> None:
    out = _run("bench/command_roundtrip.py", "--count", "5", "--saturated-count", "3",
               "--get-state", "4")
    assert "get_state round trip               n=    4" in out
    assert "CPU-ms per command" in out
    assert "machine:" in out
    assert "benchmark overrides" in out
    assert out.count("round trip (publish -> reply)      n=    5") == 1
    assert "n=    3" in out
    assert "software = round trip - board_ms" in out
    assert "transaction_time(8, 8, 19200)" in out


@pytest.mark.integration
@needs_services
def test_door_event_latency_prints_floor_and_percentiles() -> None:
    out = _run("bench/door_event_latency.py", "--count", "4")
    assert out.count("CPU-ms per door change") == 2
    assert out.count("floor = period/2") == 2
    assert out.count("all door changes                   n=    4") == 2
    assert "p50 - floor" in out


@pytest.mark.integration
@needs_services
def test_daemon_footprint_prints_memory_and_cpu() -> None:
    out = _run("bench/daemon_footprint.py", "--window", "2", "--settle", "0", "--profile", "0",
               "--poll", "0.1", "--pin", "0")
    assert "RSS (VmRSS) at the end" in out
    assert "peak RSS (VmHWM)" in out
    assert "CPU (time on a CPU / wall)" in out
    assert "CPU per poll transaction" in out
    assert "pinned to core: 0" in out
    assert "RSS of the imports alone" in out


@pytest.mark.integration
@needs_services
def test_poll_floor_prints_each_poller() -> None:
    out = _run("bench/poll_floor.py", "--rounds", "1", "--window", "1", "--settle", "0")
    for poller in ("daemon", "asyncio", "thread"):
        assert f"round 1 {poller:<8}" in out
        assert f"\n{poller:<8} " in out
    assert "CPU-ms per tx (median)" in out


@pytest.mark.integration
def test_memory_floor_prints_the_current_stack() -> None:
    # --skip-lighter: no download (the lighter stack is installed from PyPI otherwise).
    out = _run("bench/memory_floor.py", "--skip-lighter")
    for step in ("interpreter", "the store, its own Redis client", "msgspec (one Struct built)",
                 "the daemon's modules"):
        assert step in out
    assert "against the target of < 40 MB" in out
    assert "lighter stack" not in out


@pytest.mark.integration
@needs_services
def test_side_by_side_measures_the_daemon_without_the_peer() -> None:
    # --skip-peer: no network needed (the peer is installed from PyPI otherwise).
    out = _run("bench/side_by_side.py", "--skip-peer", "--window", "2", "--settle", "0",
               "--changes", "2")
    assert "CPU-ms/tx" in out
    assert "door change -> MQTT" in out
    assert out.count("\ndaemon ") == 1
    assert "spicierModbus2mqtt " not in out


@pytest.mark.integration
@needs_services
def test_outage_delivery_prints_counts() -> None:
    out = _run("bench/outage_delivery.py", "--outage", "2", "--before", "0.5", "--after",
               "0.5", "--drain", "30", "--backlog", "200")
    assert out.count("all delivered, in order: yes") == 2
    assert "events/s" in out
    for figure in ("events produced", "events delivered", "duplicates", "seq gaps",
                   "door_opened: delivered / truth"):
        assert figure in out
    assert out.count("all delivered: yes") == 2


@pytest.mark.integration
@needs_services
def test_fault_campaign_prints_its_figures() -> None:
    out = _run("bench/fault_campaign.py", "--broker", "1", "--daemon", "1", "--redis", "0",
               "--board", "0", "--broker-down", "0.2", "0.5", "--seed", "3")
    for figure in ("seed=3", "lost=", "seq_gaps=", "pulses_per_command_max=",
                   "energised_max_s=", "reconnect_s n=1", "verdict:"):
        assert figure in out


@pytest.mark.integration
def test_code_check_prints_both_cabinets_and_cpu() -> None:
    out = _run("bench/code_check.py", "--checks", "5")
    assert "100 orders / 1 order" in out
    assert "ms/check" in out
    assert "targets" in out
