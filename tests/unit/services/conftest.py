"""An in-process cabinet core for fast service tests: the real services, fake boards
(drivers.fake through the registry), the store on an in-process fakeredis."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controller.clock import CabinetClock
from controller.domain.cabinet_model import CabinetModel, Now
from controller.domain.unlock import UnlockPolicy
from controller.security.replay import MemoryReplayStore
from controller.security.signing import sign_command
from controller.security.verify import CommandVerifier
from controller.services.commands import CommandService
from controller.services.hardware import Hardware
from controller.services.poller import Poller
from controller.services.reporting import EventSink
from controller.services.setup import compartment_setups, unlock_limits
from controller.services.unlock import UnlockService
from controller.settings import Settings, load_settings
from controller.store import CommandRecord, Store
from drivers.fake import FakeLockBoard

ROOT = Path(__file__).resolve().parents[3]
_ids = itertools.count(1)


@dataclass
class Core:
    settings: Settings
    hardware: Hardware
    store: Store
    model: CabinetModel
    sink: EventSink
    unlock: UnlockService
    commands: CommandService
    poller: Poller
    policy: UnlockPolicy
    key: Ed25519PrivateKey
    boot_id: str
    start: float

    def clock(self) -> CabinetClock:
        return CabinetClock(self.boot_id, int((time.monotonic() - self.start) * 1000))

    def board(self, name: str) -> FakeLockBoard:
        board = self.hardware.lock_boards[name]
        assert isinstance(board, FakeLockBoard)
        return board

    def command(self, type_: str, args: dict[str, Any], *, ttl_ms: int = 10_000,
                command_id: str | None = None, **envelope: Any) -> dict[str, Any]:
        clock = self.clock()
        return {"id": command_id or f"t-{next(_ids)}", "type": type_,
                "cabinet": self.settings.cabinet.id,
                "expires": {"boot_id": clock.boot_id, "uptime_ms": clock.uptime_ms + ttl_ms},
                "args": args, **envelope}

    def signed(self, command: dict[str, Any]) -> bytes:
        return json.dumps(sign_command(command, self.key, "test")).encode()

    async def send(self, command: dict[str, Any], *, sign: bool = True) -> dict[str, Any]:
        payload = self.signed(command) if sign else json.dumps(command).encode()
        return json.loads(await self.commands.handle(payload))

    async def events(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in await self.store.pending(1000)]


def _now() -> Now:
    return Now(time.monotonic(), time.time())


async def make_core(store: Store | None = None, *,
                    save: Callable[[str], Awaitable[None]] | None = None) -> Core:
    """The cabinet core on ``store`` (default: an in-process fakeredis); ``save`` replaces
    the compartment save (the daemon passes its StateKeeper's). ``close_core`` ends it."""
    key = Ed25519PrivateKey.generate()
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    settings = load_settings(
        ROOT / "deploy" / "sim-cabinet.toml", env={},
        overrides={"security.require_signed_commands": True,
                   "security.dispatch_public_keys": {"test": base64.b64encode(der).decode()},
                   "timing.compartment_cooldown_s": 0.0, "timing.pulse_gap_s": 0.0,
                   "timing.pulse_s": 0.01},
    )
    hardware = Hardware(settings, "fake")
    hardware.open()
    if store is None:
        store = await Store.connect("memory://", "test", settings.cabinet.id)
    boot = await store.new_boot()
    model = CabinetModel(compartment_setups(settings))
    sink = EventSink(store)
    policy = UnlockPolicy(unlock_limits(settings))
    unlock = UnlockService(settings, model, hardware, policy, sink.emit, now=_now)
    start = time.monotonic()
    holder: dict[str, Core] = {}
    verifier = CommandVerifier(settings.cabinet.id, {"test": key.public_key()},
                               lambda: holder["core"].clock(), MemoryReplayStore())

    async def snapshot() -> dict[str, Any]:
        return model.snapshot()

    commands = CommandService(settings, model, store, unlock, verifier, sink.emit, now=_now,
                              cabinet_clock=lambda: holder["core"].clock(), snapshot=snapshot,
                              save=save)
    poller = Poller(model, hardware, sink.emit, now=_now, interval_s=0.1)
    c = Core(settings, hardware, store, model, sink, unlock, commands, poller, policy, key,
             boot.id, start)
    holder["core"] = c
    return c


async def close_core(c: Core) -> None:
    await c.sink.close()
    await c.store.close()
    await c.hardware.close()


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    c = await make_core()
    try:
        yield c
    finally:
        await close_core(c)


async def finished_record(store: Store, command_id: str, seconds: float = 5.0) -> CommandRecord:
    """The command's record once it is finished (its reply stored by a task of the
    daemon's: the settler of owed replies); an AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:  # bounded by the deadline
        record = await store.get_command(command_id)
        if record is not None and record.finished:
            return record
        assert time.monotonic() < deadline, f"{command_id}: not finished: {record}"
        await asyncio.sleep(0.01)
