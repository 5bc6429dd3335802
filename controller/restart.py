"""How the daemon restarts itself (after ``apply_config``) and how a stop is bounded.

- **Under systemd** (``INVOCATION_ID`` or ``NOTIFY_SOCKET`` in the environment) the daemon
  exits with :data:`EXIT_RESTART` (75, ``EX_TEMPFAIL``); the unit's ``Restart=always``
  starts it again ``RestartSec`` later, with a new boot id.
- **In a foreground run** (a terminal, a container without an init, a test rig) nobody
  would start it again: the daemon re-executes itself in place (same process id, same
  arguments, same terminal), and the new image starts from scratch with a new boot id.

A stop (SIGTERM, SIGINT or a restart) is bounded by a :class:`ShutdownDeadline`: a daemon
thread, armed when the stop begins, that ends the process if the graceful shutdown (tasks
stopped, outputs off, ``offline`` published, store closed) has not finished in time, even
when the event loop itself is stuck. It first writes every thread's stack to stderr (the
journal), so the cause can be found. A second SIGTERM/SIGINT ends the process at once the
same way.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Literal, NoReturn

__all__ = [
    "EXIT_RESTART",
    "EXIT_STOP_TIMEOUT",
    "RestartMode",
    "ShutdownDeadline",
    "restart_mode",
    "restart_now",
]

log = logging.getLogger("controller.restart")

#: Exit code of a restart requested under systemd (``EX_TEMPFAIL``).
EXIT_RESTART = 75
#: Exit code of a stop whose graceful shutdown did not finish in time.
EXIT_STOP_TIMEOUT = 70

RestartMode = Literal["exit", "exec"]


def restart_mode(env: Mapping[str, str] | None = None) -> RestartMode:
    """``"exit"`` under systemd (it restarts the unit), else ``"exec"`` (re-exec in place).
    ``LOCKER_RESTART`` = ``exit`` or ``exec`` forces one."""
    env = os.environ if env is None else env
    forced = env.get("LOCKER_RESTART", "").strip().lower()
    if forced in ("exit", "exec"):
        return forced  # type: ignore[return-value]
    return "exit" if env.get("INVOCATION_ID") or env.get("NOTIFY_SOCKET") else "exec"


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # on the way out, nothing more to do
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def restart_now(mode: RestartMode) -> NoReturn:
    """Restart the process now: exit with :data:`EXIT_RESTART` or re-execute in place.
    Safe from any thread (file descriptors are close-on-exec, as Python opens them)."""
    _flush()
    if mode == "exit":
        os._exit(EXIT_RESTART)
    argv = [sys.executable, *sys.orig_argv[1:]]
    try:
        os.execv(sys.executable, argv)
    except OSError:
        log.exception("re-exec failed; exiting for a supervisor to restart")
        _flush()
        os._exit(EXIT_RESTART)
    raise AssertionError("unreachable")  # pragma: no cover


class ShutdownDeadline:
    """Ends the process if a stop takes longer than ``seconds``. See the module docstring.

    ``on_expiry`` runs in the deadline's own thread and must not return (it exits or
    re-executes); the default ends the process with :data:`EXIT_STOP_TIMEOUT`.
    """

    def __init__(self, seconds: float, on_expiry: Callable[[], None] | None = None) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        self.seconds = seconds
        self._on_expiry = on_expiry or _exit_stop_timeout
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.expired = threading.Event()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self) -> None:
        """Start counting (idempotent: the first arming sets the deadline)."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.seconds, self.expire)
            self._timer.daemon = True  # never keeps the process alive by itself
            self._timer.name = "shutdown-deadline"
            self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def expire(self) -> None:
        """The deadline passed (or a second signal came): say where it hung, then end."""
        if self.expired.is_set():
            return
        self.expired.set()
        log.critical("shutdown did not finish within %.0f s; ending the process", self.seconds)
        _flush()
        try:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        except Exception:  # stderr may be gone
            pass
        self._on_expiry()


def _exit_stop_timeout() -> None:
    _flush()
    os._exit(EXIT_STOP_TIMEOUT)
