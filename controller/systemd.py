"""systemd integration: ``Type=notify`` readiness and the watchdog, without a dependency.

The daemon sends ``READY=1`` only when the store, the boards and the broker link are up,
and ``WATCHDOG=1`` from the main loop only while polls are fresh: a wedged poller stops
the pings and systemd restarts the service. Outside systemd (no ``NOTIFY_SOCKET``) every
call is a no-op.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """Speaks the sd_notify protocol over the datagram socket systemd gives us."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        enabled = usec is not None and (pid is None or pid == str(os.getpid()))
        #: Seconds between watchdog pings: half the interval systemd enforces.
        self.watchdog_interval: float | None = int(usec) / 2e6 if enabled and usec else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        address = self._address
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.sendto(message.encode(), address)
        except OSError:
            # systemd went away (shutdown): nothing useful to do with the error.
            pass

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
