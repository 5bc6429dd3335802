"""The replay window on its own: bounded, ordered by deadline, safe to discard."""

from __future__ import annotations

from controller.security import MemoryReplayStore, ReplayWindow, SeenCommand


def test_ids_are_forgotten_once_their_deadline_has_passed() -> None:
    window = ReplayWindow()
    window.add("a", 100)
    window.add("b", 200)
    window.prune(100)
    assert "a" in window  # the deadline itself is still valid
    window.prune(101)
    assert "a" not in window
    assert "b" in window
    assert len(window) == 1


def test_the_later_deadline_wins_for_an_id_seen_twice() -> None:
    window = ReplayWindow()
    window.add("a", 300)
    window.add("a", 100)
    window.prune(200)
    assert "a" in window
    window.prune(301)
    assert len(window) == 0


def test_discard_then_add_again_keeps_the_new_deadline() -> None:
    window = ReplayWindow()
    window.add("a", 100)
    window.discard("a")
    assert "a" not in window
    window.add("a", 500)
    window.prune(200)
    assert "a" in window
    window.clear()
    assert len(window) == 0


async def test_memory_store_keeps_only_the_latest_boot() -> None:
    store = MemoryReplayStore()
    await store.record("boot-1", SeenCommand("a", 1))
    await store.record("boot-2", SeenCommand("b", 2))
    assert list(await store.load("boot-1")) == []
    assert list(await store.load("boot-2")) == [SeenCommand("b", 2)]
    assert store.ids("boot-2") == {"b"}
