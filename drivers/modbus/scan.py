"""Bus scan and board addressing (what ``lockerctl bus scan`` / ``bus set-address`` call).

:func:`scan` asks each unit in a range for the Waveshare version register (holding
register ``0x8000``, one short transaction, no retry, failures not logged) and reports
who answered:

* a normal reply: a board is there; on a Waveshare-style board, its version;
* an exception reply: a board is there, it just has no such register (another make);
* a garbled reply (bad CRC, wrong length): *something* is there, very often **two
  boards answering at the same address**, whose replies collide on the wire;
* silence: nobody at that address.

The trap of two boards at the factory address
----------------------------------------------
Waveshare-style boards all leave the factory at address 1. Two new boards on one line
both answer every frame sent to unit 1: the replies overlap, the CRC fails, and the
scan reports "garbled at 1" (or, with unlucky timing, one clean reply that hides the
second board). Worse, a *write* to unit 1 (including "set address") is executed by
*both* boards: both move to the new address together and the clash just moves.
The only safe procedure is one new board at a time: connect it alone (or with boards
already re-addressed away from 1), set its address, then connect the next. A
broadcast (unit 0) address change is only for a line with exactly one board attached
(every board on the line takes the new address, and nobody replies), which is why
:func:`set_address` wants ``only_board_on_line=True`` for it.

Timing bound: a silent unit costs its timeout plus the line's late window after it
(twice ``timeout_s`` unless the line sets ``late_window_s``), so a full scan of 247
units takes at most ``len(units) * 3 * timeout_s`` plus the frames, about 40 s at the
defaults; pass a narrower range when the installation is known. ``max_duration_s``
caps it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.errors import BoardRejected, BoardTimeout, FrameError
from drivers.modbus import codec
from drivers.modbus.line import ModbusLine
from drivers.modbus.registers import MAX_UNIT, STANDARD_MAX_UNIT, WAVESHARE

__all__ = ["AddressChange", "ScanHit", "scan", "set_address"]


@dataclass(frozen=True, slots=True)
class ScanHit:
    """A unit that answered. ``kind``: ``"waveshare"`` (version register read),
    ``"other"`` (exception reply: a board of another make), ``"garbled"`` (a reply
    that failed the checks: suspect two boards at this address)."""

    address: int
    kind: str
    version: int | None = None
    detail: str = ""

    @property
    def firmware(self) -> str | None:
        if self.version is None:
            return None
        return f"V{self.version // 100}.{self.version % 100:02d}"


async def scan(
    line: ModbusLine,
    units: Iterable[int] = range(1, STANDARD_MAX_UNIT + 1),
    *,
    timeout_s: float = 0.05,
    max_duration_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ScanHit]:
    """Probe every unit in ``units`` once; return those that answered, in order.

    ``progress(unit)`` is called before each probe (for a progress bar). Stops early,
    returning what it found, once ``max_duration_s`` has elapsed."""
    hits: list[ScanHit] = []
    started = time.monotonic()
    for unit in units:
        if not 1 <= unit <= MAX_UNIT:
            raise ValueError(f"unit must be in 1..{MAX_UNIT}, got {unit}")
        if max_duration_s is not None and time.monotonic() - started >= max_duration_s:
            break
        if progress is not None:
            progress(unit)
        req = codec.read_request(
            unit, codec.Function.READ_HOLDING_REGISTERS, WAVESHARE.version_register, 1
        )
        try:
            (version,) = await line.execute(req, timeout_s=timeout_s, retries=0, log_failures=False)
        except BoardTimeout:
            continue
        except BoardRejected as exc:
            hits.append(ScanHit(unit, "other", None, f"exception {exc.exception_code}"))
        except FrameError as exc:
            hits.append(ScanHit(unit, "garbled", None, str(exc)))
        else:
            hits.append(ScanHit(unit, "waveshare", int(version)))
    return hits


@dataclass(frozen=True, slots=True)
class AddressChange:
    """Outcome of :func:`set_address`: ``verified`` when the board answered at ``new``
    with ``new`` in its address register."""

    old: int
    new: int
    verified: bool
    detail: str = ""


async def set_address(
    line: ModbusLine,
    current: int,
    new: int,
    *,
    only_board_on_line: bool = False,
    verify: bool = True,
    settle_s: float = 0.2,
) -> AddressChange:
    """Re-address a Waveshare-style board: write ``new`` to holding register ``0x4000``.

    ``current`` 0 broadcasts (for a board whose address is unknown); that requires
    ``only_board_on_line=True`` because every board on the line would take the new
    address. Boards differ in whether they acknowledge from the old or the new address,
    or at all, so an unclear acknowledgement is not an error: the change is *verified*
    by reading the address register back at ``new`` after ``settle_s``.
    Raises ValueError for addresses out of range, BoardRejected if the board refuses,
    BoardTimeout/FrameError from the verification read when the board is not at ``new``.
    """
    if not 1 <= new <= MAX_UNIT:
        raise ValueError(f"new address must be in 1..{MAX_UNIT}, got {new}")
    if not 0 <= current <= MAX_UNIT:
        raise ValueError(f"current address must be in 0..{MAX_UNIT}, got {current}")
    if current == 0 and not only_board_on_line:
        raise ValueError(
            "broadcast re-addressing changes every board on the line: "
            "disconnect the others and pass only_board_on_line=True"
        )
    detail = ""
    try:
        req = codec.write_register_request(current, WAVESHARE.address_register, new)
        await line.execute(req, priority=True, retries=0)
    except (BoardTimeout, FrameError) as exc:
        # Some firmware answers from the new address, some not at all: check below.
        detail = f"acknowledgement unclear: {exc}"
        if not verify:
            raise
    if not verify:
        return AddressChange(current, new, False, detail)
    await asyncio.sleep(settle_s)
    (stored,) = await line.read_holding_registers(new, WAVESHARE.address_register, 1)
    if stored != new:
        return AddressChange(current, new, False, f"address register reads {stored}")
    return AddressChange(current, new, True, detail)
