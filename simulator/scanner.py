"""A simulated serial barcode scanner on a pty pair.

The production :class:`drivers.scanner.CodeScanner` opens :attr:`SimScanner.serial_path`
with pyserial, exactly as it opens ``/dev/ttyScanner`` on a cabinet; :meth:`SimScanner.scan`
writes the code and its suffix on the pty master, as the scanner's firmware would on the
USB CDC-ACM port.

Unplugging is simulated too: :meth:`SimScanner.unplug` closes the pty (the reader's next
read fails with ``EIO``, as with a vanished ``/dev/ttyACM0``) and removes the stable
``link``; :meth:`SimScanner.replug` makes a fresh pty and points ``link`` at it, as udev
does. Use a ``link`` whenever a test unplugs: the pts number changes across replugs.

The slave side is put in raw mode at creation, so a CR is delivered as CR (a cooked pty
would turn it into LF) even before the reader configures the port.
"""

from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["SimScanner"]


class SimScanner:
    """A scanner that "scans" whatever the test says, over a real pty."""

    def __init__(self, link: str | os.PathLike[str] | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self._master: int | None = None
        self._slave: int | None = None
        self._pts = ""
        self.scans = 0
        self.replug()

    @property
    def serial_path(self) -> str:
        """What the reader opens: the stable link if any, else the pts device."""
        return str(self.link) if self.link is not None else self._pts

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def scan(self, code: str, terminator: bytes = b"\r") -> None:
        """Send ``code`` followed by ``terminator`` (CR by default, like most scanners)."""
        self.send_raw(code.encode("utf-8") + terminator)
        self.scans += 1

    def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes (garbage, partial lines). Raises ``BlockingIOError`` if the
        reader stopped reading and the pty buffer is full, rather than hanging the test."""
        if self._master is None:
            raise OSError("scanner is unplugged")
        view = memoryview(data)
        while view:  # bounded: each write consumes >= 1 byte or raises
            written = os.write(self._master, view)
            view = view[written:]

    def unplug(self) -> None:
        """Close the pty and remove the link. Safe when already unplugged."""
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def replug(self) -> None:
        """Make a fresh pty (and point the link at it). Unplugs first if needed."""
        self.unplug()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._pts = os.ttyname(slave)
        if self.link is not None:
            self.link.symlink_to(self._pts)

    def close(self) -> None:
        """Unplug for good. Safe to call twice."""
        self.unplug()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
