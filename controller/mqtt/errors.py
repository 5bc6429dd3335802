"""The MQTT link's errors (see :mod:`controller.mqtt.link` for the tree)."""

from __future__ import annotations

__all__ = ["LinkClosed", "LinkDown", "MqttLinkError", "PublishFailed"]


class MqttLinkError(Exception):
    """Root of the MQTT link's errors."""


class LinkDown(MqttLinkError, ConnectionError):
    """The link is not connected; the message was not sent. Retry after reconnect."""


class LinkClosed(LinkDown):
    """The link was closed; it will not reconnect."""


class PublishFailed(MqttLinkError, ConnectionError):
    """The message may have left, but the broker did not acknowledge it (connection lost,
    refused with an MQTT 5 reason code, or no PUBACK in time). Retry; consumers dedupe."""
