"""The config check opens the broker TLS files, so a key the daemon's user cannot read is
a configuration error naming the key, not a broker link that stays down. The check runs
as an unprivileged user (as the installer runs it, as the daemon's user): root reads
every file whatever its mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CHECK = """
import sys, tomllib
from controller.settings import ConfigError, parse_settings
with open(sys.argv[2], "rb") as f:
    raw = tomllib.load(f)
raw["mqtt"] = {"host": "127.0.0.1", "port": 8883,
               "tls": {"ca_file": "ca.crt", "cert_file": "cab.crt", "key_file": "cab.key"}}
try:
    parse_settings(raw, base_dir=sys.argv[1])
except ConfigError as exc:
    print(exc)
    sys.exit(2)
print("ok")
"""


def _as_nobody(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to run the check as another user")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@pytest.mark.integration
@pytest.mark.parametrize("owned_by_checker", [True, False])
def test_a_key_file_the_checking_user_cannot_read_is_refused(owned_by_checker: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="tls-check-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        for name in ("ca.crt", "cab.crt", "cab.key"):
            (base / name).write_text("x")
            (base / name).chmod(0o644)
        key = base / "cab.key"
        key.chmod(0o600)
        if owned_by_checker and os.geteuid() == 0:
            shutil.chown(key, user="nobody")  # the daemon's own key: fine
        elif not owned_by_checker and os.geteuid() != 0:
            key.chmod(0o000)  # not root: take the read bit from ourselves instead
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        sim = ROOT / "controller" / "data" / "sim-cabinet.toml"
        proc = subprocess.run(_as_nobody([sys.executable, "-c", CHECK, str(base), str(sim)]),
                              capture_output=True, text=True, env=env, cwd="/", timeout=60,
                              check=False)
    if owned_by_checker:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "mqtt.tls.key_file" in proc.stdout
        assert "cannot read" in proc.stdout
