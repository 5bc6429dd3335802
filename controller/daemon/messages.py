"""What the daemon says about itself: the ``status``, ``state`` and ``telemetry`` messages,
built from the settings and from snapshots of the running parts (no I/O here)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from controller import __version__
from controller.contract.messages import (
    Alarm,
    BoardState,
    BusStats,
    ClockReading,
    CodeKeyInfo,
    LaneState,
    State,
    Status,
    Telemetry,
    ZoneState,
    from_builtins,
)
from controller.contract.messages import CompartmentState as WireCompartment
from controller.settings import Settings

__all__ = ["rss_bytes", "state_message", "status_message", "telemetry_message",
           "zone_temperatures"]

#: Domain compartment states as the contract names them.
_STATE_MAP = {
    "free": "free", "reserved": "assigned", "loaded": "loaded", "collected": "free",
    "expired": "expired", "blocked": "blocked", "fault": "fault",
}
_LATCH_MAP = {"released": "released", "engaged": "locked", "unknown": "unknown"}

Temperatures = Mapping[tuple[str, int], float | None]


def status_message(settings: Settings, state: Literal["online", "offline"], boot_id: str,
                   reading: ClockReading,
                   code_key: Mapping[str, Any] | None = None) -> Status:
    """``code_key``: the cabinet's published code key (what dispatch seals codes to)."""
    return Status(
        state=state, cabinet=settings.cabinet.id, boot_id=boot_id,
        version=__version__, cabinet_clock=reading, at=datetime.now(UTC),
        config_hash=settings.config_hash,
        code_key=from_builtins(CodeKeyInfo, code_key) if code_key is not None else None,
    )


def zone_temperatures(settings: Settings, values: Temperatures) -> dict[str, float | None]:
    """The last reading of each zone that has a probe, by zone name."""
    return {z.name: values.get((z.probe.board, z.probe.channel))
            for z in settings.zones if z.probe is not None}


def state_message(
    settings: Settings, *, boot_id: str, revision: int, reading: ClockReading,
    snapshot: Mapping[str, Any], temperatures: Temperatures,
    alarms: Sequence[Mapping[str, Any]], outbox_depth: int,
    lane: Mapping[str, Any] | None,
) -> State:
    """The retained ``state`` snapshot from the cabinet model's ``snapshot``."""
    compartments = []
    for c in snapshot["compartments"]:
        sig = c["signals"]
        compartments.append(WireCompartment(
            id=c["id"], size=c["size"], zone=c["zone"], pool=c["pool"],
            state=_STATE_MAP[c["state"]],  # type: ignore[arg-type]
            door=sig["door"],
            latch=_LATCH_MAP[sig["latch"]] if sig["latch"] else None,  # type: ignore[arg-type]
            occupancy=sig["occupancy"], order_id=c["order_id"],
        ))
    zones = []
    for z in settings.zones:
        temp = None
        if z.probe is not None:
            temp = temperatures.get((z.probe.board, z.probe.channel))
        in_range = None
        if temp is not None and z.min_c is not None and z.max_c is not None:
            in_range = z.min_c <= temp <= z.max_c
        zones.append(ZoneState(name=z.name, kind=z.kind, temperature_c=temp,
                               min_c=z.min_c, max_c=z.max_c, in_range=in_range))
    boards = [BoardState(name=n, online=h in ("online", "degraded"))
              for n, h in snapshot["boards"].items()]
    return State(
        cabinet=settings.cabinet.id, boot_id=boot_id,
        revision=revision, at=datetime.now(UTC),
        cabinet_clock=reading, compartments=compartments, zones=zones,
        boards=boards, alarms=[Alarm(**a) for a in alarms], outbox_depth=outbox_depth,
        lane=LaneState(**lane) if lane is not None else None,
    )


def telemetry_message(
    settings: Settings, *, boot_id: str, reading: ClockReading, uptime_s: float,
    cpu_s: float, buses: Sequence[Mapping[str, Any]], outbox_depth: int,
    temperatures: Temperatures, mqtt: Any, task_restarts: Mapping[str, int],
) -> Telemetry:
    """The ``telemetry`` health message."""
    return Telemetry(
        cabinet=settings.cabinet.id, boot_id=boot_id, at=datetime.now(UTC),
        cabinet_clock=reading, uptime_s=round(uptime_s, 3),
        buses=[BusStats(**b) for b in buses],
        outbox_depth=outbox_depth, memory_rss_bytes=rss_bytes(),
        cpu_percent=round(100.0 * cpu_s / uptime_s, 3) if uptime_s > 0 else None,
        temperatures=zone_temperatures(settings, temperatures), mqtt=mqtt,
        task_restarts=dict(task_restarts),
    )


def rss_bytes() -> int | None:
    """Resident memory of this process, or None where /proc cannot tell."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
