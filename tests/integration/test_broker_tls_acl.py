"""The deployed broker config against a real mosquitto: mutual TLS and per-cabinet ACLs.

The broker runs ``deploy/mosquitto/mosquitto.conf`` and its ACL file, copied into the test's
directory with only the paths and the port rewritten; the certificates come from
``deploy/tls/make-test-ca.sh``. Clients are plain paho-mqtt (MQTT 5) over TLS on loopback.

How "nothing reaches" is proven without waiting for silence: mosquitto is one thread and
queues a message to every matching subscriber before it acknowledges the publisher. So
once the forbidden publish was acknowledged (QoS 1) and a *sentinel* published after it
reached the spying client, any forbidden message would already have been ahead of the
sentinel on that client's connection. The tests assert on what legitimate subscribers
receive, not on timing.
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.services import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
DEPLOY_ACL = REPO / "deploy" / "mosquitto" / "acl"
MAKE_CA = REPO / "deploy" / "tls" / "make-test-ca.sh"

SITE = "fr-lyon-07"
ROOT_A = f"lockers/v1/{SITE}/cab-01"
ROOT_B = f"lockers/v1/{SITE}/cab-02"
OTHER_SITE = "fr-paris-01"
ROOT_P = f"lockers/v1/{OTHER_SITE}/cab-01"
WAIT_S = 10.0  # upper bound for one broker round trip; never an assertion
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87


if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
    pytest.skip("mosquitto is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh test PKI from the deploy script: CA, broker, two cabinets of one site and one
    of another, two dispatch instances, a technician per site, monitoring, plus an
    unrelated CA and an expired certificate."""
    out = tmp_path_factory.mktemp("pki")
    subprocess.run(["bash", str(MAKE_CA), str(out), f"{SITE}/cab-01", f"{SITE}/cab-02",
                    f"{OTHER_SITE}/cab-01"], check=True, capture_output=True, timeout=60)
    return out


class TlsMosquitto(MosquittoProcess):
    """mosquitto running the deployed config, with its paths pointed at the test's files."""

    name = "mosquitto-tls"

    def __init__(self, workdir: Path, pki: Path) -> None:
        super().__init__(workdir)
        self.pki = pki

    def _argv(self) -> list[str]:
        conf = DEPLOY_CONF.read_text()
        acl = self.workdir / "acl"
        shutil.copyfile(DEPLOY_ACL, acl)
        for old, new in [
            ("acl_file /etc/mosquitto/locker/acl", f"acl_file {acl}"),
            ("/etc/mosquitto/locker/", f"{self.pki}/"),
            ("\nlistener 8883\n", f"\nlistener {self.port} 127.0.0.1\n"),
            ("persistence_location /var/lib/mosquitto/",
             f"persistence_location {self.workdir}/"),
        ]:
            assert old in conf, f"deploy config no longer contains {old!r}"
            conf = conf.replace(old, new)
        # Keep our own user (started as root, mosquitto would drop to "mosquitto", which
        # cannot read the test's 0600 keys).
        conf += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
        path = self.workdir / "mosquitto.conf"
        path.write_text(conf)
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(path)]


@pytest.fixture
def broker(tmp_path: Path, pki: Path) -> Iterator[TlsMosquitto]:
    server = TlsMosquitto(tmp_path / "broker", pki)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Identity:
    cert: Path | None
    key: Path | None


def identity(pki: Path, name: str) -> Identity:
    return Identity(pki / f"{name}.crt", pki / f"{name}.key")


