"""An unconfirmed pulse in the cabinet model: the declared open stands for the
open-detection timeout (a door opening then is authorised, for its purpose), then ends."""

from __future__ import annotations

from controller.domain.compartment import OpenPurpose, Order, Size, ZoneKind
from tests.unit.domain.test_cabinet_model import WALL0, _model, kinds, levels, now


def _declared(m, purpose: OpenPurpose = OpenPurpose.DEPOSIT):  # type: ignore[no-untyped-def]
    m.poll_ok("b1", levels(), now(0.0))
    order = Order("o-1", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 60)
    m.assign("A01", order, now(1.0))
    m.request_open("A01", purpose, now(2.0))
    m.pulse_sent("A01", now(2.0))
    return m


def test_a_door_opening_after_an_unconfirmed_pulse_is_an_authorised_deposit() -> None:
    m = _declared(_model())
    events = m.pulse_unconfirmed("A01", now(2.5), "ack lost")
    assert kinds(events) == ["unlock_pulse_unconfirmed"]
    assert events[0].event.details["evidence"] == "ack lost"
    # The window runs from the unconfirmed outcome: 5 s of open detection.
    opened = m.poll_ok("b1", levels(c0=True), now(7.0))
    assert kinds(opened) == ["door_opened"]
    assert opened[0].event.details["authorised"] is True
    assert "forced_open" not in [e.data().get("alarm") for e in opened]
    closed = m.poll_ok("b1", levels(c1=True), now(9.0))
    assert kinds(closed) == ["door_closed", "compartment_loaded"]


def test_no_opening_after_an_unconfirmed_pulse_ends_the_declared_open() -> None:
    m = _declared(_model())
    m.pulse_unconfirmed("A01", now(2.5))
    assert m.compartments.get("A01").pending_open is OpenPurpose.DEPOSIT
    ended = m.tick(now(8.0))
    assert kinds(ended) == ["open_not_detected"]
    assert ended[0].event.details["pulse_acked"] is False
    assert m.compartments.get("A01").pending_open is None
    # Nothing holds the order back: it expires on time, and a later opening is forced.
    assert "order_expired" in kinds(m.tick(now(70.0)))
    forced = m.poll_ok("b1", levels(c0=True), now(71.0))
    assert forced[0].event.details["authorised"] is False


def test_a_withdrawn_open_restores_the_compartment() -> None:
    m = _model()
    m.poll_ok("b1", levels(), now(0.0))
    order = Order("o-1", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 60)
    m.assign("A01", order, now(1.0))
    m.request_open("A01", OpenPurpose.DEPOSIT, now(2.0))
    m.withdraw_open("A01")
    assert m.compartments.get("A01").pending_open is None
    assert "order_expired" in kinds(m.tick(now(70.0)))



def test_a_verdict_slower_than_the_timeout_still_gives_the_open_its_window() -> None:
    # The driver gave up (unconfirmed) after the open-detection timeout had passed since
    # the frame: the window runs from the verdict, open_not_detected comes only after it.
    m = _declared(_model())
    assert m.tick(now(7.5)) == []
    assert m.compartments.get("A01").pending_open is OpenPurpose.DEPOSIT
    assert kinds(m.pulse_unconfirmed("A01", now(8.0), "ack lost")) == [
        "unlock_pulse_unconfirmed"]
    opened = m.poll_ok("b1", levels(c0=True), now(12.5))
    assert kinds(opened) == ["door_opened"]
    assert opened[0].event.details["authorised"] is True
    closed = m.poll_ok("b1", levels(c1=True), now(14.0))
    assert kinds(closed) == ["door_closed", "compartment_loaded"]


def test_a_verdict_slower_than_the_timeout_then_no_opening() -> None:
    m = _declared(_model())
    assert m.tick(now(7.5)) == []
    m.pulse_unconfirmed("A01", now(8.0))
    assert m.tick(now(13.0)) == []
    ended = m.tick(now(13.1))
    assert kinds(ended) == ["open_not_detected"]
    assert m.compartments.get("A01").pending_open is None
    forced = m.poll_ok("b1", levels(c0=True), now(14.0))
    assert forced[0].event.details["authorised"] is False
