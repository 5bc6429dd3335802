"""How ``lockerctl`` shows the cabinet's MQTT traffic: one readable line per message,
and tables for ``status`` and ``state``.

Pure formatting over plain payload dicts (what :class:`~controller.dispatch.Received`
carries), so it is tested without a broker and shared by ``demo``, ``watch``, ``status``
and ``cmd``. Nothing here talks to the network.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from controller.dispatch import Received

__all__ = [
    "LAYOUT_WIDTH",
    "StateDigest",
    "TrafficPrinter",
    "describe_command",
    "describe_event",
    "describe_reply",
    "describe_status",
    "describe_telemetry",
    "layout_width",
    "show",
    "state_table",
    "status_table",
]

_STATE_STYLE = {
    "free": "green", "assigned": "cyan", "loaded": "bold blue", "expired": "yellow",
    "blocked": "magenta", "fault": "bold red",
}
_EVENT_STYLE = {
    "door_opened": "yellow", "door_closed": "yellow", "compartment_loaded": "bold blue",
    "compartment_collected": "bold green", "compartment_freed": "green",
    "compartment_assigned": "cyan", "open_not_detected": "bold red",
    "alarm_raised": "bold red", "alarm_cleared": "green", "unlock_pulse_failed": "bold red",
}
# Fields of an event's data not worth a line of a technician's screen.
_QUIET_FIELDS = {"expires_at"}


def _short(value: Any, limit: int | None = 40) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) \
        else str(value)
    if isinstance(value, dict):
        inner = 16 if limit is not None else None
        text = "{" + ", ".join(f"{k}: {_short(v, inner)}" for k, v in value.items()) + "}"
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _fields(data: Mapping[str, Any], limit: int | None = 90) -> str:
    """``k=v k=v``; cut to ``limit`` characters for a terminal, whole with ``None``."""
    value_limit = 40 if limit is not None else None
    parts = [f"{k}={_short(v, value_limit)}" for k, v in data.items()
             if k not in _QUIET_FIELDS]
    text = " ".join(parts)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def describe_event(payload: Mapping[str, Any], *, full: bool = False) -> Text:
    """``#7 door_opened A01 after_pulse_s=0.063 authorised=True``."""
    kind = str(payload.get("kind", "?"))
    line = Text()
    line.append(f"#{payload.get('seq', '?')} ", style="bold")
    line.append(kind, style=_EVENT_STYLE.get(kind, ""))
    if payload.get("compartment"):
        line.append(f" {payload['compartment']}", style="bold")
    data = payload.get("data")
    if isinstance(data, dict) and data:
        line.append(" " + _fields(data, None if full else 90), style="dim")
    return line


def describe_status(payload: Mapping[str, Any]) -> Text:
    """``online boot 4b7c9e2a version 0.1.0 at 2026-11-22T02:54:18Z``.

    The status's clock is that of the moment it was sent (for the Last Will, of the
    connection), so no uptime is shown from it."""
    state = str(payload.get("state", "?"))
    line = Text(state, style="bold green" if state == "online" else "bold red")
    boot = str(payload.get("boot_id", ""))
    line.append(f" boot {boot[:8]} version {payload.get('version', '?')}")
    if payload.get("at"):
        line.append(f" at {payload['at']}", style="dim")
    return line


def describe_reply(payload: Mapping[str, Any], *, full: bool = False) -> Text:
    """``c-1a2b ok compartment=A01 …`` or ``c-1a2b REFUSED unauthenticated: …``."""
    line = Text(f"{payload.get('id')} ")
    if payload.get("ok"):
        line.append("ok", style="bold green")
        result = payload.get("result")
        if isinstance(result, dict):
            if "compartments" in result:  # a State (get_state)
                line.append(" " + _state_counts(result), style="dim")
            elif result:
                line.append(" " + _fields(result, None if full else 100), style="dim")
    else:
        error = payload.get("error") or {}
        line.append("REFUSED ", style="bold red")
        line.append(str(error.get("code", "?")), style="red")
        line.append(f": {error.get('message', '')}")
        if error.get("field"):
            line.append(f" (field {error['field']})", style="dim")
    return line


def describe_command(command: Mapping[str, Any], *, signed: bool, full: bool = False) -> Text:
    """``c-1a2b open compartment=A01 reason=deposit [signed]``."""
    line = Text(f"{command.get('id')} ")
    line.append(str(command.get("type")), style="bold")
    args = command.get("args")
    if isinstance(args, dict) and args:
        line.append(" " + _fields(args, None if full else 90))
    line.append(" [signed]" if signed else " [unsigned]", style="dim")
    return line