class Client:
    """A threaded paho client with blocking helpers; every wait is bounded by WAIT_S."""

    def __init__(self, port: int, pki: Path, who: Identity, client_id: str = "") -> None:
        self.port = port
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self._acks: dict[int, queue.Queue[list[ReasonCode] | ReasonCode]] = {}
        self._lock = threading.Lock()
        self.paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                protocol=mqtt.MQTTv5)
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if who.cert is not None and who.key is not None:
            context.load_cert_chain(str(who.cert), str(who.key))
        self.paho.tls_set_context(context)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_publish = self._on_publish

    # paho callbacks (network thread)
    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: Properties | None) -> None:
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()
        else:
            self.disconnected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, _rc: ReasonCode,
                       _p: Properties | None) -> None:
        self.disconnected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _ack_queue(self, mid: int) -> queue.Queue[list[ReasonCode] | ReasonCode]:
        with self._lock:
            return self._acks.setdefault(mid, queue.Queue())

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode],
                      _p: Properties | None) -> None:
        self._ack_queue(mid).put(list(codes))

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: Properties | None) -> None:
        self._ack_queue(mid).put(rc)

    # blocking helpers (test thread)
    def connect(self) -> bool:
        """True if the broker accepted the connection (CONNACK success)."""
        try:
            self.paho.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False  # the TLS handshake failed before MQTT
        self.paho.loop_start()
        # TLS 1.3 sends the client certificate after the client considers the handshake
        # done, so a refused certificate shows up as a closed connection instead of CONNACK.
        for _ in range(int(WAIT_S / 0.05)):
            if self.connected.is_set() or self.disconnected.is_set():
                break
            self.connected.wait(0.05)
        return self.connected.is_set() and not self.disconnected.is_set()

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        _, mid = self.paho.subscribe([(t, 1) for t in topics])
        assert mid is not None
        codes = self._ack_queue(mid).get(timeout=WAIT_S)
        assert isinstance(codes, list)
        return codes

    def publish(self, topic: str, payload: str, *, qos: int = 1, retain: bool = False) -> int:
        """Publish; for QoS 1 wait for the PUBACK and return its reason code value."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        assert info.mid is not None
        code = self._ack_queue(info.mid).get(timeout=WAIT_S)
        assert isinstance(code, ReasonCode)
        return code.value

    def until(self, topic: str, payload: bytes) -> list[tuple[str, bytes, bool]]:
        """Every message received up to and including (topic, payload)."""
        seen: list[tuple[str, bytes, bool]] = []
        while True:
            message = self.messages.get(timeout=WAIT_S)
            seen.append(message)
            if message[:2] == (topic, payload):
                return seen

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()
        close_socket(self.paho)


def close_socket(client: mqtt.Client) -> None:
    """Close what paho leaves open after a refused connection (no ResourceWarning later)."""
    sock = client.socket()
    if sock is not None:
        sock.close()


class ClientFactory(Protocol):
    def __call__(self, name: str, client_id: str = "") -> Client: ...


@pytest.fixture
def connect(broker: TlsMosquitto, pki: Path) -> Iterator[ClientFactory]:
    """Connect as the identity whose files are ``{name}.crt/.key``; closed after the test."""
    clients: list[Client] = []

    def make(name: str, client_id: str = "") -> Client:
        client = Client(broker.port, pki, identity(pki, name), client_id)
        clients.append(client)
        assert client.connect(), f"{name} could not connect: {client.connack}"
        return client

    yield make
    for client in clients:
        client.close()


# -- TLS: who may connect at all ----------------------------------------------------------------


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process ``pid`` listens on (Linux /proc: its socket inodes in LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_broker_listens_on_the_tls_port_only(broker: TlsMosquitto) -> None:
    # Listener options placed above the listener line make mosquitto open a plaintext
    # default listener on 1883: the deployed config must open exactly one port.
    assert broker.pid is not None
    assert listening_ports(broker.pid) == {broker.port}


def test_cabinet_with_its_certificate_connects(broker: TlsMosquitto, pki: Path) -> None:
    client = Client(broker.port, pki, identity(pki, "cabinet-fr-lyon-07-cab-01"))
    try:
        assert client.connect()
    finally:
        client.close()


@pytest.mark.parametrize("who", [
    Identity(None, None),
    Identity(Path("other-ca/client.crt"), Path("other-ca/client.key")),
    Identity(Path("expired.crt"), Path("expired.key")),
    Identity(Path("revoked.crt"), Path("revoked.key")),
], ids=["no-client-certificate", "certificate-from-another-ca", "expired-certificate",
        "revoked-certificate"])
def test_connection_without_a_valid_client_certificate_is_refused(
    broker: TlsMosquitto, pki: Path, who: Identity,
) -> None:
    # The other CA's and the expired certificate both carry cabinet cab-01's CN.
    resolved = Identity(pki / who.cert if who.cert else None, pki / who.key if who.key else None)
    client = Client(broker.port, pki, resolved)
    try:
        assert not client.connect()
        assert client.connack is None or client.connack.is_failure
    finally:
        client.close()


def test_plain_mqtt_without_tls_is_refused(broker: TlsMosquitto) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    acked, closed = threading.Event(), threading.Event()
    client.on_connect = lambda *_args: acked.set()
    client.on_disconnect = lambda *_args: closed.set()
    try:
        client.connect("127.0.0.1", broker.port, keepalive=30)
    except OSError:
        return  # refused at the socket: also a refusal
    client.loop_start()
    try:
        closed.wait(WAIT_S)  # the broker drops a non-TLS byte stream
        assert closed.is_set()
        assert not acked.is_set()
    finally:
        client.loop_stop()
        close_socket(client)


# -- ACL: cabinets stay in their own subtree -----------------------------------------------------


def test_cabinet_cannot_read_another_cabinets_topics_even_with_wildcards(
    connect: ClientFactory,
) -> None:
    spy = connect("cabinet-fr-lyon-07-cab-01")
    cabinet_b = connect("cabinet-fr-lyon-07-cab-02")
    dispatch = connect("dispatch")
    filters = ["#", "lockers/v1/#", "lockers/v1/+/+/cmd", f"{ROOT_B}/cmd", f"{ROOT_B}/#",
               "lockers/v1/+/+/events", "$SYS/#"]
    codes = spy.subscribe(*filters)
    # Mosquitto 2.0 grants every filter and checks read access per message; a broker
    # refusing the filter (0x87) would be as good.
    assert all(c.value in (0, 1, NOT_AUTHORIZED) for c in codes), codes
    assert [c.value for c in cabinet_b.subscribe(f"{ROOT_B}/cmd")] == [1]
    assert [c.value for c in dispatch.subscribe("lockers/v1/+/+/events")] == [1]

    # B's traffic: a command for B and an event from B, both delivered to their readers.
    assert dispatch.publish(f"{ROOT_B}/cmd", "open B01") == 0
    assert cabinet_b.publish(f"{ROOT_B}/events", "B picked up") == 0
    assert cabinet_b.until(f"{ROOT_B}/cmd", b"open B01")[-1][1] == b"open B01"
    assert dispatch.until(f"{ROOT_B}/events", b"B picked up")[-1][1] == b"B picked up"

    # Sentinel to the spy's own command topic, published after B's traffic was acked.
    assert dispatch.publish(f"{ROOT_A}/cmd", "sentinel") == 0
    received = spy.until(f"{ROOT_A}/cmd", b"sentinel")
    assert {topic for topic, _, _ in received} == {f"{ROOT_A}/cmd"}, received


def test_cabinet_cannot_publish_to_another_cabinets_topics(connect: ClientFactory) -> None:
    intruder = connect("cabinet-fr-lyon-07-cab-01")
    cabinet_b = connect("cabinet-fr-lyon-07-cab-02")
    dispatch = connect("dispatch")
    cabinet_b.subscribe(f"{ROOT_B}/cmd")
    dispatch.subscribe(*(f"lockers/v1/+/+/{leaf}"
                         for leaf in ("status", "state", "events", "reply", "telemetry")))

    # A forged command to B, and forged reports in B's name; QoS 1 gets "not authorized".
    for leaf in ("cmd", "events", "status", "state", "reply", "telemetry"):
        assert intruder.publish(f"{ROOT_B}/{leaf}", f"forged {leaf}") == NOT_AUTHORIZED, leaf
    # QoS 0 is dropped without an answer; the sentinel below proves it went nowhere.
    intruder.paho.publish(f"{ROOT_B}/cmd", "forged qos0", qos=0)
    # A cabinet never commands, not even itself.
    assert intruder.publish(f"{ROOT_A}/cmd", "self-command") == NOT_AUTHORIZED
    # A retained forgery would be handed to every future subscriber: also refused.
    assert intruder.publish(f"{ROOT_B}/state", "forged retained", retain=True) == NOT_AUTHORIZED

    assert dispatch.publish(f"{ROOT_B}/cmd", "sentinel-cmd") == 0
    assert cabinet_b.until(f"{ROOT_B}/cmd", b"sentinel-cmd") == [
        (f"{ROOT_B}/cmd", b"sentinel-cmd", False)]
    assert cabinet_b.publish(f"{ROOT_B}/events", "sentinel-event") == 0
    assert dispatch.until(f"{ROOT_B}/events", b"sentinel-event") == [
        (f"{ROOT_B}/events", b"sentinel-event", False)]

    # A fresh reader of B's state gets no retained forgery (retained messages are sent at
    # subscription, before anything published after it).
    late = connect("dispatch")  # same identity: replaces the first dispatch session
    late.subscribe(f"{ROOT_B}/state", f"{ROOT_B}/events")
    assert cabinet_b.publish(f"{ROOT_B}/events", "sentinel-2") == 0
    assert late.until(f"{ROOT_B}/events", b"sentinel-2") == [
        (f"{ROOT_B}/events", b"sentinel-2", False)]


def test_client_id_cannot_take_over_another_identitys_session(connect: ClientFactory) -> None:
    dispatch = connect("dispatch")
    dispatch.subscribe(f"{ROOT_A}/events")
    # The cabinet asks for dispatch's client id; the broker uses its CN instead, so
    # dispatch is not kicked off.
    cabinet = connect("cabinet-fr-lyon-07-cab-01", client_id="dispatch")
    assert cabinet.publish(f"{ROOT_A}/events", "still here?") == 0
    assert dispatch.until(f"{ROOT_A}/events", b"still here?")[-1][1] == b"still here?"
    assert not dispatch.disconnected.is_set()


# -- ACL: dispatch reads everything, commands every cabinet --------------------------------------


def test_dispatch_reads_all_cabinets_and_commands_each(connect: ClientFactory) -> None:
    dispatch = connect("dispatch")
    cabinet_a = connect("cabinet-fr-lyon-07-cab-01")
    cabinet_b = connect("cabinet-fr-lyon-07-cab-02")
    leaves = ("status", "state", "events", "reply", "telemetry")
    dispatch.subscribe(*(f"lockers/v1/+/+/{leaf}" for leaf in leaves))
    cabinet_a.subscribe(f"{ROOT_A}/cmd")
    cabinet_b.subscribe(f"{ROOT_B}/cmd")

    expected = set()
    for cabinet, root in ((cabinet_a, ROOT_A), (cabinet_b, ROOT_B)):
        for leaf in leaves:
            assert cabinet.publish(f"{root}/{leaf}", f"{root} {leaf}",
                                   retain=leaf in ("status", "state")) == 0
            expected.add((f"{root}/{leaf}", f"{root} {leaf}".encode()))
    got: set[tuple[str, bytes]] = set()
    while got != expected:
        topic, payload, _ = dispatch.messages.get(timeout=WAIT_S)
        got.add((topic, payload))

    assert dispatch.publish(f"{ROOT_A}/cmd", "open A01") == 0
    assert dispatch.publish(f"{ROOT_B}/cmd", "open B01") == 0
    assert cabinet_a.until(f"{ROOT_A}/cmd", b"open A01") == [(f"{ROOT_A}/cmd", b"open A01",
                                                              False)]
    assert cabinet_b.until(f"{ROOT_B}/cmd", b"open B01") == [(f"{ROOT_B}/cmd", b"open B01",
                                                              False)]

    # Dispatch cannot forge what a cabinet reports.
    assert dispatch.publish(f"{ROOT_A}/events", "forged by dispatch") == NOT_AUTHORIZED
    assert cabinet_a.publish(f"{ROOT_A}/events", "sentinel") == 0
    assert dispatch.until(f"{ROOT_A}/events", b"sentinel") == [(f"{ROOT_A}/events",
                                                                b"sentinel", False)]


# -- Roles: several dispatch instances, technicians of a site, monitoring ---------------------


def test_two_dispatch_instances_are_connected_at_once(connect: ClientFactory) -> None:
    first = connect("dispatch")
    second = connect("dispatch-2")
    cabinet = connect("cabinet-fr-lyon-07-cab-01")
    for instance in (first, second):
        assert [c.value for c in instance.subscribe(f"{ROOT_A}/events")] == [1]
    assert cabinet.publish(f"{ROOT_A}/events", "to both") == 0
    for instance in (first, second):
        assert instance.until(f"{ROOT_A}/events", b"to both")[-1][1] == b"to both"
    # Both still connected, and both may command.
    # (16: accepted, "no matching subscribers")
    assert first.publish(f"{ROOT_A}/cmd", "from one") in (0, 16)
    assert second.publish(f"{ROOT_A}/cmd", "from two") in (0, 16)
    assert not first.disconnected.is_set()
    assert not second.disconnected.is_set()


def test_one_certificate_used_twice_keeps_only_the_newest_connection(
    connect: ClientFactory,
) -> None:
    # Why every running instance needs its own certificate: the client id is the CN.
    first = connect("dispatch")
    connect("dispatch")
    assert first.disconnected.wait(WAIT_S)


LEAVES = ("status", "state", "events", "telemetry", "reply", "reply/to/dispatch-7f3a", "cmd")
CABINETS = {"cabinet-fr-lyon-07-cab-01": ROOT_A, "cabinet-fr-lyon-07-cab-02": ROOT_B,
            "cabinet-fr-paris-01-cab-01": ROOT_P}
REPORTS = ("status", "state", "events", "telemetry", "reply", "reply/to/dispatch-7f3a")


def _topics(roots: tuple[str, ...], leaves: tuple[str, ...]) -> set[str]:
    return {f"{root}/{leaf}" for root in roots for leaf in leaves}


ALL = (ROOT_A, ROOT_B, ROOT_P)
LYON = (ROOT_A, ROOT_B)
# role -> (what it may read, what it may write); anything else is denied.
ROLES: dict[str, tuple[set[str], set[str]]] = {
    "dispatch": (_topics(ALL, REPORTS), _topics(ALL, ("cmd",))),
    "dispatch-2": (_topics(ALL, REPORTS), _topics(ALL, ("cmd",))),
    "technician-fr-lyon-07": (
        _topics(LYON, ("status", "state", "events", "reply", "reply/to/dispatch-7f3a")),
        _topics(LYON, ("cmd",))),
    "monitoring": (_topics(ALL, ("status", "state", "events", "telemetry")), set()),
    "cabinet-fr-lyon-07-cab-01": (_topics((ROOT_A,), ("cmd",)), _topics((ROOT_A,), REPORTS)),
}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_can_do_exactly_what_it_should(connect: ClientFactory, role: str) -> None:
    readable, writable = ROLES[role]
    clients = {name: connect(name) for name in (*CABINETS, "dispatch")}
    me = clients.get(role) or connect(role)

    # Write: every cabinet topic, and a reply topic outside any cabinet's tree.
    for topic in sorted(_topics(ALL, LEAVES) | {"dispatch/replies/dispatch-7f3a"}):
        code = me.publish(topic, f"by {role}")
        # Accepted: 0, or 16 "no matching subscribers"; refused: 135 "not authorized".
        assert code == NOT_AUTHORIZED if topic not in writable else code in (0, 16), \
            (role, topic, code)

    # Read: subscribed to everything, it receives exactly what it may read. Each topic is
    # published by its rightful writer, then a sentinel it may read closes the run.
    assert all(c.value in (1, NOT_AUTHORIZED) for c in me.subscribe("#"))
    while not me.messages.empty():  # its own permitted publishes above, if it reads them
        me.messages.get_nowait()
    for root, cabinet in ((r, n) for n, r in CABINETS.items()):
        for leaf in LEAVES:
            writer = clients["dispatch"] if leaf == "cmd" else clients[cabinet]
            assert writer.publish(f"{root}/{leaf}", "m") in (0, 16)
    sentinel = sorted(readable)[0]
    owner = next(n for n, r in CABINETS.items() if sentinel.startswith(r + "/"))
    writer = clients["dispatch"] if sentinel.endswith("/cmd") else clients[owner]
    assert writer.publish(sentinel, "sentinel") == 0  # "me" subscribes to it
    received = me.until(sentinel, b"sentinel")
    assert {topic for topic, payload, _ in received if payload == b"m"} == readable


# The broker identity each role connects with (the CN of its certificate).
ROLE_CN = {"dispatch": "dispatch", "dispatch-2": "dispatch.2",
           "technician-fr-lyon-07": "technician.fr-lyon-07", "monitoring": "monitoring"}


@pytest.mark.parametrize("role", sorted(ROLE_CN))
def test_no_role_can_write_what_reads_as_a_cabinets_report(connect: ClientFactory,
                                                           role: str) -> None:
    """The cabinet patterns put a broker identity in place of SITE/CABINET: for a role's
    name (no slash) a topic under its reply tree must never have the shape of a cabinet's
    status, state, events, telemetry or reply, which dispatch reads with + wildcards."""
    me = connect(role)
    cn = ROLE_CN[role]
    for leaf in ("status", "state", "events", "telemetry"):
        assert me.publish(f"lockers/v1/{cn}/reply/{leaf}", "forged") == NOT_AUTHORIZED, leaf
    # What the pattern does let it write is one level deeper than any cabinet report.
    # (The spy is another dispatch instance when the role is dispatch: one identity, one
    # connection.)
    dispatch = connect("dispatch-2" if role == "dispatch" else "dispatch")
    assert all(c.value in (1, NOT_AUTHORIZED) for c in dispatch.subscribe("lockers/v1/#"))
    assert me.publish(f"lockers/v1/{cn}/reply/to/status", "forged") in (0, 16)
    sentinel = f"{ROOT_A}/status"
    assert connect("cabinet-fr-lyon-07-cab-01").publish(sentinel, "sentinel") in (0, 16)
    received = dispatch.until(sentinel, b"sentinel")
    for topic, payload, _ in received:
        if payload == b"forged":  # seen only because dispatch subscribed to everything
            assert len(topic.split("/")) == 6, topic


# -- revocation, sizes, cipher suites ---------------------------------------------------------


CRL_SCRIPT = REPO / "deploy" / "tls" / "crl.sh"


def _connects(port: int, pki: Path, name: str) -> bool:
    client = Client(port, pki, identity(pki, name))
    try:
        return client.connect()
    finally:
        client.close()


def _until_connects(port: int, pki: Path, name: str) -> bool:
    """Whether ``name`` connects within WAIT_S (the broker applies a SIGHUP asynchronously)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if _connects(port, pki, name):
            return True
    return False


