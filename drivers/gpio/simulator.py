"""GPIO backend that uses the lane I/O simulated by ``locker-sim`` in another process.

It is a client of the simulator's lane I/O server (protocol ``lane-io/1``, JSON lines on
loopback TCP, documented in :mod:`simulator.lane`; this module does not import the
simulator, it speaks the wire protocol). Lines are matched **by name**: the config's
``help_button`` is the simulator's ``help_button``; ``pin`` is ignored but must still be
unique, as on real hardware.

- At start: connect, check the ``hello`` greeting's protocol, ``subscribe``. The reply
  carries every input's level; from then on the server pushes every input change, in
  order, and the backend keeps a local copy. ``read()`` answers from that copy, which is
  exactly as fresh as the event stream (a real pin read is not fresher than its edges).
- Edges are pushed per change, bounce included, so the base class debounces them exactly
  as it would real contacts.
- ``set`` waits for the server's reply (``timeout_s``), so an output reported set is set.
- If the connection drops, every later read or write raises
  :class:`~drivers.errors.BusError`; the backend does not reconnect by itself (the daemon's
  supervisor restarts the lane I/O, as it would after a GPIO chip error).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.errors import BusClosed, BusError, ChannelError
from drivers.gpio.base import GpioBackend, InputSpec, Notify, OutputSpec

__all__ = ["PROTOCOL", "SimulatorGpio"]

_log = logging.getLogger(__name__)

PROTOCOL = "lane-io/1"
_MAX_LINE = 1 << 16


@dataclass(slots=True)
class _SimLine:
    name: str


class SimulatorGpio(GpioBackend):
    """GPIO lines served by a ``locker-sim`` lane I/O server on ``host:port``."""

    name = "simulator"

    def __init__(
        self,
        *,
        port: int,
        host: str = "127.0.0.1",
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._levels: dict[str, bool] = {}
        self._notify: dict[str, Notify] = {}
        self.input_names: frozenset[str] = frozenset()
        self.output_names: frozenset[str] = frozenset()
        self._lost: str | None = None

    @property
    def where(self) -> str:
        return f"lane-io://{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------

    async def _start(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, limit=_MAX_LINE
                )
                hello = json.loads(await self._reader.readline() or b"null")
        except (OSError, TimeoutError, ValueError) as exc:
            await self._stop()
            raise BusError(
                f"cannot reach the lane simulator at {self.where}: {exc}", bus=self.where
            ) from exc
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL:
            await self._stop()
            raise BusError(f"{self.where} does not speak {PROTOCOL}: {hello!r}", bus=self.where)
        self.input_names = frozenset(hello.get("inputs", ()))
        self.output_names = frozenset(hello.get("outputs", ()))
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        try:
            await self._request({"op": "subscribe"})
        except BaseException:
            await self._stop()
            raise

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None
        self._fail_pending(BusClosed(f"{self.where}: backend closed", bus=self.where))

    async def sync(self) -> None:
        """Return once every change the simulator sent before this call has been applied
        (a ``read`` round trip: the server answers after the events it already sent)."""
        await self.start()
        await self._request({"op": "read"})

    # -- hooks --------------------------------------------------------------------------

    async def _open_input(self, spec: InputSpec, notify: Notify) -> _SimLine:
        if spec.name not in self.input_names:
            raise ChannelError(
                f"the lane simulator has no input {spec.name!r} "
                f"(inputs: {', '.join(sorted(self.input_names))})",
                board=self.where,
                channel=spec.pin,
            )
        self._notify[spec.name] = notify
        return _SimLine(spec.name)

    async def _read(self, handle: _SimLine) -> bool:
        self._check_link()
        return self._levels.get(handle.name, False)

    async def _open_output(self, spec: OutputSpec, raw_initial: bool) -> _SimLine:
        if spec.name not in self.output_names:
            raise ChannelError(
                f"the lane simulator has no output {spec.name!r} "
                f"(outputs: {', '.join(sorted(self.output_names))})",
                board=self.where,
                channel=spec.pin,
            )
        line = _SimLine(spec.name)
        await self._write(line, raw_initial)
        return line

    async def _write(self, handle: _SimLine, raw_level: bool) -> None:
        await self._request({"op": "set", "line": handle.name, "level": int(raw_level)})

    async def _release(self, handle: _SimLine) -> None:
        self._notify.pop(handle.name, None)

    # -- wire ---------------------------------------------------------------------------

    def _check_link(self) -> None:
        if self._lost is not None:
            raise BusError(f"{self.where}: link lost ({self._lost})", bus=self.where)
        if self._writer is None:
            raise BusClosed(f"{self.where}: not connected", bus=self.where)

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        self._check_link()
        assert self._writer is not None
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(json.dumps({**message, "id": rid}).encode() + b"\n")
            async with asyncio.timeout(self.timeout_s):
                await self._writer.drain()
                reply = await future
        except TimeoutError as exc:
            raise BusError(f"{self.where}: no reply to {message['op']!r}", bus=self.where) from exc
        except ConnectionError as exc:
            raise BusError(f"{self.where}: {exc}", bus=self.where) from exc
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise BusError(
                f"{self.where} refused {message['op']!r}: "
                f"{error.get('code')}: {error.get('message')}",
                bus=self.where,
            )
        return reply

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "closed by the simulator"
        try:
            while True:
                raw = await self._reader.readline()
                if not raw:
                    break
                try:
                    message = json.loads(raw)
                except ValueError:
                    _log.warning("%s: ignoring a line that is not JSON", self.where)
                    continue
                if isinstance(message, dict):
                    self._dispatch(message)
        except (ConnectionError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
        self._lost = reason
        _log.warning("%s: lane simulator link lost: %s", self.where, reason)
        self._fail_pending(BusError(f"{self.where}: link lost ({reason})", bus=self.where))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("event") == "input":
            name, level = message.get("line"), bool(message.get("level"))
            if isinstance(name, str):
                self._levels[name] = level
                notify = self._notify.get(name)
                if notify is not None:
                    notify(level)
            return
        inputs = message.get("inputs")
        if isinstance(inputs, dict):  # a read/subscribe snapshot, in stream order
            self._levels.update({str(k): bool(v) for k, v in inputs.items()})
        rid = message.get("id")
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is not None and not future.done():
            future.set_result(message)

    def _fail_pending(self, exc: BusError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
