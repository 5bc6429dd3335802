"""MQTT topics as value objects: one cabinet's six topics and the filters dispatch uses.

Layout (``docs/mqtt/README.md``)::

    {topic_root}/{site}/{cabinet}/{channel}
    lockers/v1/fr-lyon-07/cab-01/events

``topic_root`` is one or more segments (``lockers/v1``). ``site`` and ``cabinet`` are each
one segment of ``[a-z0-9-]{1,32}``, so they can never hold a wildcard (``+``, ``#``), a
``/`` or anything a broker ACL pattern would read differently. Channels:

========== ===== === ======== ==============================================
channel    dir   QoS retained what
========== ===== === ======== ==============================================
status     out   1   yes      online/offline; the Last Will sets offline
state      out   1   yes      the full snapshot, on change, coalesced
events     out   1   no       the durable outbox: id, boot id, gap-free seq
cmd        in    1   no       commands from dispatch
reply      out   1   no       one reply per command (MQTT 3.1.1 fallback)
telemetry  out   0   no       health
========== ===== === ======== ==============================================

Nothing here touches a broker: these objects are built, compared and parsed in tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from controller.contract.errors import ContractError

__all__ = [
    "CHANNEL_QOS",
    "CHANNEL_RETAINED",
    "CabinetAddress",
    "CabinetTopics",
    "Channel",
    "DispatchFilters",
    "InvalidTopic",
    "validate_segment",
    "validate_topic_root",
]

SEGMENT_PATTERN = re.compile(r"[a-z0-9-]{1,32}")
_ROOT_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InvalidTopic(ContractError, ValueError):
    """A topic root, site or cabinet id that cannot be used in a topic."""


class Channel(StrEnum):
    """The last topic segment: what a message on it is."""

    STATUS = "status"
    STATE = "state"
    EVENTS = "events"
    CMD = "cmd"
    REPLY = "reply"
    TELEMETRY = "telemetry"


CHANNEL_QOS: dict[Channel, int] = {
    Channel.STATUS: 1,
    Channel.STATE: 1,
    Channel.EVENTS: 1,
    Channel.CMD: 1,
    Channel.REPLY: 1,
    Channel.TELEMETRY: 0,
}
CHANNEL_RETAINED: dict[Channel, bool] = {c: c in (Channel.STATUS, Channel.STATE) for c in Channel}


def validate_segment(value: str, what: str = "segment") -> str:
    """Return ``value`` if it is a valid site or cabinet id, else raise :class:`InvalidTopic`."""
    if not isinstance(value, str) or SEGMENT_PATTERN.fullmatch(value) is None:
        raise InvalidTopic(f"{what} {value!r} must match [a-z0-9-]{{1,32}}")
    return value


def validate_topic_root(value: str) -> str:
    """Return ``value`` if it is a usable root (``lockers/v1``), else raise :class:`InvalidTopic`.

    Segments are ``[A-Za-z0-9_.-]{1,64}``; no wildcard, no empty segment, no leading ``$``.
    """
    if not isinstance(value, str) or not value:
        raise InvalidTopic("topic root must be a non-empty string")
    for seg in value.split("/"):
        if _ROOT_SEGMENT.fullmatch(seg) is None:
            raise InvalidTopic(
                f"topic root {value!r}: segment {seg!r} must match [A-Za-z0-9_.-]{{1,64}}"
            )
    return value


@dataclass(frozen=True, slots=True)
class CabinetAddress:
    """Where a topic points: site, cabinet and channel (the result of parsing)."""

    site: str
    cabinet: str
    channel: Channel


@dataclass(frozen=True, slots=True)
class CabinetTopics:
    """The six topics of one cabinet. Construction validates every part.

    >>> t = CabinetTopics("lockers/v1", "fr-lyon-07", "cab-01")
    >>> t.events
    'lockers/v1/fr-lyon-07/cab-01/events'
    """

    topic_root: str
    site: str
    cabinet: str

    def __post_init__(self) -> None:
        validate_topic_root(self.topic_root)
        validate_segment(self.site, "site")
        validate_segment(self.cabinet, "cabinet")

    @property
    def base(self) -> str:
        """``{topic_root}/{site}/{cabinet}``."""
        return f"{self.topic_root}/{self.site}/{self.cabinet}"

    def topic(self, channel: Channel) -> str:
        """The full topic of ``channel``."""
        return f"{self.base}/{Channel(channel).value}"

    @property
    def status(self) -> str:
        return self.topic(Channel.STATUS)

    @property
    def state(self) -> str:
        return self.topic(Channel.STATE)

    @property
    def events(self) -> str:
        return self.topic(Channel.EVENTS)

    @property
    def cmd(self) -> str:
        return self.topic(Channel.CMD)

    @property
    def reply(self) -> str:
        return self.topic(Channel.REPLY)

    @property
    def telemetry(self) -> str:
        return self.topic(Channel.TELEMETRY)

    def all(self) -> dict[Channel, str]:
        """Every channel's topic."""
        return {c: self.topic(c) for c in Channel}

    def parse(self, topic: str) -> Channel | None:
        """The channel if ``topic`` is one of this cabinet's topics, else ``None``."""
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return None
        try:
            return Channel(topic[len(prefix):])
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class DispatchFilters:
    """Subscription filters for the dispatch side (and ``lockerctl watch``).

    ``site`` narrows to one site; ``None`` means every site (``+``).
    """

    topic_root: str
    site: str | None = None

    def __post_init__(self) -> None:
        validate_topic_root(self.topic_root)
        if self.site is not None:
            validate_segment(self.site, "site")

    def filter(self, channel: Channel, cabinet: str | None = None) -> str:
        """``{root}/{site|+}/{cabinet|+}/{channel}``."""
        site = self.site if self.site is not None else "+"
        cab = validate_segment(cabinet, "cabinet") if cabinet is not None else "+"
        return f"{self.topic_root}/{site}/{cab}/{Channel(channel).value}"

    @property
    def all_events(self) -> str:
        return self.filter(Channel.EVENTS)

    @property
    def all_status(self) -> str:
        return self.filter(Channel.STATUS)

    @property
    def all_state(self) -> str:
        return self.filter(Channel.STATE)

    @property
    def all_replies(self) -> str:
        return self.filter(Channel.REPLY)

    @property
    def all_telemetry(self) -> str:
        return self.filter(Channel.TELEMETRY)

    @property
    def everything(self) -> str:
        """``{root}/{site|+}/#``: every message of every matched cabinet."""
        site = self.site if self.site is not None else "+"
        return f"{self.topic_root}/{site}/#"

    def parse(self, topic: str) -> CabinetAddress | None:
        """Split a concrete topic under this root into site, cabinet and channel.

        Returns ``None`` for anything that is not exactly ``{root}/{site}/{cabinet}/{channel}``
        with valid parts (and, if this filter names a site, that site).
        """
        prefix = self.topic_root + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix):].split("/")
        if len(parts) != 3:
            return None
        site, cabinet, channel = parts
        if SEGMENT_PATTERN.fullmatch(site) is None or SEGMENT_PATTERN.fullmatch(cabinet) is None:
            return None
        if self.site is not None and site != self.site:
            return None
        try:
            return CabinetAddress(site, cabinet, Channel(channel))
        except ValueError:
            return None
