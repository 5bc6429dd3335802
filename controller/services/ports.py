"""What the services need from the outside world, as ports: the MQTT link (a layer above)
implements them, so the services never import it.

Error tree::

    PublishError (ConnectionError)   the message did not reach the broker, or its
                                     acknowledgement did not come back: retry later
                                     (the link's LinkDown and PublishFailed are ones)
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["PublishError", "Publisher"]


class PublishError(ConnectionError):
    """A publish that did not end with the broker's acknowledgement. Nothing is known to
    have been delivered: the caller keeps the message and publishes it again later;
    consumers dedupe (events by id)."""


class Publisher(Protocol):
    """Publishes one message at QoS 1 and returns once the broker acknowledged *it*.

    Raises :class:`PublishError` otherwise (not connected, connection lost before the
    acknowledgement, refused by the broker). Calls started one after another reach the
    broker in that order (one connection, one topic: MQTT keeps QoS 1 messages of a
    topic in order), so several may be in flight at once.
    """

    async def __call__(self, topic: str, payload: bytes) -> None: ...
