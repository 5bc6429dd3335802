"""An ``assign`` whose codes cannot be kept changes nothing (the real command service, its
code book and a store on fakeredis): a code that clashes with a live code of another order
(found by the store's own atomic check, as when a second writer put it there after the
first check), and a store error while the codes are written, both leave the compartment
free and the other order's code where it was; a retry of a stopped assign then works."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from controller.contract.messages import Reply, from_json
from controller.security.codes import CodeKey, seal_code
from controller.services.commands import CommandService
from controller.services.lane import CodeBook
from controller.store import Store
from controller.store.errors import StoreUnavailable
from tests.fuzz.cabinet import FuzzCabinet

CODE = "5830019274"


class RacingStore:
    """The real store, as a second writer makes it look: ``find_code`` misses (another
    process wrote the code after this check), and ``save_codes`` can fail once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.fail_next_save = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def find_code(self, verifier: str) -> dict[str, Any] | None:
        return None

    async def save_codes(self, order_id: str, records: Sequence[Mapping[str, Any]]) -> list[int]:
        if self.fail_next_save:
            self.fail_next_save = False
            raise StoreUnavailable("connection lost", op="save_codes")
        return await self._store.save_codes(order_id, records)


async def _cabinet(cab: FuzzCabinet, pool: concurrent.futures.Executor
                   ) -> tuple[CommandService, CodeKey, RacingStore]:
    key = CodeKey.generate(scrypt_n=2**4)  # a test key: the floor is for key files
    racing = RacingStore(cab.store)
    store = cast(Store, racing)
    book = CodeBook(key, store, cab.settings.cabinet.id, pool)
    service = CommandService(cab.settings, cab.model, store, cab.unlock, cab.verifier,
                             cab._emit, now=cab.now, cabinet_clock=cab.clock,
                             snapshot=cab._snapshot, codes=book)
    return service, key, racing


def _assign(cab: FuzzCabinet, key: CodeKey, order: str, command_id: str,
            compartment: str) -> bytes:
    sealed = seal_code(key.public_bytes, cab.settings.cabinet.id, order, "collect-0",
                       "collect", CODE)
    args = {"order_id": order, "size": "S", "zone": "ambient", "pool": "parcel",
            "compartment": compartment, "codes": [sealed]}
    return json.dumps(cab.sign(cab.command("assign", args, command_id=command_id))).encode()


def _holder(cab: FuzzCabinet, order: str) -> str | None:
    held = cab.model.compartments.holding(order)
    return None if held is None else held.compartment_id


async def test_a_code_clash_found_by_the_store_changes_nothing() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with FuzzCabinet() as cab:
            service, key, _ = await _cabinet(cab, pool)
            first = from_json(Reply,
                await service.handle(_assign(cab, key, "o-first", "c-assign-1", "B01")))
            assert first.ok, first
            index_before = await cab.store.find_code(key.verifier(CODE.encode()))
            second = from_json(Reply,
                await service.handle(_assign(cab, key, "o-second", "c-assign-2", "B02")))
            assert not second.ok, second
            assert second.error is not None
            assert second.error.code.value == "invalid_field"
            assert second.error.field == "args.codes[0]"
            # Nothing changed: B02 is free, the code still leads to the first order.
            assert _holder(cab, "o-second") is None
            assert cab.model.compartments.get("B02").order is None
            assert await cab.store.find_code(key.verifier(CODE.encode())) == index_before
            assert await cab.store.load_order("o-second") is None


async def test_a_store_error_while_the_codes_are_written_assigns_nothing() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with FuzzCabinet() as cab:
            service, key, racing = await _cabinet(cab, pool)
            racing.fail_next_save = True
            payload = _assign(cab, key, "o-lost", "c-assign-3", "B03")
            stopped = from_json(Reply, await service.handle(payload))
            assert stopped.error is not None
            assert stopped.error.code.value == "busy", stopped
            assert _holder(cab, "o-lost") is None
            # The retry (same id) acts, once, with its code.
            retried = from_json(Reply, await service.handle(payload))
            assert retried.ok, retried
            assert _holder(cab, "o-lost") == "B03"
            found = await cab.store.find_code(key.verifier(CODE.encode()))
            assert found is not None
            assert found["order_id"] == "o-lost"


def _assign_entry(cab: FuzzCabinet, order: str, command_id: str,
                  entry: Mapping[str, Any]) -> bytes:
    args = {"order_id": order, "size": "S", "zone": "ambient", "pool": "parcel",
            "compartment": "B01", "codes": [dict(entry)]}
    return json.dumps(cab.sign(cab.command("assign", args, command_id=command_id))).encode()


async def test_a_malformed_sealed_code_is_a_structured_refusal_and_its_repeat_the_same() -> None:
    """A signed assign whose sealed code cannot even be tried (shorter than its tag, not
    canonical base64, an ephemeral key of small order) gets ``invalid_field`` naming the
    part, nothing is assigned, and the same bytes again get the same reply (not ``busy``:
    the command's record was finished, not left claimed)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with FuzzCabinet() as cab:
            service, key, _ = await _cabinet(cab, pool)
            good = seal_code(key.public_bytes, cab.settings.cabinet.id, "o-bad", "collect-0",
                             "collect", CODE)
            raw = base64.b64decode(good["sealed"])
            bad = {
                "sealed": {**good, "sealed": base64.b64encode(raw[:15]).decode()},
                "epk": {**good, "epk": base64.b64encode(bytes([1]) + bytes(31)).decode()},
            }
            for n, (part, entry) in enumerate(sorted(bad.items())):
                payload = _assign_entry(cab, "o-bad", f"c-bad-{n}", entry)
                first = from_json(Reply, await service.handle(payload))
                assert first.error is not None, first
                assert first.error.code.value == "invalid_field", first
                assert first.error.field == f"args.codes[0].{part}", first
                again = from_json(Reply, await service.handle(payload))
                assert again == first
                assert _holder(cab, "o-bad") is None
