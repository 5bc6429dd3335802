"""The import rules in pyproject.toml catch what they are meant to catch: a copy of the
tree with one forbidden import added fails ``lint-imports``, naming the contract; the copy
without it passes (so a failure is the added import, not the copy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = [
    pytest.mark.integration,  # runs lint-imports in a process of its own
    pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed"),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "data", "schemas")
    for package in ("controller", "drivers", "simulator"):
        shutil.copytree(ROOT / package, copy / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_tree_as_it_is_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("controller/domain/_violation.py", "import controller.store",
         "the controller's layers BROKEN"),
        ("controller/domain/_violation.py", "import controller.mqtt.link",
         "the controller's layers BROKEN"),
        ("controller/domain/_violation.py", "import controller.services.lane",
         "the controller's layers BROKEN"),
        ("controller/domain/_violation.py", "import controller.settings",
         "the domain imports no other part of the controller BROKEN"),
        ("controller/store/_violation.py", "import controller.services.opening",
         "the controller's layers BROKEN"),
        ("controller/services/_violation.py", "import controller.daemon",
         "the controller's layers BROKEN"),
        ("controller/settings/_violation.py", "import controller.store",
         "settings, clock, logs and strict JSON are leaves: they import no runtime part BROKEN"),
        ("controller/settings/_violation.py", "import pydantic",
         "the settings never import pydantic BROKEN"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, statement: str, contract: str
) -> None:
    violation = tree / module
    violation.write_text(f"{statement}\n")
    try:
        result = lint(tree)
    finally:
        violation.unlink()
    assert result.returncode != 0
    assert contract in result.stdout, result.stdout
