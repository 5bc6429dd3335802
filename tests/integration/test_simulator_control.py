"""The control channel, the Modbus TCP gateway and the ``locker-sim`` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.cabinet import SimCabinet
from simulator.control import send_command

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "sim-cabinet.toml"
BUS = "rs485-0"


@pytest.fixture
async def cab(tmp_path: Path) -> AsyncIterator[SimCabinet]:
    async with SimCabinet.from_file(
        DEMO, emulate_timing=False, link_dir=tmp_path, control_port=0
    ) as cabinet:
        yield cabinet


async def control(cab: SimCabinet, *requests: dict[str, Any] | str) -> list[dict[str, Any]]:
    assert cab.control_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", cab.control_port)
    try:
        replies = []
        for request in requests:
            line = request if isinstance(request, str) else json.dumps(request)
            writer.write(line.encode() + b"\n")
            await writer.drain()
            replies.append(json.loads(await asyncio.wait_for(reader.readline(), 5)))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


async def test_people_act_through_the_control_channel(cab: SimCabinet) -> None:
    replies = await control(
        cab,
        {"op": "ping", "id": 1},
        {"op": "pull", "compartment": "A01", "id": "a"},
        {"op": "pull_when_released", "compartment": "A01"},
    )
    assert replies[0] == {
        "id": 1,
        "ok": True,
        "result": {"cabinet": "cab-sim-01", "site": "fr-lyon-07"},
    }
    assert replies[1] == {"id": "a", "ok": True, "result": {"open": False}}
    cab.world.pulse_output("locks-a", 0, 0.5)
    assert cab.world.door("A01").is_open
    replies = await control(
        cab,
        {"op": "place_parcel", "compartment": "A01"},
        {"op": "close", "compartment": "A01"},
        {"op": "state"},
        {"op": "truth", "compartment": "A01"},
    )
    assert replies[0]["result"] == {"parcels": 1}
    assert replies[1]["result"] == {"open": False}
    assert replies[2]["result"]["compartments"]["A01"]["parcels"] == 1
    kinds = [e["kind"] for e in replies[3]["result"]["events"]]
    assert kinds == [
        "pull_blocked",
        "latch_released",
        "door_opened",
        "parcel_placed",
        "door_closed",
    ]


async def test_structured_errors(cab: SimCabinet) -> None:
    replies = await control(
        cab,
        {"op": "pull", "compartment": "Z99", "id": 9},
        {"op": "dance"},
        "{not json",
        {"op": "pull"},
        {"op": "place_parcel", "compartment": "A01"},
        {"op": "fault_set", "kind": "gremlins", "board": "locks-a"},
        {"op": "fault_set", "kind": "silent", "board": "nope"},
        {"op": "pull", "compartment": 7},
        "[1, 2]",
    )
    codes = [(r["ok"], r["error"]["code"], r["error"].get("field")) for r in replies]
    assert codes == [
        (False, "unknown_compartment", "compartment"),
        (False, "unknown_op", "op"),
        (False, "bad_json", None),
        (False, "missing_field", "compartment"),
        (False, "door_closed", "compartment"),
        (False, "unknown_fault", "kind"),
        (False, "unknown_board", "board"),
        (False, "invalid_request", "compartment"),
        (False, "bad_request", None),
    ]
    assert replies[0]["id"] == 9
    assert cab.ground_truth.count("door_opened") == 0  # nothing happened


async def test_faults_through_the_control_channel(cab: SimCabinet) -> None:
    replies = await control(
        cab,
        {"op": "fault_set", "kind": "slow", "board": "locks-a", "latency_s": 0.2},
        {"op": "fault_set", "kind": "cut_wire", "compartment": "B01", "signal": "door"},
        {"op": "fault_set", "kind": "compressor_failure", "zone": "chilled"},
        {"op": "faults"},
        {"op": "fault_clear", "kind": "slow"},
        {"op": "fault_clear"},
        {"op": "faults"},
    )
    assert all(r["ok"] for r in replies), replies
    assert replies[0]["result"] == {"kind": "slow", "board": "locks-a", "latency_s": 0.2}
    assert replies[1]["result"] == {"kind": "cut_wire", "board": "locks-b", "channel": 0}
    assert len(replies[3]["result"]["faults"]) == 3
    assert len(replies[4]["result"]["cleared"]) == 1
    assert len(replies[5]["result"]["cleared"]) == 2
    assert replies[6]["result"] == {"faults": []}


# -- Modbus TCP --------------------------------------------------------------------


async def modbus_tcp(port: int, unit: int, pdu: bytes, wait_s: float = 1.0) -> bytes | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack(">HHHB", 0x1234, 0, len(pdu) + 1, unit) + pdu)
        await writer.drain()
        try:
            header = await asyncio.wait_for(reader.readexactly(7), wait_s)
        except TimeoutError:
            return None
        tid, protocol, length, reply_unit = struct.unpack(">HHHB", header)
        assert (tid, protocol, reply_unit) == (0x1234, 0, unit)
        return await asyncio.wait_for(reader.readexactly(length - 1), wait_s)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_modbus_tcp_serves_the_same_bus(cab: SimCabinet) -> None:
    port = cab.tcp_port(BUS)
    cab.world.set_output("locks-a", 1, True)
    assert await modbus_tcp(port, 1, struct.pack(">BHH", 1, 0, 8)) == bytes([1, 1, 0b10])
    assert await modbus_tcp(port, 1, struct.pack(">BHH", 3, 0x8000, 1)) == bytes([3, 2, 0, 100])
    cab.faults.set("silent", board="locks-a")
    assert await modbus_tcp(port, 1, struct.pack(">BHH", 1, 0, 8), wait_s=0.3) is None
    cab.faults.set("corrupt_crc", board="locks-b")
    assert await modbus_tcp(port, 2, struct.pack(">BHH", 1, 0, 8)) == bytes([0x81, 0x0B])


# -- the CLI -----------------------------------------------------------------------


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    argv = [sys.executable, "-m", "simulator.cli", "run", "--config", str(DEMO)]
    argv += ["--link-dir", str(tmp_path / "dev"), "--json", "--no-timing"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the process prints it or exits
        assert line, proc.stderr.read() if proc.stderr else ""
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def ctl(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "simulator.cli", "ctl", "--port", str(port), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_cli_run_and_ctl(
    sim_process: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path
) -> None:
    proc, ready = sim_process
    assert ready["ready"] is True
    link = tmp_path / "dev" / "ttyLOCKER0"
    assert ready["buses"][0]["link"] == str(link)
    assert os.path.realpath(link) == os.path.realpath(ready["buses"][0]["serial_path"])
    port = ready["control_port"]

    assert send_command(port, {"op": "pull", "compartment": "A01"}) == {
        "ok": True,
        "result": {"open": False},
    }
    done = ctl(port, "pull", "Z99")
    assert done.returncode == 1
    assert "unknown_compartment" in done.stderr
    done = ctl(port, "fault-set", "silent", "--board", "locks-a")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"kind": "silent", "board": "locks-a"}
    done = ctl(port, "fault-set", "late", "--board", "locks-b", "--delay", "0.4",
               "--writes-only")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "kind": "late", "board": "locks-b", "delay_s": 0.4, "writes_only": True,
    }
    done = ctl(port, "truth", "--kind", "pull_blocked")
    assert done.returncode == 0
    assert json.loads(done.stdout)["events"][0]["compartment"] == "A01"

    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not os.path.lexists(link)


def test_ctl_without_a_simulator_exits_2() -> None:
    from tests.support.services import free_port

    done = ctl(free_port(), "ping")
    assert done.returncode == 2
    assert "cannot reach" in done.stderr


def test_cli_config_error_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace('profile = "generic_io"', 'profile = "nope"'))
    argv = [sys.executable, "-m", "simulator.cli", "run", "--config", str(bad), "--no-links"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "boards[2].profile" in done.stderr
