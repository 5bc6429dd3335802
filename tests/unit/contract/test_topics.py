"""Topic value objects, without a broker."""

from __future__ import annotations

import pytest

from controller.contract.topics import (
    CHANNEL_QOS,
    CHANNEL_RETAINED,
    CabinetAddress,
    CabinetTopics,
    Channel,
    DispatchFilters,
    InvalidTopic,
)


def test_cabinet_topics_are_root_site_cabinet_channel() -> None:
    t = CabinetTopics("lockers/v1", "fr-lyon-07", "cab-01")
    assert t.base == "lockers/v1/fr-lyon-07/cab-01"
    assert t.status == "lockers/v1/fr-lyon-07/cab-01/status"
    assert t.state == "lockers/v1/fr-lyon-07/cab-01/state"
    assert t.events == "lockers/v1/fr-lyon-07/cab-01/events"
    assert t.cmd == "lockers/v1/fr-lyon-07/cab-01/cmd"
    assert t.reply == "lockers/v1/fr-lyon-07/cab-01/reply"
    assert t.telemetry == "lockers/v1/fr-lyon-07/cab-01/telemetry"
    assert set(t.all()) == set(Channel)


@pytest.mark.parametrize(
    ("site", "cabinet"),
    [("fr+lyon", "cab-01"), ("fr-lyon", "cab/01"), ("#", "cab"), ("", "cab"), ("Site", "cab"),
     ("a" * 33, "cab"), ("site", "cab 1"), ("site", "cab\x00")],
)
def test_segments_with_wildcards_slashes_or_bad_chars_are_refused(site: str, cabinet: str) -> None:
    with pytest.raises(InvalidTopic):
        CabinetTopics("lockers/v1", site, cabinet)


@pytest.mark.parametrize("root", ["", "/lockers", "lockers/", "lockers//v1", "lockers/+", "a/#",
                                  "$SYS/x"])
def test_bad_roots_are_refused(root: str) -> None:
    with pytest.raises(InvalidTopic):
        CabinetTopics(root, "s", "c")


def test_invalid_topic_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cabinet"):
        CabinetTopics("lockers/v1", "s", "c/d")


def test_parse_own_topic() -> None:
    t = CabinetTopics("lockers/v1", "s1", "c1")
    assert t.parse("lockers/v1/s1/c1/cmd") is Channel.CMD
    assert t.parse("lockers/v1/s1/c2/cmd") is None
    assert t.parse("lockers/v1/s1/c1/nope") is None
    assert t.parse("lockers/v1/s1/c1/cmd/x") is None


def test_dispatch_filters() -> None:
    f = DispatchFilters("lockers/v1")
    assert f.all_events == "lockers/v1/+/+/events"
    assert f.all_status == "lockers/v1/+/+/status"
    assert f.all_replies == "lockers/v1/+/+/reply"
    assert f.everything == "lockers/v1/+/#"
    assert f.filter(Channel.STATE, cabinet="cab-01") == "lockers/v1/+/cab-01/state"
    one_site = DispatchFilters("lockers/v1", site="fr-lyon-07")
    assert one_site.all_events == "lockers/v1/fr-lyon-07/+/events"
    with pytest.raises(InvalidTopic):
        f.filter(Channel.STATE, cabinet="+")


def test_dispatch_parse() -> None:
    f = DispatchFilters("lockers/v1")
    assert f.parse("lockers/v1/s/c/events") == CabinetAddress("s", "c", Channel.EVENTS)
    assert f.parse("lockers/v1/s/c/events/x") is None
    assert f.parse("lockers/v2/s/c/events") is None
    assert f.parse("lockers/v1/S/c/events") is None
    assert DispatchFilters("lockers/v1", site="x").parse("lockers/v1/s/c/events") is None


def test_qos_and_retain_table() -> None:
    assert CHANNEL_RETAINED[Channel.STATUS]
    assert CHANNEL_RETAINED[Channel.STATE]
    assert not any(CHANNEL_RETAINED[c] for c in (Channel.EVENTS, Channel.CMD, Channel.REPLY,
                                                Channel.TELEMETRY))
    assert CHANNEL_QOS[Channel.TELEMETRY] == 0
    assert all(CHANNEL_QOS[c] == 1 for c in Channel if c is not Channel.TELEMETRY)
