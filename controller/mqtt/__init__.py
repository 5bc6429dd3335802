"""The MQTT link to dispatch. The only place paho-mqtt and aiomqtt are imported.

:class:`~controller.mqtt.link.MqttLink` connects, keeps the session, publishes with
broker acknowledgement and hands incoming commands to the daemon; the payloads and topics
it carries are defined in :mod:`controller.contract`.
"""

from controller.mqtt.link import (
    IncomingCommand,
    LinkClosed,
    LinkDown,
    LinkSnapshot,
    MqttLink,
    MqttLinkError,
    MqttLinkSettings,
    PublishFailed,
    StatusFactory,
)

__all__ = [
    "IncomingCommand",
    "LinkClosed",
    "LinkDown",
    "LinkSnapshot",
    "MqttLink",
    "MqttLinkError",
    "MqttLinkSettings",
    "PublishFailed",
    "StatusFactory",
]
