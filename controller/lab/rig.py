"""A whole simulated lane on one machine: broker, store, simulator and daemon as processes.

Used by ``lockerctl demo`` and by the integration and fault tests, so that what the
demo shows is what the tests check. Every process is started here, on free loopback
ports, in one work directory, and stopped (or killed) by its process id; nothing is
left behind by :meth:`LaneRig.close`.

The rig writes the cabinet config from a template (the packaged demo cabinet,
``controller/data/sim-cabinet.toml``, also reachable as ``deploy/sim-cabinet.toml``, by
default), pointing the bus at the simulator's pty link, MQTT at the rig's broker, Redis
at the rig's store, and the dispatch public key at a key pair it generates, with
``require_signed_commands = true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controller.dispatch.pins import PinnedCodeKey

__all__ = [
    "LaneRig", "SimControl", "binary", "free_port", "mosquitto_argv", "redis_argv",
    "wait_for_port",
]

# Package data, so that `lockerctl demo` runs from an installed wheel.
DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "data" / "sim-cabinet.toml"


#: Ports :func:`free_port` has handed out in this process: never handed out twice. A rig
#: draws its broker's, store's and simulator's ports before starting any of them, so a
#: second draw of a port still unbound would give two servers one port. Then the second
#: server fails to bind, and a wait for it is answered by the first.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1 for a server started next, drawn below the kernel's
    ephemeral range: a port the kernel hands out for ``bind(0)`` is one it also hands out as
    the source port of outgoing connections, which can take it before the server binds.
    Never one this process was given before (:data:`_HANDED_OUT`)."""
    low, high = _server_ports()
    for _ in range(200):  # bounded: a busy range falls back to the kernel's choice
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    for _ in range(200):  # bounded, as above
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1 that was not handed out before")


def _server_ports() -> tuple[int, int]:
    """Ports no outgoing connection is given: the 8192 below the ephemeral range."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return max(1024, first - 8192), max(1025, first - 1)


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once something listens on 127.0.0.1:``port``; raise if ``proc`` exits first
    or nothing listens within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def binary(name: str) -> str:
    """Path of a system program (mosquitto, redis-server), also outside PATH in sbin."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"{name} is not installed (the README's set-up installs it)")


def mosquitto_argv(
    workdir: Path, port: int, *, persistence: bool = True, extra_config: str = ""
) -> list[str]:
    """A mosquitto on 127.0.0.1:``port``, anonymous, its config and persistence file in
    ``workdir`` (persistent sessions and queued QoS 1 messages survive a restart)."""
    conf = workdir / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Started as root, mosquitto would switch to its own user and then fail to write
        # its persistence file here, losing persistent sessions on restart.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {workdir}/",
        "autosave_interval 1",
        "max_queued_messages 100000",
        # A reply that follows a PUBACK to the same client would otherwise wait for that
        # client's delayed TCP ACK (40 ms): see deploy/mosquitto/mosquitto.conf.
        "set_tcp_nodelay true",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        extra_config,
    ]
    conf.write_text("\n".join(lines) + "\n")
    return [binary("mosquitto"), "-c", str(conf)]


def redis_argv(datadir: Path, port: int, *, durable: bool = True) -> list[str]:
    """A redis-server on 127.0.0.1:``port`` with its files in ``datadir``; ``durable``
    gives the production settings (append-only file, fsync on every write)."""
    argv = [
        binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(datadir), "--save", "", "--daemonize", "no", "--protected-mode", "yes",
    ]
    if durable:
        return [*argv, "--appendonly", "yes", "--appendfsync", "always"]
    return [*argv, "--appendonly", "no"]


