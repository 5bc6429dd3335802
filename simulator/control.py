"""The control channel: JSON lines over a loopback TCP port, for other processes.

One request per line, one reply per line, on a connection that may carry many::

    {"op": "pull", "compartment": "A01", "id": 7}
    {"ok": true, "id": 7, "result": {"open": false}}

    {"op": "pull", "compartment": "Z99"}
    {"ok": false, "error": {"code": "unknown_compartment", "message": "unknown compartment 'Z99'",
     "field": "compartment"}}

``id`` is optional and echoed. Operations (see ``docs/simulator.md`` for the table):
``ping``, ``state``, ``endpoints``, ``pull``, ``pull_when_released``, ``force_open``,
``close``, ``place_parcel``, ``remove_parcel``, ``set_temperature``, ``fault_set``,
``fault_clear``, ``faults``, ``truth``, ``stats``; for the drive lane ``scan`` (``code``:
the scanner sends it), ``vehicle_arrive``/``vehicle_leave``, ``help_press``/``help_release``,
``tamper_open``/``tamper_close``, ``mains_lose``/``mains_restore`` and ``lane`` (inputs,
light, buzzer). Error codes: ``bad_json``,
``bad_request``, ``unknown_op``, ``missing_field``, ``unknown_compartment``,
``unknown_board``, ``unknown_zone``, ``unknown_bus``, ``unknown_fault``,
``door_closed``, ``empty``, ``invalid_request``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

from simulator.cabinet import SimCabinet
from simulator.errors import InvalidRequest, SimError
from simulator.serving import LoopbackServer

__all__ = ["LANE_OPS", "OPS", "ControlServer", "handle_request", "send_command"]

#: A request line longer than this is refused (every read is bounded).
MAX_LINE = 64 * 1024
IDLE_TIMEOUT_S = 3600.0


def _field(req: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    if req.get(name) is None:
        raise InvalidRequest(f"missing {name!r}", field=name, code="missing_field")
    value = req[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise InvalidRequest(f"{name!r} has the wrong type: {value!r}", field=name)
    return value


def _optional(req: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return _field(req, name, kind) if req.get(name) is not None else None


def _fault_target(req: dict[str, Any]) -> dict[str, Any]:
    return {
        "board": _optional(req, "board", str),
        "channel": _optional(req, "channel", int),
        "compartment": _optional(req, "compartment", str),
        "signal": _optional(req, "signal", str),
        "zone": _optional(req, "zone", str),
    }


def _op_fault_set(cab: SimCabinet, req: dict[str, Any]) -> Any:
    extra: dict[str, Any] = {}
    for name in ("latency_s", "period_s", "delay_s"):
        if req.get(name) is not None:
            extra[name] = float(_field(req, name, (int, float)))
    for name in ("level", "writes_only"):
        if req.get(name) is not None:
            extra[name] = _field(req, name, bool)
    for name in ("code", "count"):
        if req.get(name) is not None:
            extra[name] = _field(req, name, int)
    fault = cab.faults.set(_field(req, "kind"), **_fault_target(req), **extra)
    return fault.as_dict()


def _op_fault_clear(cab: SimCabinet, req: dict[str, Any]) -> Any:
    gone = cab.faults.clear(_optional(req, "kind", str), **_fault_target(req))
    return {"cleared": [f.as_dict() for f in gone]}


def _op_truth(cab: SimCabinet, req: dict[str, Any]) -> Any:
    events = cab.ground_truth.events(
        _optional(req, "kind", str),
        compartment=_optional(req, "compartment", str),
        since=_optional(req, "since", (int, float)),
    )
    limit = _optional(req, "limit", int) or 1000
    return {"events": [e.as_dict() for e in events[-limit:]]}


def _door(cab: SimCabinet, req: dict[str, Any]) -> Any:
    return cab.world.door(_field(req, "compartment"))


def _door_action(cab: SimCabinet, req: dict[str, Any], action: str) -> Any:
    door = _door(cab, req)
    getattr(door, action)()
    return {"open": door.is_open}


def _op_set_temperature(cab: SimCabinet, req: dict[str, Any]) -> Any:
    zone = cab.world.zone(_field(req, "zone"))
    zone.set_temperature(float(_field(req, "value_c", (int, float))))
    return {"temperature_c": zone.temperature_c}


#: Lane operations without arguments: op -> help. Each sets one input fact of the lane.
LANE_OPS: dict[str, str] = {
    "vehicle_arrive": "a car stops in the bay",
    "vehicle_leave": "the car drives off",
    "help_press": "press the help button",
    "help_release": "release the help button",
    "tamper_open": "open the cabinet's service panel",
    "tamper_close": "close the service panel",
    "mains_lose": "the UPS loses mains power",
    "mains_restore": "mains power is back",
}
_LANE_FACTS = {
    "vehicle_arrive": ("vehicle_present", True), "vehicle_leave": ("vehicle_present", False),
    "help_press": ("help_button", True), "help_release": ("help_button", False),
    "tamper_open": ("tamper", True), "tamper_close": ("tamper", False),
    "mains_lose": ("mains_fail", True), "mains_restore": ("mains_fail", False),
}


def _lane_fact(op: str) -> Callable[[SimCabinet, dict[str, Any]], Any]:
    line, active = _LANE_FACTS[op]

    def handler(cab: SimCabinet, req: dict[str, Any]) -> Any:
        cab.lane.set_input(line, active, bounce=_optional(req, "bounce", int) or 0)
        return cab.lane_state()

    return handler


def _op_scan(cab: SimCabinet, req: dict[str, Any]) -> Any:
    cab.scan(_field(req, "code"))
    return {"scans": cab.scanner.scans if cab.scanner is not None else 0}


OPS: dict[str, Callable[[SimCabinet, dict[str, Any]], Any]] = {
    "ping": lambda cab, req: {"cabinet": cab.config.cabinet_id, "site": cab.config.site},
    "state": lambda cab, req: cab.world.snapshot(),
    "endpoints": lambda cab, req: {"buses": cab.endpoints()},
    "pull": lambda cab, req: {"open": _door(cab, req).pull()},
    "pull_when_released": lambda cab, req: {
        "open": _door(cab, req).pull_when_released(bool(_optional(req, "wait", bool) is not False))
    },
    "force_open": lambda cab, req: _door_action(cab, req, "force_open"),
    "close": lambda cab, req: _door_action(cab, req, "close"),
    "place_parcel": lambda cab, req: {"parcels": _door(cab, req).place_parcel()},
    "remove_parcel": lambda cab, req: {"parcels": _door(cab, req).remove_parcel()},
    "set_temperature": _op_set_temperature,
    "fault_set": _op_fault_set,
    "fault_clear": _op_fault_clear,
    "faults": lambda cab, req: {"faults": [f.as_dict() for f in cab.faults.active()]},
    "truth": _op_truth,
    "stats": lambda cab, req: {name: cab.stats(name).as_dict() for name in cab.buses},
    "scan": _op_scan,
    "lane": lambda cab, req: cab.lane_state(),
    **{op: _lane_fact(op) for op in LANE_OPS},
}


def handle_request(cab: SimCabinet, line: str | bytes) -> dict[str, Any]:
    """Carry out one request line; return the reply object. Never raises."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": {"code": "bad_json", "message": str(exc)}}
    if not isinstance(req, dict):
        return {
            "ok": False,
            "error": {"code": "bad_request", "message": "a request is a JSON object"},
        }
    reply: dict[str, Any] = {}
    if "id" in req:
        reply["id"] = req["id"]
    op = req.get("op")
    handler = OPS.get(op) if isinstance(op, str) else None
    if handler is None:
        reply.update(
            ok=False, error={"code": "unknown_op", "message": f"unknown op {op!r}", "field": "op"}
        )
        return reply
    try:
        result = handler(cab, req)
    except SimError as exc:
        reply.update(ok=False, error=exc.as_dict())
        return reply
    except (TypeError, ValueError) as exc:
        reply.update(ok=False, error={"code": "invalid_request", "message": str(exc)})
        return reply
    reply.update(ok=True, result=result if result is not None else {})
    return reply


class ControlServer(LoopbackServer):
    """Serves :func:`handle_request` on ``127.0.0.1:port`` (0: any free port)."""

    def __init__(self, cab: SimCabinet, *, port: int = 0) -> None:
        super().__init__(port=port, limit=MAX_LINE)
        self.cab = cab

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
            except ValueError:  # longer than MAX_LINE
                reply: dict[str, Any] = {
                    "ok": False,
                    "error": {"code": "bad_request", "message": "line too long"},
                }
                writer.write(json.dumps(reply).encode() + b"\n")
                return
            if not line:
                return
            if not line.strip():
                continue
            reply = handle_request(self.cab, line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()


def send_command(
    port: int, request: dict[str, Any], *, host: str = "127.0.0.1", timeout: float = 5.0
) -> dict[str, Any]:
    """Send one request to a running simulator's control channel; return the reply.
    Blocking (for the CLI and for tests in other processes)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks: list[bytes] = []
        total = 0
        while total < MAX_LINE * 64:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if chunk.endswith(b"\n"):
                break
    data = b"".join(chunks)
    if not data:
        raise ConnectionError(f"the simulator on port {port} closed the connection without a reply")
    reply: dict[str, Any] = json.loads(data)
    return reply