def test_expired_crl_refuses_everyone_and_the_documented_refresh_restores_service(
    tmp_path: Path,
) -> None:
    """The CRL that locks the fleet out when it expires, and the refresh path (crl.sh, then
    SIGHUP) that brings it back without a restart; the same path revokes a stolen cabinet."""
    pki = tmp_path / "pki"
    subprocess.run(["bash", str(MAKE_CA), str(pki), f"{SITE}/cab-01", f"{SITE}/cab-02"],
                   check=True, capture_output=True, timeout=60)
    # Time passes: the CRL's nextUpdate is behind us.
    subprocess.run(["openssl", "ca", "-config", str(pki / "ca-db" / "openssl.cnf"), "-gencrl",
                    "-crl_lastupdate", "20200101000000Z", "-crl_nextupdate",
                    "20200102000000Z", "-out", str(pki / "crl.pem")],
                   check=True, capture_output=True, timeout=30)
    server = TlsMosquitto(tmp_path / "broker", pki)
    server.start()
    try:
        assert not _connects(server.port, pki, "dispatch")
        assert not _connects(server.port, pki, "cabinet-fr-lyon-07-cab-01")
        refresh = subprocess.run(["bash", str(CRL_SCRIPT), str(pki / "ca-db"),
                                  str(pki / "crl.pem")],
                                 check=True, capture_output=True, text=True, timeout=30)
        assert refresh.stdout.startswith("nextUpdate=")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert _until_connects(server.port, pki, "dispatch")
        assert _connects(server.port, pki, "cabinet-fr-lyon-07-cab-02")

        # A stolen cabinet: its certificate revoked, the CRL reloaded; the others unaffected.
        stolen = Client(server.port, pki, identity(pki, "cabinet-fr-lyon-07-cab-02"))
        assert stolen.connect()
        subprocess.run(["bash", str(CRL_SCRIPT), str(pki / "ca-db"), str(pki / "crl.pem"),
                        "--revoke", str(pki / "cabinet-fr-lyon-07-cab-02.crt")],
                       check=True, capture_output=True, timeout=30)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_S
        while _connects(server.port, pki, "cabinet-fr-lyon-07-cab-02"):
            assert time.monotonic() < deadline, "revoked certificate still accepted"
        assert _connects(server.port, pki, "cabinet-fr-lyon-07-cab-01")
        stolen.close()
    finally:
        server.stop()