def _script(name: str) -> list[str]:
    """A console script of this project, from the same environment as this Python."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    module = {"locker-sim": "simulator.cli", "locker-controller": "controller.daemon"}[name]
    return [sys.executable, "-m", module]


class SimControl:
    """Client of the simulator's control channel (JSON lines on loopback)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, op: str, **fields: Any) -> Any:
        request = json.dumps({"op": op, **fields}).encode() + b"\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if not reply.get("ok"):
            raise RuntimeError(f"simulator refused {op}: {reply.get('error')}")
        return reply.get("result")

    async def acall(self, op: str, **fields: Any) -> Any:
        return await asyncio.to_thread(self.call, op, **fields)


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, wait_port: bool = True, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env},
            )
        if wait_port and self.port is not None:
            try:
                wait_for_port(self.port, timeout, self.proc)
            except (TimeoutError, RuntimeError) as exc:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.kill()
                raise RuntimeError(f"{self.name} did not start: {exc}\n{tail}") from exc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class LaneRig:
    """Broker + store + simulator + daemon, each a process. See the module docstring.

    ``redis``: ``"server"`` starts a redis-server (appendonly, fsync always) in the work
    directory; ``"memory"`` keeps the daemon's store in its own process (the demo).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        template: Path = DEFAULT_TEMPLATE,
        redis: str = "server",
        emulate_timing: bool = True,
        overrides: dict[str, Any] | None = None,
        mqtt_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.template = template
        self.redis_mode = redis
        self.emulate_timing = emulate_timing
        self.overrides = overrides or {}
        # A fixed broker port lets another terminal watch the lane (``lockerctl watch``).
        self.mqtt_port = mqtt_port or free_port()
        self.redis_port = free_port()
        self.control_port = free_port()
        self.lane_port: int | None = None  # set when the template's lane is simulated
        self.key = Ed25519PrivateKey.generate()
        self.key_id = "demo"
        raw = tomllib.loads(template.read_text())
        self.site = raw["cabinet"]["site"]
        self.cabinet = raw["cabinet"]["id"]
        self.topic_root = raw.get("mqtt", {}).get("topic_root", "lockers/v1")
        self.config_path = self.workdir / "cabinet.toml"
        self._write_config()
        self.broker = _Proc("mosquitto", self._mosquitto_argv(), self.workdir / "mosquitto.log",
                            self.mqtt_port)
        self.redis = _Proc("redis-server", self._redis_argv(), self.workdir / "redis.log",
                           self.redis_port)
        sim_argv = [*_script("locker-sim"), "run", "--config", str(self.config_path),
                    "--control-port", str(self.control_port), "--json"]
        if not emulate_timing:
            sim_argv.append("--no-timing")
        self.sim = _Proc("locker-sim", sim_argv, self.workdir / "sim.log", self.control_port)
        self.daemon = _Proc("locker-controller",
                            [*_script("locker-controller"), "--config", str(self.config_path)],
                            self.workdir / "daemon.log")
        self.control = SimControl(self.control_port)

    # -- configuration -----------------------------------------------------------------

    def public_key_b64(self) -> str:
        der = self.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def _write_config(self) -> None:
        text = self.template.read_text()
        raw = tomllib.loads(text)
        port_link = str(self.workdir / "ttyLOCKER0")
        lines = []
        for bus in raw.get("buses", []):
            lines.append(bus.get("port", ""))
        for old in {p for p in lines if p}:
            text = text.replace(f'"{old}"', f'"{port_link}"')
        lane = raw.get("lane", {})
        if lane.get("backend") == "simulator":
            self.lane_port = free_port()
            text = _set_key(text, "lane", "options", f"{{ port = {self.lane_port} }}")
        if isinstance(lane.get("scanner"), dict) and lane["scanner"].get("port"):
            text = text.replace(f'"{lane["scanner"]["port"]}"',
                                f'"{self.workdir / "ttyScanner"}"')
        text = _set_key(text, "mqtt", "port", str(self.mqtt_port))
        text = _set_key(text, "mqtt", "host", '"127.0.0.1"')
        redis_url = (f"redis://127.0.0.1:{self.redis_port}/0" if self.redis_mode == "server"
                     else "memory://")
        text = _set_key(text, "redis", "url", f'"{redis_url}"')
        text = _set_key(text, "security", "require_signed_commands", "true")
        text = _set_key(text, "security", "dispatch_public_keys",
                        f'{{ {self.key_id} = "{self.public_key_b64()}" }}')
        for dotted, value in self.overrides.items():
            section, key = dotted.split(".", 1)
            text = _set_key(text, section, key, value)
        self.config_path.write_text(text)

    def _mosquitto_argv(self) -> list[str]:
        return mosquitto_argv(self.workdir, self.mqtt_port)

    def _redis_argv(self) -> list[str]:
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        return redis_argv(data, self.redis_port)

    @property
    def code_key_file(self) -> Path:
        """Where the daemon keeps the cabinet's code key: ``security.code_key_file`` of the
        written config (relative to it), else the daemon's default (beside the config)."""
        from controller.daemon.startup import default_code_key_file

        raw = tomllib.loads(self.config_path.read_text())
        configured = raw.get("security", {}).get("code_key_file")
        if configured:
            return self.config_path.parent / str(configured)
        path = default_code_key_file(self.config_path)
        assert path is not None  # a config path is given
        return path

    def pinned_code_key(self, timeout_s: float = 15.0) -> PinnedCodeKey:
        """The cabinet's public code key read from its key file (what a technician reads
        with ``locker-controller --show-code-key``): what dispatch pins. The daemon creates
        the file at its first start: waited for, at most ``timeout_s``."""
        from controller.security.codes import CodeKey, CodeKeyError

        path = self.code_key_file
        deadline = time.monotonic() + timeout_s
        while True:  # bounded by the deadline
            try:
                key = CodeKey.from_json(path.read_text(), str(path))
                return PinnedCodeKey(key.key_id, key.public_bytes)
            except (OSError, CodeKeyError) as exc:  # not there yet, or being written
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"no code key at {path} within {timeout_s:g} s: "
                                       f"{exc}") from None
            time.sleep(0.05)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, *, daemon: bool = True) -> None:
        self.broker.start()
        if self.redis_mode == "server":
            self.redis.start()
        self.sim.start()
        if daemon:
            self.daemon.start(wait_port=False)

    def close(self) -> None:
        for proc in (self.daemon, self.sim, self.redis, self.broker):
            with contextlib.suppress(Exception):
                proc.stop()

    def __enter__(self) -> LaneRig:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs(self, name: str = "daemon", tail: int = 4000) -> str:
        path = self.workdir / {"daemon": "daemon.log", "sim": "sim.log",
                               "mosquitto": "mosquitto.log", "redis": "redis.log"}[name]
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


def _set_key(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in ``[section]`` of a TOML text (adding either when missing)."""
    lines = text.splitlines()
    header = f"[{section}]"
    start = next((i for i, line in enumerate(lines) if line.strip() == header), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n{header}\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        stripped = lines[i].lstrip()
        if stripped.startswith(f"{key} ") or stripped.startswith(f"{key}="):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"
