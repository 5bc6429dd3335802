"""The built package, as a cabinet or a technician's laptop gets it.

The wheel and the sdist are built once (``python -m build`` in a throw-away venv; pip may
take ``build`` and ``setuptools`` from its cache), then:

- the build prints no warning (licence as an SPDX expression, its file present);
- the sdist carries the deploy files, the docs, the lock files and the licence;
- the wheel, installed into a fresh venv outside the repository, runs ``lockerctl demo``
  (the demo cabinet is package data). Its dependencies come from the test's own
  environment through a ``.pth`` line, so nothing is downloaded for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Built:
    wheel: Path
    sdist: Path
    log: str


def _base_python() -> str:
    """The interpreter this venv was made from (a venv inside a venv is not fresh)."""
    return getattr(sys, "_base_executable", sys.executable)


def _clean_env() -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE makes setuptools say "byte-compiling is disabled".
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
            and not k.startswith("LOCKER_")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("build")
    venv = work / "venv"
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "build"],
                         capture_output=True, text=True, timeout=300, check=False)
    if pip.returncode != 0:
        pytest.fail(f"cannot install 'build' (pip cache or index): {pip.stderr[-2000:]}")
    # A clean copy of the tree (what git tracks or would track), so that caches and old
    # build directories of a working copy neither reach the sdist nor change the output.
    src = work / "src"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, src / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working copy
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    out = work / "dist"
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "build", "--outdir", str(out),
                           str(src)], capture_output=True, text=True, timeout=600,
                          check=False, cwd=work, env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("locker_controller-*.whl"))
    sdists = list(out.glob("locker_controller-*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    return Built(wheels[0], sdists[0], proc.stdout + proc.stderr)


def test_build_prints_no_warning(built: Built) -> None:
    warnings = [line for line in built.log.splitlines() if "warning" in line.lower()]
    assert warnings == []


def test_licence_is_an_spdx_expression_with_its_file(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(meta_name).decode()
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        text = whl.read(licence).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


def test_wheel_carries_the_demo_cabinet_and_schemas(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = set(whl.namelist())
    assert "controller/data/sim-cabinet.toml" in names
    assert "controller/schemas/command.json" in names
    assert not any(n.startswith(("tests/", "deploy/", "docs/")) for n in names)


def test_sdist_carries_deploy_docs_locks_and_licence(built: Built) -> None:
    with tarfile.open(built.sdist) as tar:
        names = {"/".join(n.split("/")[1:]) for n in tar.getnames()}
        member = tar.getmember(f"{built.sdist.name.removesuffix('.tar.gz')}/"
                               "deploy/sim-cabinet.toml")
        assert member.isfile(), "the demo cabinet must be a file in the sdist, not a link"
    for path in ("LICENSE", "README.md", "deploy/install.sh", "deploy/redis.conf",
                 "deploy/cabinet.example.toml", "deploy/mosquitto/acl",
                 "deploy/mosquitto/mosquitto.conf", "deploy/systemd/locker-controller.service",
                 "deploy/udev/99-locker-rs485.rules", "deploy/tls/make-test-ca.sh",
                 "docs/operations.md", "docs/configuration.md", "docs/mqtt/README.md",
                 "requirements/cabinet.txt", "scripts/wheelhouse",
                 "controller/data/sim-cabinet.toml"):
        assert path in names, path
    assert not any("__pycache__" in n for n in names)


def test_installed_wheel_runs_the_demo_outside_the_repository(built: Built,
                                                              tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([_base_python(), "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The wheel goes into the new venv, installed by this environment's pip (--python).
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                          "-q", "--no-deps", "--no-index", str(built.wheel)],
                         capture_output=True, text=True, timeout=300, check=False,
                         env=_clean_env())
    assert pip.returncode == 0, pip.stderr[-3000:]
    # Dependencies from this environment, after the venv's own site-packages.
    (site / "zz-shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**_clean_env(), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    where = subprocess.run([str(python), "-c", "import controller; print(controller.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    proc = subprocess.run([str(venv / "bin" / "lockerctl"), "demo", "--no-timing"],
                          capture_output=True, text=True, timeout=150, check=False,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "demo ok" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
