"""deploy/install.sh, run as a technician would, into a throw-away root on this machine.

``--root DIR`` puts every file under DIR (users in DIR/etc/passwd, no apt, no systemctl),
so the real script runs end to end as root here without touching the machine. The
wheelhouse is built by scripts/wheelhouse (pip's cache or the package index); the
installer then installs from it offline, into a virtualenv of Debian's python3. The
sequence:

1. a fresh install with the example config: everything is installed, the config check
   fails, the installer lists exactly what to fill in and enables nothing (exit 1);
2. the technician puts the certificates and the dispatch key where it said: the second
   run passes the check as the locker user and enables the daemon (exit 0);
3. a third run changes nothing (idempotent).

Then the installed Redis config is run with the redis-server of this machine, beside
whatever stock redis-server listens on 127.0.0.1:6379: it must open no TCP port and
answer on its own socket, the one the example config's URL names.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"

if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("useradd") is None:
    pytest.skip("the installer runs as root with useradd and setpriv", allow_module_level=True)


def _owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _ids(root: Path, name: str, table: str) -> int:
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise KeyError(name)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/wheelhouse for this machine: the release's wheel and the locked
    dependencies, hash-checked (from pip's cache or the package index)."""
    out = tmp_path_factory.mktemp("wheelhouse")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "wheelhouse"), str(out)],
                          capture_output=True, text=True, timeout=900, check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (out / "SHA256SUMS").is_file()
    return out


@pytest.fixture(scope="module")
def target() -> Iterator[Path]:
    """A root with this machine's account files, readable by the locker user."""
    root = Path(tempfile.mkdtemp(prefix="locker-root-"))
    root.chmod(0o755)
    (root / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), root / "etc" / name)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def install(root: Path, wheelhouse: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("LOCKER_")}
    # The cabinet's interpreter: Debian's python3, first on the PATH as on a cabinet.
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.run(["bash", str(INSTALL), "--root", str(root),
                           "--wheelhouse", str(wheelhouse), *extra],
                          capture_output=True, text=True, timeout=600, check=False, env=env)


