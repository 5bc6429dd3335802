"""Translate the validated settings into the domain's terms (pure)."""

from __future__ import annotations

from controller.domain.cabinet_model import CompartmentSetup
from controller.domain.compartment import CompartmentSpec, Size, ZoneKind
from controller.domain.door import DoorTiming
from controller.domain.signals import (
    CompartmentWiring,
    Polarity,
    SignalFiltering,
    SignalWiring,
)
from controller.domain.unlock import UnlockLimits
from controller.settings import Settings, SignalRef

__all__ = ["compartment_setups", "signal_filtering", "unlock_limits"]


def _wiring(ref: SignalRef | None) -> SignalWiring | None:
    if ref is None:
        return None
    return SignalWiring(ref.board, ref.channel, Polarity(ref.active))


def compartment_setups(settings: Settings) -> list[CompartmentSetup]:
    out = []
    for c in settings.compartments:
        zone = settings.zone_of(c.id)
        spec = CompartmentSpec(
            compartment_id=c.id,
            size=Size(c.size),
            zone=c.zone,
            zone_kind=ZoneKind(zone.kind),
            pool=c.pool,
            has_occupancy_sensor=c.occupancy is not None,
        )
        wiring = CompartmentWiring(
            c.id, door=_wiring(c.door), latch=_wiring(c.latch), occupancy=_wiring(c.occupancy)
        )
        timing = DoorTiming(
            open_detect_timeout_s=settings.timing.open_detect_timeout_s,
            ajar_after_s=settings.ajar_after_s(c.id),
        )
        out.append(CompartmentSetup(spec, wiring, timing))
    return out


def unlock_limits(settings: Settings) -> UnlockLimits:
    t = settings.timing
    return UnlockLimits(
        max_concurrent=t.max_concurrent_pulses,
        gap_s=t.pulse_gap_s,
        cooldown_s=t.compartment_cooldown_s,
        max_pulses=t.compartment_max_pulses_per_minute,
        rate_window_s=60.0,
        pulse_s=t.pulse_s,
        max_pulse_s=t.max_pulse_s,
    )


def signal_filtering(settings: Settings) -> SignalFiltering:
    t = settings.timing
    return SignalFiltering(
        door_debounce_s=t.door_debounce_s,
        latch_debounce_s=t.latch_debounce_s,
        occupancy_debounce_s=t.occupancy_debounce_s,
        flapping_changes=t.flapping_changes,
        flapping_window_s=t.flapping_window_s,
        flapping_clear_s=t.flapping_clear_s,
    )
