"""Stand-ins for the RPi.GPIO and gpiod 2.x modules, injected through the backends'
``importer`` parameter. They model what the backends rely on, including the awkward
parts: RPi.GPIO calls back from its own thread and its ``bouncetime`` swallows edges;
gpiod hands out a pollable file descriptor per request and debounces in the kernel."""

from __future__ import annotations

import enum
import errno
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType, SimpleNamespace
from typing import Any, cast


def importer_for(**modules: object) -> Callable[[str], ModuleType]:
    """An ``importer`` that returns the given fakes and fails like a missing package
    for anything else."""

    def importer(name: str) -> ModuleType:
        key = name.replace(".", "_")
        if key in modules:
            return cast(ModuleType, modules[key])
        raise ModuleNotFoundError(f"No module named {name!r}")

    return importer


# -- RPi.GPIO -------------------------------------------------------------------------


class FakeRPiGPIO:
    BOARD, BCM = 10, 11
    OUT, IN = 0, 1
    LOW, HIGH = 0, 1
    PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22
    RISING, FALLING, BOTH = 31, 32, 33

    def __init__(self) -> None:
        self.mode: int | None = None
        self.warnings = True
        self.levels: dict[int, int] = {}
        self.setups: dict[int, tuple[int, int]] = {}  # pin -> (direction, pull)
        self.detect: dict[int, tuple[Callable[[int], None], int | None]] = {}
        self.last_accepted: dict[int, float] = {}
        self.calls: list[tuple[str, int]] = []
        self.callback_threads: set[int] = set()
        self._queue: queue.Queue[tuple[Callable[[int], None], int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._dispatch, name="fake-rpigpio", daemon=True)
        self._thread.start()

    # module API
    def getmode(self) -> int | None:
        return self.mode

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setwarnings(self, flag: bool) -> None:
        self.warnings = flag

    def setup(self, pin: int, direction: int, pull_up_down: int = 20, initial: int = -1) -> None:
        if self.mode is None:
            raise RuntimeError("Please set pin numbering mode using GPIO.setmode")
        self.setups[pin] = (direction, pull_up_down)
        self.calls.append(("setup", pin))
        if direction == self.OUT:
            self.levels[pin] = 0 if initial == -1 else initial
        elif pin not in self.levels:
            self.levels[pin] = 1 if pull_up_down == self.PUD_UP else 0

    def input(self, pin: int) -> int:
        if pin not in self.setups:
            raise RuntimeError("You must setup() the GPIO channel first")
        return self.levels[pin]

    def output(self, pin: int, value: int) -> None:
        if self.setups.get(pin, (None,))[0] != self.OUT:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        self.levels[pin] = int(value)

    def add_event_detect(
        self,
        pin: int,
        edge: int,
        callback: Callable[[int], None] | None = None,
        bouncetime: int | None = None,
    ) -> None:
        if pin in self.detect:
            raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
        assert edge == self.BOTH
        assert callback is not None
        self.detect[pin] = (callback, bouncetime)

    def remove_event_detect(self, pin: int) -> None:
        self.detect.pop(pin, None)

    def cleanup(self, pin: int | None = None) -> None:
        pins = list(self.setups) if pin is None else [pin]
        for p in pins:
            self.setups.pop(p, None)
            self.detect.pop(p, None)
            self.calls.append(("cleanup", p))

    # the outside world
    def drive(self, pin: int, level: bool) -> None:
        if self.levels.get(pin) == int(level):
            return
        self.levels[pin] = int(level)
        if pin not in self.detect:
            return
        callback, bouncetime = self.detect[pin]
        now = time.monotonic()
        # RPi.GPIO drops every edge within bouncetime of the last *accepted* one.
        if bouncetime and now - self.last_accepted.get(pin, -1e9) < bouncetime / 1000:
            return
        self.last_accepted[pin] = now
        self._queue.put((callback, pin))

    def _dispatch(self) -> None:
        while (item := self._queue.get()) is not None:
            callback, pin = item
            self.callback_threads.add(threading.get_ident())
            callback(pin)

    def shutdown(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)


# -- gpiod 2.x ------------------------------------------------------------------------


class Direction(enum.Enum):
    AS_IS, INPUT, OUTPUT = 1, 2, 3


class Edge(enum.Enum):
    NONE, RISING, FALLING, BOTH = 1, 2, 3, 4


class Bias(enum.Enum):
    AS_IS, UNKNOWN, DISABLED, PULL_UP, PULL_DOWN = 1, 2, 3, 4, 5


class Value(enum.Enum):
    INACTIVE, ACTIVE = 0, 1


class EdgeEvent:
    class Type(enum.Enum):
        RISING_EDGE, FALLING_EDGE = 1, 2

    def __init__(self, event_type: EdgeEvent.Type, line_offset: int) -> None:
        self.event_type = event_type
        self.line_offset = line_offset
        self.timestamp_ns = time.monotonic_ns()


@dataclass
class LineSettings:
    direction: Direction = Direction.AS_IS
    edge_detection: Edge = Edge.NONE
    bias: Bias = Bias.AS_IS
    active_low: bool = False
    debounce_period: timedelta = timedelta()
    output_value: Value = Value.INACTIVE


class FakeLineRequest:
    def __init__(self, chip: FakeGpiod, offset: int, settings: LineSettings) -> None:
        self.chip = chip
        self.offset = offset
        self.settings = settings
        self._r, self._w = os.pipe()
        self.events: list[EdgeEvent] = []
        self.released = False

    @property
    def fd(self) -> int:
        return self._r

    def get_value(self, offset: int) -> Value:
        assert offset == self.offset
        assert not self.released
        return Value.ACTIVE if self.chip.levels.get(offset) else Value.INACTIVE

    def set_value(self, offset: int, value: Value) -> None:
        assert offset == self.offset
        assert not self.released
        assert self.settings.direction is Direction.OUTPUT
        self.chip.levels[offset] = value is Value.ACTIVE

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        os.read(self._r, 4096)
        events, self.events = self.events, []
        return events

    def release(self) -> None:
        if self.released:
            raise RuntimeError("request released")
        self.released = True
        os.close(self._r)
        os.close(self._w)
        self.chip.requests.pop(self.offset, None)

    def _emit(self, level: bool) -> None:
        kind = EdgeEvent.Type.RISING_EDGE if level else EdgeEvent.Type.FALLING_EDGE
        self.events.append(EdgeEvent(kind, self.offset))
        os.write(self._w, b"!")


class FakeGpiod:
    """The ``gpiod`` module and one chip behind it."""

    __version__ = "2.2.1"
    LineSettings = LineSettings
    EdgeEvent = EdgeEvent
    line = SimpleNamespace(Direction=Direction, Edge=Edge, Bias=Bias, Value=Value)

    def __init__(self, chip: str = "/dev/gpiochip0", lines: int = 54) -> None:
        self.chip = chip
        self.num_lines = lines
        self.levels: dict[int, bool] = {}
        self.requests: dict[int, FakeLineRequest] = {}
        self.consumers: dict[int, str] = {}

    def request_lines(
        self, path: str, consumer: str | None = None, config: dict[Any, Any] | None = None, **_: Any
    ) -> FakeLineRequest:
        if path != self.chip:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        assert config is not None
        assert len(config) == 1
        ((offset, settings),) = config.items()
        if not 0 <= offset < self.num_lines:
            raise ValueError(f"invalid offset {offset}")
        if offset in self.requests:
            raise OSError(errno.EBUSY, "Device or resource busy")
        req = FakeLineRequest(self, offset, settings)
        self.requests[offset] = req
        self.consumers[offset] = consumer or ""
        if settings.direction is Direction.OUTPUT:
            self.levels[offset] = settings.output_value is Value.ACTIVE
        elif offset not in self.levels:
            self.levels[offset] = settings.bias is Bias.PULL_UP
        return req

    # the outside world
    def drive(self, offset: int, level: bool) -> None:
        if self.levels.get(offset) == level:
            return
        self.levels[offset] = level
        req = self.requests.get(offset)
        if req is not None and req.settings.edge_detection is Edge.BOTH:
            req._emit(level)

    def bounce(self, offset: int, level: bool, transitions: int) -> None:
        req = self.requests.get(offset)
        if req is not None and req.settings.debounce_period > timedelta():
            self.drive(offset, level)  # the kernel's debouncer reports the settled edge only
            return
        for _ in range(transitions):
            self.drive(offset, level)
            self.drive(offset, not level)
        self.drive(offset, level)
