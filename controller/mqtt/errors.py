"""The MQTT link's errors (see :mod:`controller.mqtt.link` for the tree). Each is a
:class:`controller.services.ports.PublishError`: the services catch the port's error and
never import the link."""

from __future__ import annotations

from controller.services.ports import PublishError

__all__ = ["LinkClosed", "LinkDown", "MqttLinkError", "PublishFailed"]


class MqttLinkError(PublishError):
    """Root of the MQTT link's errors."""


class LinkDown(MqttLinkError, ConnectionError):
    """The link is not connected; the message was not sent. Retry after reconnect."""


class LinkClosed(LinkDown):
    """The link was closed; it will not reconnect."""


class PublishFailed(MqttLinkError, ConnectionError):
    """The message may have left, but the broker did not acknowledge it (connection lost,
    refused with an MQTT 5 reason code, or no PUBACK in time). Retry; consumers dedupe."""
