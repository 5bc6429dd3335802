"""The simulated lane: what the cabinet's GPIO lines are wired to, served over loopback TCP.

The world
=========
:class:`LaneWorld` is pure state with an injected clock and a ground-truth log. It knows
the *facts* (a vehicle is in the bay, the help button is pressed, the cabinet door panel is
open, the UPS lost mains) and the *wiring* that turns facts into electrical levels, exactly
as on the real cabinet:

================= ====== ========== ===================================================
line              dir    active_low why
================= ====== ========== ===================================================
vehicle_present   input  yes        loop detector relay, NO contact to ground, pull-up
help_button       input  yes        pushbutton to ground, pull-up
tamper            input  no         NC switch to ground, pull-up: opening reads high
mains_fail        input  yes        UPS "on battery" relay, NO contact to ground
light_red         output no         lamp relays, energised = lit; red = fault
light_green       output no         green = idle (lane free)
light_amber       output no         amber = busy (a collection in progress)
buzzer            output no         energised = sounding
================= ====== ========== ===================================================

The daemon's config must declare the same polarity (``active_low``) for each line, as it
would have to for the real wiring. :meth:`LaneWorld.lane_light` reads the lamps back as
``"idle"``, ``"busy"``, ``"fault"``, ``"off"`` or ``"mixed"``.

The protocol (``lane-io/1``)
============================
JSON lines over TCP on loopback: UTF-8, one JSON object per ``\\n``-terminated line, at most
4096 bytes per line. Levels on the wire are *raw* (``0``/``1``, the electrical level the Pi
pin would see or drive); facts are *active* (``true``/``false``).

On connect the server sends::

    {"event": "hello", "protocol": "lane-io/1", "inputs": [...], "outputs": [...]}

Requests carry ``"op"`` and an optional ``"id"`` (string or integer, echoed in the reply):

``{"op": "read"}``
    ``{"id": …, "ok": true, "inputs": {"help_button": 1, …}, "outputs": {"buzzer": 0, …},
    "seq": 12}``; ``seq`` is the number of changes the world has logged so far.
``{"op": "subscribe", "outputs": false}``
    Same reply as ``read``; from then on the server pushes every input change (and every
    output change if ``"outputs": true``), in the world's order, after the reply::

        {"event": "input", "line": "help_button", "level": 0, "active": true,
         "seq": 13, "at": 1234.5}

``{"op": "set", "line": "buzzer", "level": 1}``
    Drive an output (the daemon's side). ``{"id": …, "ok": true}``.
``{"op": "inject", "line": "vehicle_present", "active": true, "bounce": 0}``
    Change an input fact (the simulator's side: a scenario, a test, a technician). With
    ``bounce`` = n > 0 the contact makes n false contacts before it settles, as a contact
    does (``2 * bounce + 1`` level changes). ``{"id": …, "ok": true}``.

A request that cannot be honoured changes nothing and gets::

    {"id": …, "ok": false, "error": {"code": "unknown_line", "message": "…", "field": "line"}}

with ``code`` one of ``malformed_json`` (``id`` is null), ``bad_request`` (not an object,
bad ``id``), ``unknown_op``, ``unknown_line``, ``not_an_output``, ``not_an_input``,
``bad_value`` and ``line_too_long`` (after which the server closes the connection, since it
cannot find the next line boundary reliably). A client that stops reading and lets more
than 1 MiB of events pile up is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "DEFAULT_INPUTS",
    "DEFAULT_OUTPUTS",
    "MAX_LINE_BYTES",
    "PROTOCOL",
    "LaneChange",
    "LaneIOServer",
    "LaneRequestError",
    "LaneWorld",
]

_log = logging.getLogger(__name__)

PROTOCOL = "lane-io/1"
MAX_LINE_BYTES = 4096
MAX_BOUNCE = 50
_MAX_CLIENT_BACKLOG = 1 << 20

#: Input line -> active_low (see the wiring table in the module docstring).
DEFAULT_INPUTS: Mapping[str, bool] = {
    "vehicle_present": True,
    "help_button": True,
    "tamper": False,
    "mains_fail": True,
}
#: Output line -> active_low.
DEFAULT_OUTPUTS: Mapping[str, bool] = {
    "light_red": False,
    "light_green": False,
    "light_amber": False,
    "buzzer": False,
}


class LaneRequestError(ValueError):
    """A request the lane cannot honour; ``code`` and ``field`` go on the wire as is."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": str(self)}
        if self.field is not None:
            error["field"] = self.field
        return error


@dataclass(frozen=True, slots=True)
class LaneChange:
    """One change of one line, as the ground-truth log records it."""

    seq: int
    at: float
    kind: Literal["input", "output"]
    line: str
    level: bool
    active: bool


LaneListener = Callable[[LaneChange], None]


