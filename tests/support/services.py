"""Real mosquitto and redis-server processes for tests, on free loopback ports.

Each service is started by the test that needs it, in its own temporary directory, and
can be stopped (SIGTERM), killed (SIGKILL) and restarted on the same port, so a test can
take the broker or the store away in the middle of an operation. Processes are always
stopped by process id, never by name.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

from controller.lab.rig import free_port, mosquitto_argv, redis_argv, wait_for_port

__all__ = ["MosquittoProcess", "RedisProcess", "free_port", "sigint_as_a_terminal",
           "wait_for_port"]


class _Service:
    name = "service"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self._argv(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for_port(self.port)
            self._wait_ready()
        except TimeoutError as exc:
            self.kill()
            log = self.log_path.read_text()[-2000:]
            raise RuntimeError(f"{self.name} did not start: {log}") from exc

    def _wait_ready(self) -> None:
        """Return once the service answers as it does in use (listening may come first)."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not go."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or say goodbye."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> _Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MosquittoProcess(_Service):
    """A mosquitto broker on 127.0.0.1:port, anonymous, MQTT 3.1.1 and 5.

    ``persistence`` keeps queued QoS 1 messages for persistent sessions across a restart,
    as a production broker would.
    """

    name = "mosquitto"

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistence: bool = True,
        extra_config: str = "",
    ) -> None:
        super().__init__(workdir, port)
        self.persistence = persistence
        self.extra_config = extra_config

    def _argv(self) -> list[str]:
        return mosquitto_argv(self.workdir, self.port, persistence=self.persistence,
                              extra_config=self.extra_config)


class RedisProcess(_Service):
    """A redis-server on 127.0.0.1:port with the production durability settings
    (append-only file, fsync on every write), its files in the work directory."""

    name = "redis-server"

    def __init__(self, workdir: Path, port: int | None = None, *, durable: bool = True) -> None:
        super().__init__(workdir, port)
        self.durable = durable

    def _argv(self) -> list[str]:
        return redis_argv(self.workdir, self.port, durable=self.durable)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Redis listens before it has loaded its append-only file and answers ``-LOADING``
        meanwhile: wait for another answer (``+PONG``, or ``-NOAUTH`` behind a password),
        with a deadline."""
        deadline = time.monotonic() + timeout
        answer = b""
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), 1.0
            ) as sock:
                sock.settimeout(1.0)
                sock.sendall(b"PING\r\n")
                answer = sock.recv(256)
                if answer and not answer.startswith(b"-LOADING"):
                    return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on {self.port} still answers {answer!r}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def sigint_as_a_terminal() -> None:
    """``preexec_fn`` for a child a test will interrupt with SIGINT (Ctrl-C): its default
    disposition, as under a terminal. A suite started as a background job of a
    non-interactive shell runs with SIGINT ignored, every child inherits that, and a
    Python started so never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
