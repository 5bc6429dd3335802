"""The one-line health summary systemd shows as the service's ``Status:``.

``systemctl status locker-controller`` must tell the truth at a glance: not "running"
while a board is dark, the broker is gone or alarms are active. The daemon sends this
line as ``STATUS=`` from its watchdog loop whenever it changes. Pure: it only formats
what it is given.

    ok: 4/4 boards online, broker connected, no alarm
    DEGRADED: board locks-b offline (3/4 online); broker down (running offline, events
      kept); 2 alarms: board_offline locks-b, door_ajar A03        (one line in fact)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["HEALTH_EVERY_S", "MAX_STATUS_CHARS", "HealthStatus", "health_summary"]

HEALTH_EVERY_S = 5.0
"""How often the status is recomputed when no watchdog interval sets the pace."""

MAX_STATUS_CHARS = 240
"""systemd shows the status on one line; past this the alarm list is cut (with a count)."""

# "degraded" is one failed poll with the last readings still standing: online, as in
# state.boards; it turns offline after unknown_after_failed_polls.
_ONLINE = ("online", "degraded")


def health_summary(boards: Mapping[str, str], broker_connected: bool,
                   alarms: Iterable[Mapping[str, Any]]) -> str:
    """``boards``: board name -> health (``online``, ``degraded``, ``offline``, ...);
    ``alarms``: the active alarms as in ``state.alarms`` (``kind`` and what it is about)."""
    alarm_list = list(alarms)
    down = sorted(name for name, health in boards.items() if health not in _ONLINE)
    up = len(boards) - len(down)
    problems: list[str] = []
    if down:
        problems.append(f"board{'s' if len(down) > 1 else ''} {', '.join(down)} offline "
                        f"({up}/{len(boards)} online)")
    if not broker_connected:
        problems.append("broker down (running offline, events kept)")
    if alarm_list:
        names = [" ".join(str(a[k]) for k in ("kind", "compartment", "board", "zone")
                          if a.get(k)) for a in alarm_list]
        problems.append(f"{len(alarm_list)} alarm{'s' if len(alarm_list) > 1 else ''}: "
                        + ", ".join(names))
    if not problems:
        return f"ok: {len(boards)}/{len(boards)} boards online, broker connected, no alarm"
    text = "DEGRADED: " + "; ".join(problems)
    if len(text) > MAX_STATUS_CHARS:
        text = text[: MAX_STATUS_CHARS - 12].rstrip(", ") + " ... (more)"
    return text


class HealthStatus:
    """Sends the summary through ``send`` (``Notifier.status``) only when it changed."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send = send
        self.shown = ""

    def show(self, boards: Mapping[str, str], broker_connected: bool,
             alarms: Iterable[Mapping[str, Any]]) -> str:
        text = health_summary(boards, broker_connected, alarms)
        if text != self.shown:
            self._send(text)
            self.shown = text
        return text
