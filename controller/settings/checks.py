"""Checks that span sections (a board on an unknown bus, a lock channel used twice...),
run after the per-field checks; each names the key that is wrong."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from controller.settings.deployment import deployment_issues
from controller.settings.errors import Loc
from controller.settings.models import (
    BoardConfig,
    ChannelRef,
    Settings,
    SignalRef,
    TemperatureProbeBoard,
)

# =============================================================================================
# Cross-section checks
# =============================================================================================


def _cross_check(s: Settings) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = deployment_issues(s)

    def dupes(section: str, items: Sequence[Any], attr: str) -> dict[str, int]:
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            value = getattr(item, attr)
            if value in first:
                out.append(
                    ((section, i, attr), f"{value!r} already used by {section}[{first[value]}]")
                )
            else:
                first[value] = i
        return first

    dupes("buses", s.buses, "name")
    board_idx = dupes("boards", s.boards, "name")
    zone_idx = dupes("zones", s.zones, "name")
    dupes("compartments", s.compartments, "id")

    bus_names = {b.name for b in s.buses}
    addresses: dict[tuple[str, int], int] = {}
    for i, board in enumerate(s.boards):
        if board.bus not in bus_names:
            out.append((("boards", i, "bus"), _unknown("bus", board.bus, bus_names)))
        key = (board.bus, board.address)
        if key in addresses:
            j = addresses[key]
            out.append(
                (
                    ("boards", i, "address"),
                    f"address {board.address} on {board.bus} already used by boards[{j}] "
                    f"({s.boards[j].name})",
                )
            )
        else:
            addresses[key] = i
        own_cap = getattr(board, "max_pulse_s", None)
        if own_cap is not None and own_cap < s.timing.pulse_s:
            out.append(
                (("boards", i, "max_pulse_s"), f"must be >= timing.pulse_s ({s.timing.pulse_s})")
            )

    def board_for(loc: Loc, ref: ChannelRef) -> BoardConfig | None:
        if ref.board not in board_idx:
            out.append(((*loc, "board"), _unknown("board", ref.board, board_idx)))
            return None
        return s.boards[board_idx[ref.board]]

    for i, zone in enumerate(s.zones):
        if zone.ajar_after_s is not None and zone.ajar_after_s > s.timing.ajar_after_s:
            out.append(
                (
                    ("zones", i, "ajar_after_s"),
                    f"must be <= timing.ajar_after_s ({s.timing.ajar_after_s}): a zone may "
                    "only shorten it",
                )
            )
        if zone.probe is None:
            continue
        loc: Loc = ("zones", i, "probe")
        probe_board = board_for(loc, zone.probe)
        if probe_board is None:
            continue
        if not isinstance(probe_board, TemperatureProbeBoard):
            out.append(
                (
                    (*loc, "board"),
                    f"{probe_board.name} is a {probe_board.profile} board, not a temperature_probe",
                )
            )
        elif zone.probe.channel >= probe_board.channels:
            out.append(
                (
                    (*loc, "channel"),
                    f"{probe_board.name} has channels 0..{probe_board.channels - 1}"
                    f" (got {zone.probe.channel})",
                )
            )

    lock_users: dict[tuple[str, int], int] = {}
    input_users: dict[tuple[str, int], tuple[int, str]] = {}
    for i, comp in enumerate(s.compartments):
        base: Loc = ("compartments", i)
        if comp.zone not in zone_idx:
            out.append(((*base, "zone"), _unknown("zone", comp.zone, zone_idx)))
        if comp.pool not in s.tenants:
            fix = f"declare it as [tenants.{comp.pool}]"
            out.append(((*base, "pool"), _unknown("pool", comp.pool, s.tenants, fix)))
        lock_board = board_for((*base, "lock"), comp.lock)
        if lock_board is not None:
            if not lock_board.is_lock_board or lock_board.output_count == 0:
                out.append(((*base, "lock", "board"), f"{lock_board.name} has no outputs"))
            elif comp.lock.channel >= lock_board.output_count:
                out.append(
                    (
                        (*base, "lock", "channel"),
                        f"{lock_board.name} has outputs "
                        f"0..{lock_board.output_count - 1} (got {comp.lock.channel})",
                    )
                )
            else:
                key = (comp.lock.board, comp.lock.channel)
                if key in lock_users:
                    j = lock_users[key]
                    out.append(
                        (
                            (*base, "lock"),
                            f"{key[0]} channel {key[1]} already used by "
                            f"compartments[{j}] ({s.compartments[j].id})",
                        )
                    )
                else:
                    lock_users[key] = i
        for purpose in ("door", "latch", "occupancy"):
            ref: SignalRef | None = getattr(comp, purpose)
            if ref is None:
                continue
            in_board = board_for((*base, purpose), ref)
            if in_board is None:
                continue
            if in_board.input_count == 0:
                out.append(((*base, purpose, "board"), f"{in_board.name} has no inputs"))
                continue
            if ref.channel >= in_board.input_count:
                out.append(
                    (
                        (*base, purpose, "channel"),
                        f"{in_board.name} has inputs "
                        f"0..{in_board.input_count - 1} (got {ref.channel})",
                    )
                )
                continue
            key = (ref.board, ref.channel)
            # An input may serve two signals of one compartment (door and latch on one
            # contact); two compartments on one input is a wiring mistake.
            if key in input_users and input_users[key][0] != i:
                j, used_for = input_users[key]
                out.append(
                    (
                        (*base, purpose),
                        f"{key[0]} input {key[1]} already used by "
                        f"compartments[{j}] ({s.compartments[j].id}) {used_for}",
                    )
                )
            else:
                input_users.setdefault(key, (i, purpose))
    return out


def _unknown(
    what: str, name: str, known: Mapping[str, Any] | set[str], fix: str | None = None
) -> str:
    msg = f"unknown {what} {name!r}"
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"{msg} (did you mean {close[0]!r}?)"
    if fix is not None:
        return f"{msg}: {fix}"
    return f"{msg} (no {what} has that name)" if known else f"{msg} (none is defined)"
