"""A dispatch key pair, a cabinet clock under the test's control, and a verifier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.clock import CabinetClock
from controller.security import CommandVerifier, MemoryReplayStore
from controller.security.signing import generate_keypair, sign_command

CABINET = "cab-01"
BOOT = "4b7c0d1e-boot-0001"
KEY_ID = "dispatch-1"
START_MS = 8_812_345


@dataclass
class ManualCabinetClock:
    """The cabinet's clock, advanced by the test (no sleeping, no wall clock)."""

    boot_id: str = BOOT
    uptime_ms: int = START_MS

    def __call__(self) -> CabinetClock:
        return CabinetClock(self.boot_id, self.uptime_ms)

    def advance(self, ms: int) -> None:
        self.uptime_ms += ms

    def reboot(self, boot_id: str) -> None:
        self.boot_id, self.uptime_ms = boot_id, 5_000


@dataclass
class Dispatch:
    """Signs commands like dispatch does, with deadlines from the cabinet's clock."""

    private_key: Ed25519PrivateKey
    clock: ManualCabinetClock
    key_id: str = KEY_ID
    counter: int = 0
    issued: list[str] = field(default_factory=list)

    def command(self, type_: str = "open", *, ttl_ms: int = 10_000,
                **overrides: Any) -> dict[str, Any]:
        self.counter += 1
        command: dict[str, Any] = {
            "id": f"c-2026-11-22-{self.counter:06d}",
            "type": type_,
            "cabinet": CABINET,
            "expires": {"boot_id": self.clock.boot_id,
                        "uptime_ms": self.clock.uptime_ms + ttl_ms},
            "args": {"compartment": "A01", "reason": "customer_app"},
        }
        command.update(overrides)
        self.issued.append(command["id"])
        return command

    def sign(self, command: dict[str, Any], key: Ed25519PrivateKey | None = None,
             key_id: str | None = None) -> dict[str, str]:
        return sign_command(command, key or self.private_key, key_id or self.key_id)

    def signed(self, type_: str = "open", **kwargs: Any) -> dict[str, str]:
        return self.sign(self.command(type_, **kwargs))


@pytest.fixture
def clock() -> ManualCabinetClock:
    return ManualCabinetClock()


@pytest.fixture
def dispatch(clock: ManualCabinetClock) -> Dispatch:
    private_key, _ = generate_keypair()
    return Dispatch(private_key, clock)


@pytest.fixture
def replay_store() -> MemoryReplayStore:
    return MemoryReplayStore()


@pytest.fixture
def make_verifier(
    dispatch: Dispatch, clock: ManualCabinetClock, replay_store: MemoryReplayStore,
) -> Callable[[], CommandVerifier]:
    """A new verifier (a daemon (re)start) sharing the clock and the replay store."""

    def make() -> CommandVerifier:
        keys = {KEY_ID: dispatch.private_key.public_key()}
        return CommandVerifier(CABINET, keys, clock, replay_store)

    return make


@pytest.fixture
def verifier(make_verifier: Callable[[], CommandVerifier]) -> CommandVerifier:
    return make_verifier()
