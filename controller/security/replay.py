"""Replay protection: the ids of accepted signed commands, kept until their deadline passes.

The rule (docs/decisions/0005-command-signatures.md): a signed command id is accepted at
most once while its deadline has not passed. After the deadline, the same signed bytes are
refused as ``expired`` anyway (the deadline is inside the signature), so the id can be
forgotten: memory is bounded by (signed commands accepted per second) x 30 s, and only
commands with a valid dispatch signature ever enter it, so nobody without dispatch's key
can fill it.

Order does not matter: an older command arriving after a newer one is accepted if its id
is new and its deadline has not passed. Commands carry no counter; the 30 s lifetime is the
reordering window.

Two layers:

- :class:`ReplayWindow`, in memory, synchronous: the authority during one daemon run.
- :class:`ReplayStore`, a persistence hook: every accepted id is written there *before* the
  command may act, and loaded back when the daemon restarts within the same boot, so a
  restart does not reopen the window. After a reboot the boot id changes and every older
  command is refused as ``wrong_boot``; a store may drop other boots' entries.
  :class:`MemoryReplayStore` is the in-process implementation (tests, simulator); the Redis
  store implements the same two methods. Its retention must not rely on wall-clock TTLs
  alone (the Pi's wall clock jumps when NTP answers): filter on ``deadline_uptime_ms``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MemoryReplayStore", "ReplayStore", "ReplayWindow", "SeenCommand"]


@dataclass(frozen=True, slots=True)
class SeenCommand:
    """An accepted signed command id and its deadline in the cabinet's uptime clock."""

    command_id: str
    deadline_uptime_ms: int


class ReplayStore(Protocol):
    """Persistence of accepted command ids, per boot. Both methods may raise: the verifier
    then refuses to accept the command (fails closed) and lets the error propagate."""

    async def load(self, boot_id: str) -> Iterable[SeenCommand]:
        """Every id recorded for ``boot_id`` (expired ones may be included; they are dropped)."""
        ...

    async def record(self, boot_id: str, seen: SeenCommand) -> None:
        """Durably record ``seen`` for ``boot_id``; returns once it would survive a crash."""
        ...


class MemoryReplayStore:
    """A :class:`ReplayStore` in process memory: survives a verifier, not a process."""

    def __init__(self) -> None:
        self._by_boot: dict[str, dict[str, int]] = {}

    async def load(self, boot_id: str) -> Iterable[SeenCommand]:
        seen = self._by_boot.get(boot_id, {})
        return [SeenCommand(cid, deadline) for cid, deadline in seen.items()]

    async def record(self, boot_id: str, seen: SeenCommand) -> None:
        # A new boot makes every other boot's ids useless: keep only the current one.
        if boot_id not in self._by_boot:
            self._by_boot = {boot_id: {}}
        self._by_boot[boot_id][seen.command_id] = seen.deadline_uptime_ms

    def ids(self, boot_id: str) -> set[str]:
        """Assertion helper: the ids recorded for ``boot_id``."""
        return set(self._by_boot.get(boot_id, {}))


class ReplayWindow:
    """Ids of accepted commands of one boot, each kept until its deadline has passed.

    Not thread-safe; the verifier uses it from one event loop. Lookups are O(1), pruning
    O(log n) per forgotten id (a heap ordered by deadline).
    """

    def __init__(self) -> None:
        self._deadlines: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._deadlines

    def prune(self, now_ms: int) -> None:
        """Forget every id whose deadline is before ``now_ms``."""
        while self._heap and self._heap[0][0] < now_ms:
            deadline, command_id = heapq.heappop(self._heap)
            if self._deadlines.get(command_id) == deadline:
                del self._deadlines[command_id]

    def add(self, command_id: str, deadline_uptime_ms: int) -> None:
        """Remember ``command_id`` until ``deadline_uptime_ms`` (the later one if seen twice)."""
        if self._deadlines.get(command_id, -1) >= deadline_uptime_ms:
            return
        self._deadlines[command_id] = deadline_uptime_ms
        heapq.heappush(self._heap, (deadline_uptime_ms, command_id))

    def discard(self, command_id: str) -> None:
        """Forget ``command_id`` now (its recording failed; it was never accepted)."""
        self._deadlines.pop(command_id, None)

    def clear(self) -> None:
        self._deadlines.clear()
        self._heap.clear()