def describe_telemetry(payload: Mapping[str, Any]) -> Text:
    """``up 12.0 s, outbox 0, rs485-0 312 tx/0 err, chilled 3.0 °C, mqtt up``."""
    parts = [f"up {float(payload.get('uptime_s', 0)):.1f} s",
             f"outbox {payload.get('outbox_depth', '?')}"]
    for bus in payload.get("buses") or []:
        if isinstance(bus, dict):
            parts.append(f"{bus.get('name')} {bus.get('transactions', 0)} tx/"
                         f"{bus.get('errors', 0)} err")
    temps = payload.get("temperatures") or {}
    for zone, value in temps.items():
        parts.append(f"{zone} {value:.1f} °C" if isinstance(value, int | float)
                     else f"{zone} ?")
    mqtt = payload.get("mqtt")
    if isinstance(mqtt, dict):
        parts.append(f"mqtt {'up' if mqtt.get('connected') else 'down'}, "
                     f"{mqtt.get('reconnects', 0)} reconnects")
    return Text(", ".join(parts), style="dim")


def _state_counts(state: Mapping[str, Any]) -> str:
    counts: dict[str, int] = {}
    for c in state.get("compartments") or []:
        counts[c.get("state", "?")] = counts.get(c.get("state", "?"), 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    alarms = state.get("alarms") or []
    return f"{len(state.get('compartments') or [])} compartments: {text}" + (
        f"; {len(alarms)} alarm(s)" if alarms else "")


def _compartment_line(c: Mapping[str, Any]) -> str:
    signals = [f"{name} {c[name]}" for name in ("door", "latch", "occupancy") if c.get(name)]
    order = f" order {c['order_id']}" if c.get("order_id") else ""
    return f"{c.get('id')} {c.get('state')}{order} ({', '.join(signals)})"


class StateDigest:
    """Summarises successive ``state`` snapshots as what changed since the previous one."""

    def __init__(self) -> None:
        self.previous: dict[str, dict[str, Any]] | None = None
        self.last: Mapping[str, Any] | None = None

    def describe(self, payload: Mapping[str, Any]) -> Text:
        compartments = {str(c.get("id")): dict(c) for c in payload.get("compartments") or []}
        line = Text(f"rev {payload.get('revision', '?')}: ", style="bold")
        if self.previous is None:
            line.append(_state_counts(payload))
            busy = [c for c in compartments.values() if c.get("state") != "free"]
            if busy:
                line.append("; " + "; ".join(_compartment_line(c) for c in busy), style="dim")
        else:
            changes = [_compartment_line(c) for cid, c in compartments.items()
                       if self.previous.get(cid) != c]
            line.append("; ".join(changes) if changes else "no compartment changed")
        alarms = payload.get("alarms") or []
        if alarms:
            line.append("; alarms: " + ", ".join(
                f"{a.get('kind')} {a.get('compartment') or a.get('board') or a.get('zone') or ''}"
                .strip() for a in alarms), style="bold red")
        self.previous = compartments
        self.last = payload
        return line


#: The width of rules, panels and tables when the output is not a terminal (a file, a
#: pipe): the console there is as wide as a data line needs (never wrapped or cut), and a
#: rule takes the whole width of its console.
LAYOUT_WIDTH = 100


def layout_width(console: Console) -> int:
    """The width to lay out rules, panels and tables in: the terminal's, or at most
    :data:`LAYOUT_WIDTH` into a file or a pipe."""
    return console.width if console.is_terminal else min(console.width, LAYOUT_WIDTH)


def show(console: Console, renderable: Any) -> None:
    """Print a rule, a panel or a table at :func:`layout_width` (a data line is printed
    as it is, never wrapped into a file)."""
    console.print(renderable, width=layout_width(console))


class TrafficPrinter:
    """The ``on_message`` callback of a :class:`DispatchClient`: prints each message as one
    line, ``+1.23s channel  description``. ``full``: never cut a line short (for output
    that is not a terminal)."""

    def __init__(self, console: Console, *, started: float | None = None,
                 show_retained: bool = True, full: bool = False) -> None:
        self.console = console
        self.full = full
        self.started = time.monotonic() if started is None else started
        self.digest = StateDigest()
        self.show_retained = show_retained
        self.counts: dict[str, int] = {}

    def _prefix(self, at: float, tag: str, style: str) -> Text:
        line = Text(f"+{at - self.started:6.2f}s ", style="dim")
        line.append(f"{tag:<10}", style=style)
        return line

    def note(self, tag: str, text: Text | str, style: str = "bold") -> None:
        line = self._prefix(time.monotonic(), tag, style)
        line.append_text(text if isinstance(text, Text) else Text(text))
        self.console.print(line, overflow="fold")

    def __call__(self, message: Received) -> None:
        self.counts[message.channel] = self.counts.get(message.channel, 0) + 1
        payload = message.payload
        if message.channel == "events":
            body, style = describe_event(payload, full=self.full), "yellow"
        elif message.channel == "state":
            body, style = self.digest.describe(payload), "blue"
        elif message.channel == "status":
            body, style = describe_status(payload), "green"
        elif message.channel == "reply":
            body, style = describe_reply(payload, full=self.full), "magenta"
        elif message.channel == "telemetry":
            body, style = describe_telemetry(payload), "dim"
        else:
            return
        if message.retained:
            if not self.show_retained:
                return
            body = Text("(retained) ", style="dim") + body
        tag = {"events": "event", "reply": "reply  <-"}.get(message.channel, message.channel)
        line = self._prefix(message.at, tag, style)
        line.append_text(body)
        self.console.print(line, overflow="fold")


def status_table(status: Mapping[str, Any], state: Mapping[str, Any] | None) -> Table:
    """The cabinet at a glance: presence, boot, version, clock, revision, alarms."""
    table = Table(title=f"cabinet {status.get('cabinet', '?')}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("status", describe_status(status))
    table.add_row("boot id", str(status.get("boot_id", "")))
    table.add_row("since", str(status.get("at", "")))
    clock = (state or {}).get("cabinet_clock")
    if isinstance(clock, dict) and isinstance(clock.get("uptime_ms"), int):
        table.add_row("uptime", f"{clock['uptime_ms'] / 1000:.1f} s at state revision "
                      f"{(state or {}).get('revision')}")
    if status.get("config_hash"):
        table.add_row("config hash", str(status["config_hash"])[:16])
    if state is not None:
        table.add_row("state revision", f"{state.get('revision')} at {state.get('at')}")
        table.add_row("compartments", _state_counts(state))
        table.add_row("outbox depth", str(state.get("outbox_depth", 0)))
        boards = state.get("boards") or []
        table.add_row("boards", ", ".join(
            f"{b.get('name')} {'online' if b.get('online') else 'OFFLINE'}" for b in boards)
            or "-")
        for zone in state.get("zones") or []:
            temp = zone.get("temperature_c")
            shown = f"{temp:.1f} °C" if isinstance(temp, int | float) else "unknown"
            limits = (f" (range {zone.get('min_c')}..{zone.get('max_c')})"
                      if zone.get("min_c") is not None else "")
            flag = " OUT OF RANGE" if zone.get("in_range") is False else ""
            table.add_row(f"zone {zone.get('name')}", f"{zone.get('kind')}: {shown}{limits}{flag}")
        alarms = state.get("alarms") or []
        table.add_row("alarms", Text(", ".join(
            f"{a.get('kind')} {a.get('compartment') or a.get('board') or a.get('zone') or ''}"
            f" since {a.get('since')}" for a in alarms) or "none",
            style="bold red" if alarms else "green"))
    return table


def state_table(state: Mapping[str, Any]) -> Table:
    """One row per compartment: state, order, door, latch, occupancy."""
    table = Table(title=f"compartments (state revision {state.get('revision')})")
    for column in ("id", "size", "zone", "pool", "state", "order", "door", "latch",
                   "occupancy"):
        table.add_column(column)
    for c in state.get("compartments") or []:
        st = str(c.get("state", "?"))
        table.add_row(
            str(c.get("id")), str(c.get("size", "")), str(c.get("zone", "")),
            str(c.get("pool", "")), Text(st, style=_STATE_STYLE.get(st, "")),
            str(c.get("order_id") or ""), _signal(c.get("door"), "open"),
            _signal(c.get("latch"), "released"), _signal(c.get("occupancy"), "occupied"),
        )
    return table


def _signal(value: Any, active: str) -> Text:
    if value is None:
        return Text("-", style="dim")
    style = "bold red" if value == "unknown" else "yellow" if value == active else ""
    return Text(str(value), style=style)
