"""No text and no bytes from the lane end the lane (Hypothesis, through the real service).

- ``LaneService.enter_code`` takes any text: it returns a refusal, never raises, pulses
  nothing; an entry whose order part cannot be an order id is ``invalid_code`` and counts
  against no lockout.
- The scanner loop takes any bytes from the real :class:`drivers.scanner.CodeScanner` (on
  a pipe standing in for the serial port): every line becomes exactly one refusal, and the
  lane's task keeps running.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.services.lane import EntryResult, LaneService
from controller.settings import parse_settings
from drivers.scanner import CodeScanner
from tests.unit.lane.harness import CODE_KEY, Lane, config, issued

pytestmark = pytest.mark.timeout(240)

REFUSALS = {"invalid_code", "wrong_code", "slow_down", "unreadable"}
# A spent wrong-code budget would soon refuse everything before the deeper checks: keep
# it far away.
SETTINGS = parse_settings(config(code_max_attempts=100, code_lockout_s=0.001),
                          check_files=False)

_order_like = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:_", min_size=1,
                      max_size=12)
_codes = st.one_of(
    st.text(max_size=300),
    st.builds(lambda o, c: f"{o}:{c}", st.text(max_size=80), st.text(max_size=40)),
    st.builds(lambda o, c: f"{o}:{c}", _order_like, st.text(alphabet="0123456789", max_size=8)),
    st.builds(lambda o, c: f"order {o}:{c}", _order_like, st.text(max_size=10)),
)


class _LaneOnALoop:
    """One lane on its own event loop, shared by the examples of a test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lane = self.loop.run_until_complete(Lane.create(settings=SETTINGS))
        self.loop.run_until_complete(self.lane.assign(
            "o-1", "parcel", codes=[issued("4829130057", "deposit")]))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.lane.close())
        _close_loop(self.loop)


@pytest.fixture(scope="module")
def shared() -> Iterator[_LaneOnALoop]:
    built = _LaneOnALoop()
    try:
        yield built
    finally:
        built.close()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await whatever still runs on ``loop`` (buzzer, scanner), then close it."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()

    async def drain() -> None:
        await asyncio.gather(*pending, return_exceptions=True)

    loop.run_until_complete(drain())
    loop.close()


def _lockouts(lane: Lane) -> dict[str, Any]:
    """Wrong codes counted against each input of the lane (the budget's tokens refill with
    time, so only the count can be compared)."""
    now = lane.now().mono
    return {k: v.to_dict(now)["wrong_total"] for k, v in lane.lane.checker._budgets.items()}


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=_codes)
@example(raw="order 1:123456")
@example(raw="o-1:0000000000")
@example(raw="a\x00b:1234")
@example(raw=":" * 300)
@example(raw="x" * 200 + ":123456")
def test_any_text_is_a_refusal_never_an_exception(shared: _LaneOnALoop, raw: str) -> None:
    lane = shared.lane
    pulses = len(lane.unlock.pulsed)
    lockouts = _lockouts(lane)
    events = len(lane.events)
    result = shared.run(lane.lane.enter_code(raw, source="scanner"))
    assert isinstance(result, EntryResult)
    assert result.accepted is False
    assert result.reason in REFUSALS, result
    assert len(lane.unlock.pulsed) == pulses
    new = [e for e in lane.events[events:]
           if not (e.kind.startswith("alarm_") and e.data.get("alarm") == "code_guessing")]
    # Reported at once, or counted into the next coalesced report (at most one refusal a
    # second per input reaches the outbox on its own).
    assert {e.kind for e in new} <= {"code_rejected", "code_rejections_coalesced"}
    rejected = [e for e in new if e.kind == "code_rejected"]
    assert len(rejected) <= 1
    if rejected:
        assert rejected[0].data["reason"] == result.reason
    if result.reason == "invalid_code":
        assert _lockouts(lane) == lockouts  # nothing counted, nothing stored


def test_a_colon_entry_naming_no_order_is_invalid_and_the_lane_still_opens(
    shared: _LaneOnALoop,
) -> None:
    lane = shared.lane
    result = shared.run(lane.lane.enter_code("order 1:123456", source="scanner"))
    assert result.reason == "invalid_code"
    assert result.order_id is None
    opened = shared.run(lane.lane.enter_code("o-1:4829130057", source="scanner"))
    assert opened.accepted, opened
    assert lane.unlock.pulsed[-1][0] == opened.compartment


class _PipePort:
    """A serial port made of a pipe: what the scanner reads, the test writes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)

    @property
    def in_waiting(self) -> int:
        raw = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int = 1) -> bytes:
        try:
            return os.read(self._fd, size)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        pass  # the test owns the pipe


class _ScannerLane:
    """The real lane service reading the real CodeScanner, on a pipe, in a running task."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.read_fd, self.write_fd = os.pipe()
        self.lane = self.loop.run_until_complete(Lane.create(settings=SETTINGS, with_io=False))
        self.scanner = CodeScanner("pipe", open_port=lambda _p, _b: _PipePort(self.read_fd),
                                   queue_depth=10_000)
        h = self.lane
        self.service = LaneService(h.settings, h.model, h.store, h.unlock, h.emit, now=h.now,
                                   code_key=CODE_KEY, scanner=self.scanner, beep_s=0.01,
                                   lockout_beep_s=0.01,
                                   tick_s=0.05, check_interval_s=0.0)
        self.loop.run_until_complete(self.service.start())
        self.task = self.loop.create_task(self.service.run(), name="lane")

    def rejections(self) -> int:
        """Entries the lane answered with a refusal (reported one by one or coalesced)."""
        return self.service.rejected

    def feed(self, data: bytes) -> None:
        before_lines = self.scanner.codes + self.scanner.rejected
        before = self.rejections()
        os.write(self.write_fd, data)

        async def settled() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # bounded
                await asyncio.sleep(0.005)
                lines = self.scanner.codes + self.scanner.rejected - before_lines
                if self.task.done() or (
                        not self.scanner.pending and self.rejections() - before == lines
                        and self.service.checker.checking == 0 and self.in_pipe() == 0):
                    return
            raise AssertionError("the lane did not answer every scanned line in 20 s")

        self.loop.run_until_complete(settled())

    def in_pipe(self) -> int:
        return _PipePort(self.read_fd).in_waiting

    def close(self) -> None:
        self.task.cancel()

        async def stopped() -> None:
            await asyncio.gather(self.task, return_exceptions=True)

        self.loop.run_until_complete(stopped())
        self.loop.run_until_complete(self.scanner.close())
        self.loop.run_until_complete(self.service.close())
        self.loop.run_until_complete(self.lane.close())
        os.close(self.write_fd)
        os.close(self.read_fd)
        _close_loop(self.loop)


@pytest.fixture(scope="module")
def scanning() -> Iterator[_ScannerLane]:
    built = _ScannerLane()
    try:
        yield built
    finally:
        built.close()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), _codes),
))
@example(data=b"order 1:123456")
@example(data=b"\xff\xfe:1234")
@example(data=b"a" * 700)
def test_any_bytes_from_the_scanner_leave_the_lane_running(
    scanning: _ScannerLane, data: bytes,
) -> None:
    pulses = len(scanning.lane.unlock.pulsed)
    scanning.feed(data + b"\r")
    assert not scanning.task.done(), scanning.task.exception()
    assert len(scanning.lane.unlock.pulsed) == pulses
