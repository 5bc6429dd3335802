"""An in-process cabinet built from the daemon's real classes, for fuzzing the command path.

:class:`FuzzCabinet` wires what :class:`controller.daemon.Daemon` wires for commands, and
nothing else: the settings of ``deploy/sim-cabinet.toml`` with signed commands required,
the :class:`~controller.store.Store` on an in-process fakeredis (``memory://``), the
boards of the fake backend (:func:`drivers.registry.load_backend` ``"fake"``), the
:class:`~controller.domain.cabinet_model.CabinetModel`, the event sink, the unlock service,
the :class:`~controller.security.verify.CommandVerifier` and the
:class:`~controller.services.commands.CommandService`. No MQTT, no poller: a command goes in
through :meth:`CommandService.handle` and its reply comes back.

The cabinet's clock is a manual one (boot id, uptime), so a deadline signed by
:meth:`FuzzCabinet.sign` is valid for as long as the test wants. :meth:`observe` takes a
picture of everything a command could change (pulses and output switching on every fake
board, compartment records in the store, the model's snapshot, the outbox, the command
records, events emitted): two equal pictures mean nothing happened.
"""

from __future__ import annotations

import base64
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controller.clock import CabinetClock
from controller.domain.cabinet_model import CabinetModel, Now
from controller.domain.unlock import UnlockPolicy
from controller.security.grants import issue_grant
from controller.security.replay import MemoryReplayStore
from controller.security.signing import sign_command
from controller.security.verify import CommandVerifier
from controller.services.commands import CommandService
from controller.services.hardware import Hardware
from controller.services.reporting import EventSink
from controller.services.setup import compartment_setups, unlock_limits
from controller.services.unlock import UnlockService
from controller.settings import Settings, load_settings
from controller.store import Store
from drivers.fake import FakeLockBoard

__all__ = ["BOOT_ID", "KEY_ID", "FuzzCabinet", "Picture", "cabinet_settings", "dispatch_key"]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "sim-cabinet.toml"
KEY_ID = "dispatch-1"
BOOT_ID = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
START_UPTIME_MS = 3_600_000

_KEY = Ed25519PrivateKey.generate()


def dispatch_key() -> Ed25519PrivateKey:
    """Dispatch's private key, the one the fuzzing cabinet trusts (one per test session)."""
    return _KEY


_SETTINGS: Settings | None = None


def cabinet_settings() -> Settings:
    """The simulator cabinet's settings, signed commands required, dispatch's key trusted
    (parsed once per session; ``Settings`` is frozen)."""
    global _SETTINGS
    if _SETTINGS is None:
        der = _KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        _SETTINGS = load_settings(TEMPLATE, env={}, overrides={
            "security.require_signed_commands": "true",
            f"security.dispatch_public_keys.{KEY_ID}": base64.b64encode(der).decode(),
        })
    return _SETTINGS


@dataclass
class ManualCabinetClock:
    boot_id: str = BOOT_ID
    uptime_ms: int = START_UPTIME_MS

    def __call__(self) -> CabinetClock:
        return CabinetClock(self.boot_id, self.uptime_ms)


@dataclass(frozen=True)
class Picture:
    """Everything a command could change, comparable with ``==``."""

    pulses: tuple[Any, ...]
    output_switching: tuple[Any, ...]
    compartments: Any
    model: Any
    outbox_depth: int
    events_emitted: int
    store_keys: frozenset[str]