class LaneWorld:
    """The lane's lines: facts, wiring and the log of every change. No I/O, no asyncio."""

    def __init__(
        self,
        *,
        inputs: Mapping[str, bool] = DEFAULT_INPUTS,
        outputs: Mapping[str, bool] = DEFAULT_OUTPUTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.input_wiring = dict(inputs)
        self.output_wiring = dict(outputs)
        overlap = set(self.input_wiring) & set(self.output_wiring)
        if overlap:
            raise ValueError(f"lines both input and output: {sorted(overlap)}")
        # Every fact starts inactive: empty bay, button released, panel closed, mains on.
        self._inputs = {name: low for name, low in self.input_wiring.items()}
        self._outputs = {name: low for name, low in self.output_wiring.items()}
        self.log: list[LaneChange] = []
        self._listeners: list[LaneListener] = []

    # -- simulator side: facts ----------------------------------------------------------

    def set_input(self, line: str, active: bool, *, bounce: int = 0) -> None:
        """Make the fact behind ``line`` true or false, after ``bounce`` false contacts."""
        self._check_input(line)
        if isinstance(bounce, bool) or not isinstance(bounce, int) or not 0 <= bounce <= MAX_BOUNCE:
            raise LaneRequestError("bad_value", f"bounce must be 0..{MAX_BOUNCE}", "bounce")
        final = bool(active) != self.input_wiring[line]
        for _ in range(bounce):  # each bounce: a false contact, then back
            self._set_input_level(line, final)
            self._set_input_level(line, not final)
        self._set_input_level(line, final)

    def vehicle_arrives(self) -> None:
        self.set_input("vehicle_present", True)

    def vehicle_leaves(self) -> None:
        self.set_input("vehicle_present", False)

    def press_button(self, *, bounce: int = 0) -> None:
        self.set_input("help_button", True, bounce=bounce)

    def release_button(self, *, bounce: int = 0) -> None:
        self.set_input("help_button", False, bounce=bounce)

    def open_tamper(self) -> None:
        self.set_input("tamper", True)

    def close_tamper(self) -> None:
        self.set_input("tamper", False)

    def lose_mains(self) -> None:
        self.set_input("mains_fail", True)

    def restore_mains(self) -> None:
        self.set_input("mains_fail", False)

    # -- daemon side: electrical --------------------------------------------------------

    def drive_output(self, line: str, level: bool) -> None:
        """The daemon drives ``line`` at a raw level."""
        if line in self.input_wiring:
            raise LaneRequestError("not_an_output", f"{line!r} is an input", "line")
        if line not in self.output_wiring:
            raise LaneRequestError("unknown_line", f"no output line {line!r}", "line")
        if self._outputs[line] == bool(level):
            return
        self._outputs[line] = bool(level)
        self._record("output", line, bool(level), bool(level) != self.output_wiring[line])

    def input_level(self, line: str) -> bool:
        self._check_input(line)
        return self._inputs[line]

    def input_active(self, line: str) -> bool:
        return self.input_level(line) != self.input_wiring[line]

    def output_level(self, line: str) -> bool:
        if line not in self.output_wiring:
            raise LaneRequestError("unknown_line", f"no output line {line!r}", "line")
        return self._outputs[line]

    def output_active(self, line: str) -> bool:
        return self.output_level(line) != self.output_wiring[line]

    def input_levels(self) -> dict[str, bool]:
        return dict(self._inputs)

    def output_levels(self) -> dict[str, bool]:
        return dict(self._outputs)

    def lane_light(self) -> str:
        """``idle`` (green), ``busy`` (amber), ``fault`` (red), ``off`` or ``mixed``."""
        lit = {
            colour
            for colour in ("red", "green", "amber")
            if f"light_{colour}" in self.output_wiring and self.output_active(f"light_{colour}")
        }
        if not lit:
            return "off"
        if len(lit) > 1:
            return "mixed"
        return {"green": "idle", "amber": "busy", "red": "fault"}[lit.pop()]

    @property
    def buzzer_on(self) -> bool:
        return "buzzer" in self.output_wiring and self.output_active("buzzer")

    # -- observation --------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return len(self.log)

    def changes(self, *, kind: str | None = None, line: str | None = None) -> list[LaneChange]:
        """The log, filtered."""
        return [
            c
            for c in self.log
            if (kind is None or c.kind == kind) and (line is None or c.line == line)
        ]

    def subscribe(self, listener: LaneListener) -> Callable[[], None]:
        """Call ``listener(change)`` synchronously after every change; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- internal -----------------------------------------------------------------------

    def _check_input(self, line: str) -> None:
        if line in self.output_wiring:
            raise LaneRequestError("not_an_input", f"{line!r} is an output", "line")
        if line not in self.input_wiring:
            raise LaneRequestError("unknown_line", f"no input line {line!r}", "line")

    def _set_input_level(self, line: str, level: bool) -> None:
        if self._inputs[line] == level:
            return
        self._inputs[line] = level
        self._record("input", line, level, level != self.input_wiring[line])

    def _record(
        self, kind: Literal["input", "output"], line: str, level: bool, active: bool
    ) -> None:
        change = LaneChange(len(self.log) + 1, self._clock(), kind, line, level, active)
        self.log.append(change)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                _log.exception("lane listener failed")


class LaneIOServer:
    """Serves a :class:`LaneWorld` over the ``lane-io/1`` protocol on loopback TCP."""

    def __init__(self, world: LaneWorld, host: str = "127.0.0.1", port: int = 0) -> None:
        self.world = world
        self.host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._closed = False

    @property
    def port(self) -> int:
        """The TCP port actually bound (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("LaneIOServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self._requested_port, limit=MAX_LINE_BYTES
        )

    async def close(self) -> None:
        """Stop listening and drop every client. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            client.close()
        for client in list(self._clients):
            await client.finished()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(self.world, reader, writer)
        self._clients.add(client)
        try:
            await client.run()
        finally:
            self._clients.discard(client)


class _Client:
    def __init__(
        self, world: LaneWorld, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.world = world
        self.reader = reader
        self.writer = writer
        self._unsubscribe: Callable[[], None] | None = None
        self._with_outputs = False
        self._task: asyncio.Task[Any] | None = asyncio.current_task()
        self._done = asyncio.Event()

    async def run(self) -> None:
        try:
            self.send(
                {
                    "event": "hello",
                    "protocol": PROTOCOL,
                    "inputs": sorted(self.world.input_wiring),
                    "outputs": sorted(self.world.output_wiring),
                }
            )
            while True:
                try:
                    raw = await self.reader.readline()
                except ValueError:  # longer than the stream limit
                    self.send(
                        {
                            "id": None,
                            "ok": False,
                            "error": {
                                "code": "line_too_long",
                                "message": f"request longer than {MAX_LINE_BYTES} bytes",
                            },
                        }
                    )
                    break
                if not raw:
                    break
                if raw.strip():
                    self.send(self.handle(raw))
                await self.writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
            # Closing the transport is enough; awaiting wait_closed here could be cancelled
            # by close() and leave ``finished()`` waiting forever.
            self.writer.close()
            self._done.set()

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def finished(self) -> None:
        await self._done.wait()

    def send(self, message: Mapping[str, Any]) -> None:
        if self.writer.is_closing():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > _MAX_CLIENT_BACKLOG:
            _log.warning("lane client too slow; disconnecting it")
            self.close()
            return
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def handle(self, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(None, LaneRequestError("malformed_json", f"not JSON: {exc}"))
        if not isinstance(request, dict):
            return _error(None, LaneRequestError("bad_request", "a request is a JSON object"))
        rid = request.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)):
            return _error(
                None, LaneRequestError("bad_request", "id must be a string or integer", "id")
            )
        try:
            result = self.dispatch(request)
        except LaneRequestError as exc:
            return _error(rid, exc)
        return {"id": rid, "ok": True, **result}

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "read":
            return self.snapshot()
        if op == "subscribe":
            outputs = request.get("outputs", False)
            if not isinstance(outputs, bool):
                raise LaneRequestError("bad_value", "outputs must be true or false", "outputs")
            self._with_outputs = outputs
            if self._unsubscribe is None:
                self._unsubscribe = self.world.subscribe(self.on_change)
            return self.snapshot()
        if op == "set":
            line = _str_field(request, "line")
            level = request.get("level")
            if isinstance(level, bool) or not isinstance(level, int) or level not in (0, 1):
                raise LaneRequestError("bad_value", "level must be 0 or 1", "level")
            self.world.drive_output(line, bool(level))
            return {}
        if op == "inject":
            line = _str_field(request, "line")
            active = request.get("active")
            if not isinstance(active, bool):
                raise LaneRequestError("bad_value", "active must be true or false", "active")
            self.world.set_input(line, active, bounce=request.get("bounce", 0))
            return {}
        raise LaneRequestError("unknown_op", f"unknown op {op!r}", "op")

    def snapshot(self) -> dict[str, Any]:
        return {
            "inputs": {k: int(v) for k, v in self.world.input_levels().items()},
            "outputs": {k: int(v) for k, v in self.world.output_levels().items()},
            "seq": self.world.seq,
        }

    def on_change(self, change: LaneChange) -> None:
        if change.kind == "output" and not self._with_outputs:
            return
        self.send(
            {
                "event": change.kind,
                "line": change.line,
                "level": int(change.level),
                "active": change.active,
                "seq": change.seq,
                "at": change.at,
            }
        )


def _str_field(request: Mapping[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str):
        raise LaneRequestError("bad_value", f"{name} must be a string", name)
    return value


def _error(rid: Any, exc: LaneRequestError) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": exc.as_json()}