def test_a_cabinet_cannot_park_a_huge_retained_message(connect: ClientFactory) -> None:
    cabinet = connect("cabinet-fr-lyon-07-cab-01")
    watcher = connect("dispatch")
    watcher.subscribe(f"{ROOT_A}/state")
    # A legitimate large snapshot still passes.
    assert cabinet.publish(f"{ROOT_A}/state", "s" * 100_000, retain=True) == 0
    huge = "x" * (50 * 1024 * 1024)
    info = cabinet.paho.publish(f"{ROOT_A}/state", huge, qos=1, retain=True)
    assert cabinet.disconnected.wait(WAIT_S), "the broker kept a client sending 50 MB"
    del huge, info
    # Nobody receives it, live or retained: a new subscriber gets the 100 kB snapshot.
    again = connect("cabinet-fr-lyon-07-cab-01", client_id="")
    late = connect("dispatch-2")
    late.subscribe(f"{ROOT_A}/state")
    sentinel = b"sentinel"
    assert again.publish(f"{ROOT_A}/state", sentinel.decode()) == 0
    live = watcher.until(f"{ROOT_A}/state", sentinel)
    assert [len(p) for _, p, _ in live] == [100_000, len(sentinel)]
    stored = late.until(f"{ROOT_A}/state", sentinel)
    assert [len(p) for _, p, retained in stored if retained] == [100_000]


def _handshake(port: int, pki: Path, ciphers: str) -> str | None:
    """The suite negotiated over TLS 1.2 offering only ``ciphers``, or None if refused."""
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "dispatch.crt"), str(pki / "dispatch.key"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            negotiated = tls.cipher()
            return negotiated[0] if negotiated else None
    except (ssl.SSLError, ConnectionError):
        return None


def test_tls_1_2_offers_only_forward_secret_aead_suites(broker: TlsMosquitto, pki: Path) -> None:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.set_ciphers("ALL:@SECLEVEL=0")
    tls12 = [c["name"] for c in probe.get_ciphers() if c["protocol"] == "TLSv1.2"]
    accepted = {name for name in tls12 if _handshake(broker.port, pki, name) == name}
    assert accepted, "no TLS 1.2 suite accepted at all"
    assert all(("GCM" in n or "CHACHA20" in n) and n.startswith("ECDHE") for n in accepted), \
        accepted
    for cbc_sha1 in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"):
        assert _handshake(broker.port, pki, cbc_sha1) is None
