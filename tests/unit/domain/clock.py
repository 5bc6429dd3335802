"""A fake monotonic clock for the domain tests: time moves only when the test says so."""

from __future__ import annotations


class FakeClock:
    """Callable like ``time.monotonic``; ``advance`` moves it forward."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self.now += seconds
        return self.now