@dataclass
class FuzzCabinet:
    """One cabinet; use as ``async with FuzzCabinet() as cab`` (closes store and boards)."""

    settings: Settings = field(default_factory=cabinet_settings)
    clock: ManualCabinetClock = field(default_factory=ManualCabinetClock)
    emitted: list[Any] = field(default_factory=list)

    async def __aenter__(self) -> FuzzCabinet:
        s = self.settings
        self.store = await Store.connect("memory://", "locker:fuzz", s.cabinet.id)
        boot = await self.store.new_boot()  # as the daemon does: events carry the boot id
        self.clock.boot_id = boot.id
        self.hardware = Hardware(s, "fake")
        self.hardware.open()
        self.model = CabinetModel(compartment_setups(s),
                                  offline_after=s.timing.unknown_after_failed_polls)
        self.sink = EventSink(self.store)
        self.verifier = CommandVerifier(
            s.cabinet.id, {KEY_ID: _KEY.public_key()}, self.clock, MemoryReplayStore(),
            site_id=s.cabinet.site, max_lifetime_ms=round(s.timing.command_max_ttl_s * 1000))
        self.unlock = UnlockService(s, self.model, self.hardware, UnlockPolicy(unlock_limits(s)),
                                    self._emit, now=self.now)
        self.service = CommandService(
            s, self.model, self.store, self.unlock, self.verifier, self._emit,
            now=self.now, cabinet_clock=self.clock, snapshot=self._snapshot)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.sink.close()
        await self.hardware.close()
        await self.store.close()

    # -- wiring ------------------------------------------------------------------------

    def now(self) -> Now:
        return Now(time.monotonic(), time.time())

    async def _emit(self, events: Any) -> object:
        events = list(events)
        self.emitted.extend(events)
        return await self.sink.emit(events)

    async def _snapshot(self) -> dict[str, Any]:
        return {"compartments": self.model.snapshot()["compartments"]}

    # -- commands ----------------------------------------------------------------------

    def command(self, type_: str = "open", args: dict[str, Any] | None = None, *,
                command_id: str = "c-fuzz-000001", ttl_ms: int = 10_000,
                **overrides: Any) -> dict[str, Any]:
        """A command dispatch could send now (deadline ``ttl_ms`` ahead)."""
        command: dict[str, Any] = {
            "id": command_id, "type": type_, "site": self.settings.cabinet.site,
            "cabinet": self.settings.cabinet.id,
            "expires": {"boot_id": self.clock.boot_id,
                        "uptime_ms": self.clock.uptime_ms + ttl_ms},
            "args": {"compartment": "A01", "reason": "staff"} if args is None else args,
        }
        command.update(overrides)
        return command

    @staticmethod
    def sign(command: dict[str, Any], key: Ed25519PrivateKey | None = None,
             key_id: str = KEY_ID, grant: dict[str, str] | None = None) -> dict[str, Any]:
        return sign_command(command, key or _KEY, key_id, grant=grant)

    def technician(self, *, grant_id: str = "g-tech-1", site: str | None = None,
                   valid_from_s: float = -60, valid_until_s: float = 3600,
                   ) -> tuple[Ed25519PrivateKey, dict[str, str]]:
        """A technician key and dispatch's grant for it (valid around the wall clock now)."""
        key = Ed25519PrivateKey.generate()
        now = time.time()
        grant = issue_grant(_KEY, KEY_ID, grant_id=grant_id, key_id="tech-1",
                            public_key=key.public_key(),
                            site=site or self.settings.cabinet.site,
                            not_before=int(now + valid_from_s),
                            not_after=int(now + valid_until_s))
        return key, grant

    # -- observation -------------------------------------------------------------------

    def boards(self) -> dict[str, FakeLockBoard]:
        return {n: b for n, b in self.hardware.lock_boards.items()
                if isinstance(b, FakeLockBoard)}

    def pulse_count(self) -> int:
        return sum(len(b.pulses()) + len(b.calls("pulse")) for b in self.boards().values())

    async def observe(self) -> Picture:
        boards = self.boards()
        pulses = tuple((n, tuple(b.pulses()), len(b.calls("pulse")))
                       for n, b in sorted(boards.items()))
        switching = tuple((n, len(b.calls("set_output"))) for n, b in sorted(boards.items()))
        redis = self.store._client  # the in-process fakeredis: every key the store wrote
        keys = frozenset(k.decode() if isinstance(k, bytes) else k
                         for k in await redis.keys("*"))
        return Picture(
            pulses=pulses, output_switching=switching,
            compartments=await self.store.load_compartments(),
            model=repr(self.model.snapshot()), outbox_depth=await self.store.depth(),
            events_emitted=len(self.emitted), store_keys=keys,
        )