def test_install_check_fill_in_then_idempotent(target: Path, wheelhouse: Path,
                                               tmp_path: Path) -> None:
    # An earlier release's Redis config and store (dir /var/lib/redis itself).
    (target / "etc/redis").mkdir(parents=True)
    (target / "etc/redis/redis-locker.conf").write_text("port 6379\ndir /var/lib/redis\n")
    old_store = target / "var/lib/redis/appendonlydir"
    old_store.mkdir(parents=True)
    (old_store / "appendonly.aof.1.incr.aof").write_bytes(b"*1\r\n$5\r\nMULTI\r\n")

    # 1. fresh: installed, the example does not pass, exactly what to fill in, nothing enabled
    first = install(target, wheelhouse)
    out = first.stdout + first.stderr
    assert first.returncode == 1, out
    assert "created user locker" in out
    assert "installed the EXAMPLE config as /etc/locker/cabinet.toml" in out
    assert "does not pass its check yet; the daemon is NOT enabled" in out
    for missing in ("mqtt.tls.ca_file: file not found: '/etc/locker/tls/ca.crt'",
                    "mqtt.tls.cert_file: file not found: '/etc/locker/tls/cabinet.crt'",
                    "mqtt.tls.key_file: file not found: '/etc/locker/tls/cabinet.key'",
                    "security.dispatch_public_keys.dispatch-1: cannot read "
                    "'/etc/locker/keys/dispatch-1.pub'"):
        assert missing in out, out
    assert str(target) not in out.split("does not pass")[1].split("then check")[0]
    assert "it is still the example" in out
    assert "systemctl enable --quiet redis-server@locker" in out
    assert "systemctl enable --quiet locker-controller" not in out
    assert "systemctl restart locker-controller" not in out

    locker = _ids(target, "locker", "passwd")
    locker_gid = _ids(target, "locker", "group")
    redis_uid, redis_gid = _ids(target, "redis", "passwd"), _ids(target, "redis", "group")
    members = {line.split(":")[0]: line.split(":")[3].split(",")
               for line in (target / "etc" / "group").read_text().splitlines()}
    assert "locker" in members["redis"]
    assert "locker" in members["gpio"]
    assert "locker" in members.get("dialout", ["locker"])
    assert _owner(target / "etc/locker") == (0, locker_gid, 0o750)
    assert _owner(target / "etc/locker/cabinet.toml") == (0, locker_gid, 0o640)
    assert _owner(target / "etc/redis/redis-locker.conf") == (0, redis_gid, 0o640)
    assert _owner(target / "var/lib/redis/locker") == (redis_uid, redis_gid, 0o700)
    assert "moved the store of an earlier release to /var/lib/redis/locker" in out
    moved = target / "var/lib/redis/locker/appendonlydir/appendonly.aof.1.incr.aof"
    assert moved.read_bytes() == b"*1\r\n$5\r\nMULTI\r\n"
    assert not old_store.exists()
    unit = (target / "etc/systemd/system/locker-controller.service").read_text()
    for device in ("ttyUSB", "ttyACM", "ttyAMA", "ttySC", "gpiochip"):
        assert f"DeviceAllow=char-{device} rw" in unit
    assert "DeviceAllow=/dev/gpiomem rw" in unit
    # The mini UART by path: char-ttyS is character major 4, the virtual consoles' too.
    assert "DeviceAllow=/dev/ttyS0 rw" in unit
    assert "DeviceAllow=char-ttyS rw" not in unit
    assert "ProtectSystem=strict" in unit
    assert "NoNewPrivileges=yes" in unit
    assert (target / "etc/udev/rules.d/99-locker-rs485.rules").is_file()
    lockerctl = target / "opt/locker-controller/.venv/bin/lockerctl"
    assert lockerctl.is_file()
    # The default GPIO library (libgpiod bindings) came from the wheelhouse, with the
    # locked version; the dependencies of the cabinet's Python 3.11.2 too.
    venv_python = target / "opt/locker-controller/.venv/bin/python"
    freeze = subprocess.run([str(venv_python), "-m", "pip", "freeze"], capture_output=True,
                            text=True, check=True).stdout
    locked = (ROOT / "requirements" / "gpio-gpiod.txt").read_text()
    assert re.search(r"^gpiod==(\S+) ", locked, re.MULTILINE)
    version = re.search(r"^gpiod==(\S+) ", locked, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert f"gpiod=={version}" in freeze.splitlines()
    assert any(line.startswith("locker-controller") for line in freeze.splitlines())

    # 2. the technician puts what was asked where it was asked
    pki = tmp_path / "pki"
    subprocess.run(["bash", str(ROOT / "deploy/tls/make-test-ca.sh"), str(pki),
                    "fr-lyon-07/cab-01"], check=True, capture_output=True, timeout=120)
    tls = target / "etc/locker/tls"
    shutil.copy(pki / "ca.crt", tls / "ca.crt")
    shutil.copy(pki / "cabinet-fr-lyon-07-cab-01.crt", tls / "cabinet.crt")
    shutil.copy(pki / "cabinet-fr-lyon-07-cab-01.key", tls / "cabinet.key")
    os.chown(tls / "cabinet.key", locker, locker_gid)
    (tls / "cabinet.key").chmod(0o600)
    keys = tmp_path / "dispatch-keys"
    keygen = subprocess.run([str(lockerctl), "keygen", "--out", str(keys),
                             "--key-id", "dispatch-1"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert keygen.returncode == 0, keygen.stderr
    shutil.copy(keys / "dispatch-1.pub", target / "etc/locker/keys/dispatch-1.pub")

    # An earlier release's RPi.GPIO in the virtualenv (rpi-lgpio replaces it), and a new
    # release to install (its stamp gone).
    site = next((target / "opt/locker-controller/.venv/lib").glob("python3*/site-packages"))
    fake = site / "RPi.GPIO-0.7.1.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: RPi.GPIO\nVersion: 0.7.1\n")
    (fake / "INSTALLER").write_text("pip\n")
    (fake / "RECORD").write_text("RPi.GPIO-0.7.1.dist-info/METADATA,,\n"
                                 "RPi.GPIO-0.7.1.dist-info/INSTALLER,,\n"
                                 "RPi.GPIO-0.7.1.dist-info/RECORD,,\n")
    for stamp in (target / "opt/locker-controller/.venv").glob(".installed-*"):
        stamp.unlink()

    second = install(target, wheelhouse)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "removed RPi.GPIO (replaced by rpi-lgpio)" in out
    assert not fake.exists()
    assert "config check passed" in out
    assert "systemctl enable --quiet locker-controller" in out
    assert "created user" not in out

    # 3. nothing left to do
    third = install(target, wheelhouse)
    out = third.stdout + third.stderr
    assert third.returncode == 0, out
    assert not re.search(r"^install: (wrote|created|installing|installed|added)", out,
                         re.MULTILINE), out
    assert "config check passed" in out

    # The installed tools check the installed config the same way.
    check = subprocess.run([str(lockerctl), "config", "check",
                            str(target / "etc/locker/cabinet.toml")],
                           capture_output=True, text=True, check=False, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_cabinet_redis_has_no_tcp_port_and_answers_on_its_socket(tmp_path: Path) -> None:
    """The shipped redis.conf beside a stock redis-server: no port, its own socket."""
    conf = ROOT / "deploy" / "redis.conf"
    text = conf.read_text()
    assert re.search(r"^port 0$", text, re.MULTILINE)
    socket_path = re.search(r"^unixsocket (\S+)$", text, re.MULTILINE)
    assert socket_path is not None
    assert re.search(r"^unixsocketperm 770$", text, re.MULTILINE)
    assert re.search(r"^dir /var/lib/redis/locker$", text, re.MULTILINE)
    example = tomllib.loads((ROOT / "deploy" / "cabinet.example.toml").read_text())
    assert example["redis"]["url"].startswith(f"unix://{socket_path.group(1)}")

    # The same file, run by this machine's redis-server; only the paths move to tmp_path
    # (redis-server changes to "dir" while it reads the file) and systemd is not there.
    sock = tmp_path / "redis.sock"
    moved = tmp_path / "redis-locker.conf"
    acl = tmp_path / "redis-locker.acl"
    acl.write_text("".join(line + "\n" for line in
                           (ROOT / "deploy" / "redis-locker.acl").read_text().splitlines()
                           if not line.startswith("#"))
                   .replace("@PASSWORD_SHA256@", hashlib.sha256(b"pw").hexdigest())
                   .replace("@DEFAULT_SHA256@", hashlib.sha256(b"nobody").hexdigest()))
    moved.write_text(text.replace("/var/lib/redis/locker", str(tmp_path))
                     .replace("/run/redis-locker/redis.sock", str(sock))
                     .replace("/run/redis-locker/", f"{tmp_path}/")
                     .replace("/etc/redis/redis-locker.acl", str(acl))
                     .replace("supervised systemd", "supervised no"))
    proc = subprocess.Popen(["redis-server", str(moved)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            ping = subprocess.run(["redis-cli", "--user", "locker", "--pass", "pw",
                                   "--no-auth-warning", "-s", str(sock), "ping"],
                                  capture_output=True, text=True, check=False)
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert ping.stdout.strip() == "PONG"
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                                   check=True).stdout
        assert f"pid={proc.pid}," not in listening, listening
        # Not even the daemon's user may read or change the server's configuration; the
        # shipped file says port 0 and the ss check above shows no listener.
        config = subprocess.run(["redis-cli", "--user", "locker", "--pass", "pw",
                                 "--no-auth-warning", "-s", str(sock), "config", "get", "port"],
                                capture_output=True, text=True, check=False).stdout
        assert "no permissions" in config, config
        assert stat.S_IMODE(sock.stat().st_mode) == 0o770
    finally:
        proc.terminate()
        proc.wait(10)


def test_install_from_the_source_tree_with_the_package_index(tmp_path: Path) -> None:
    """The default path, ``sudo deploy/install.sh`` with no wheelhouse: the locked
    dependencies from the index (hashes checked), the release built from the tree."""
    root = Path(tempfile.mkdtemp(prefix="locker-root-"))
    try:
        root.chmod(0o755)
        (root / "etc").mkdir()
        for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
            if Path("/etc", name).exists():
                shutil.copy2(Path("/etc", name), root / "etc" / name)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("LOCKER_")}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        proc = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--gpio", "none"],
                              capture_output=True, text=True, timeout=900, check=False,
                              env=env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out  # installed; the example config awaits its files
        assert "installing the locked dependencies from the package index" in out
        assert "does not pass its check yet" in out
        python = root / "opt/locker-controller/.venv/bin/python"
        # The daemon's Redis client is its own: redis-py is not installed on a cabinet.
        where = subprocess.run([str(python), "-c", "import controller, controller.store.resp; "
                                "import importlib.util as u; assert u.find_spec('redis') is None; "
                                "print(controller.__file__)"], capture_output=True, text=True,
                               check=True, cwd=tmp_path, env=env)
        assert where.stdout.startswith(str(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
