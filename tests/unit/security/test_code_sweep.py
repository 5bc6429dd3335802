"""The codes of an order no compartment holds any more are forgotten by the sweep (the real
command service, its code book and a store on fakeredis): after a collection or a
retrieval, nothing leads to the ended order, its record is gone, and a new order may be
given the same code; an order being assigned, or still held, keeps its codes."""

from __future__ import annotations

import concurrent.futures

from controller.contract.messages import Reply, from_json
from controller.security.codes import CodeKey
from controller.services.codecheck import CodeBook
from tests.fuzz.cabinet import FuzzCabinet
from tests.unit.security.test_assign_codes import CODE, _assign, _cabinet, _holder


def _held(cab: FuzzCabinet) -> set[str]:
    return {c.order.order_id for c in cab.model.compartments if c.order is not None}


async def test_an_ended_orders_codes_are_forgotten_and_its_code_may_be_given_again() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with FuzzCabinet() as cab:
            service, key, racing = await _cabinet(cab, pool)
            first = from_json(Reply,
                await service.handle(_assign(cab, key, "o-first", "c-assign-1", "B01")))
            assert first.ok, first
            book = CodeBook(key, racing, cab.settings.cabinet.id, pool)  # type: ignore[arg-type]
            # Held: the sweep keeps it.
            assert await book.sweep(lambda: _held(cab)) == []
            assert await cab.store.find_code(key.verifier(CODE.encode())) is not None
            # The order ends in the model (as a collection frees the compartment), its
            # codes and record stay in the store until the sweep.
            cab.model.release("B01", cab.now())
            assert _holder(cab, "o-first") is None
            refused = from_json(Reply,
                await service.handle(_assign(cab, key, "o-second", "c-assign-2", "B02")))
            assert not refused.ok
            assert refused.error is not None
            assert refused.error.field == "args.codes[0]"
            assert await book.sweep(lambda: _held(cab)) == ["o-first"]
            assert await cab.store.find_code(key.verifier(CODE.encode())) is None
            assert await cab.store.load_codes("o-first") is None
            assert await cab.store.load_order("o-first") is None
            again = from_json(Reply,
                await service.handle(_assign(cab, key, "o-second", "c-assign-3", "B02")))
            assert again.ok, again
            assert _holder(cab, "o-second") == "B02"
            found = await cab.store.find_code(key.verifier(CODE.encode()))
            assert found is not None
            assert found["order_id"] == "o-second"


async def test_an_order_being_assigned_keeps_its_codes() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with FuzzCabinet() as cab:
            key = CodeKey.generate(scrypt_n=2**4)
            book = CodeBook(key, cab.store, cab.settings.cabinet.id, pool)
            record = {"code_id": "collect-0", "purpose": "collect",
                      "verifier": key.verifier(CODE.encode())}
            async with book.assigning("o-new"):
                await book.save("o-new", [record])
                # Not held yet, not live: still the sweep leaves it alone.
                assert await book.sweep(set) == []
            assert await cab.store.load_codes("o-new") is not None
            # Once the assign is over and nothing holds the order, it goes.
            assert await book.sweep(set) == ["o-new"]
            assert await cab.store.load_codes("o-new") is None
