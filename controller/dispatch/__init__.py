"""The dispatch SDK: what a dispatch service needs to talk to cabinets over the MQTT
contract (docs/dispatch-sdk.md).

- :class:`DispatchClient`: one cabinet: subscriptions, persistent session, reconnection,
  signed commands and their replies (MQTT 5 correlation data, or the command id under
  MQTT 3.1.1), the cabinet's clock, each event once;
- :class:`CodeKeyPins`, :class:`PinnedCodeKey`: the cabinet's code key pinned at
  commissioning, the only key codes are sealed to (:class:`CodeKeyNotPinned`,
  :class:`CodeKeyChanged` otherwise);
- :class:`ClockTracker`: a cabinet's clock per boot, for command deadlines;
- :class:`EventTracker`: dedupe by event id, gap detection by sequence number.

It sits above the contract and security layers and below the tools and the lab; the
daemon never imports it.
"""

from __future__ import annotations

from controller.dispatch.client import BrokerError, DispatchClient, Received
from controller.dispatch.clock import ClockTracker, reading_of
from controller.dispatch.events import BootSpan, EventTracker, Gap, Verdict
from controller.dispatch.pins import (
    CodeKeyChanged,
    CodeKeyNotPinned,
    CodeKeyPinError,
    CodeKeyPins,
    PinnedCodeKey,
)

__all__ = [
    "BootSpan",
    "BrokerError",
    "ClockTracker",
    "CodeKeyChanged",
    "CodeKeyNotPinned",
    "CodeKeyPinError",
    "CodeKeyPins",
    "DispatchClient",
    "EventTracker",
    "Gap",
    "PinnedCodeKey",
    "Received",
    "Verdict",
    "reading_of",
]
