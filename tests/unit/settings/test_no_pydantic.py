"""Loading a config is the daemon's first step, and costs no pydantic: the settings are msgspec
structs with a validator of their own (decision 0023)."""

from __future__ import annotations

import pytest

from tests.support.fresh_imports import ROOT, modules_after


@pytest.mark.integration  # runs a Python process of its own
def test_loading_a_config_does_not_import_pydantic() -> None:
    config = ROOT / "controller" / "data" / "sim-cabinet.toml"
    bad = ROOT / "deploy" / "cabinet.example.toml"
    loaded = modules_after(
        "from controller.settings import ConfigError, load_settings\n"
        f"settings = load_settings({str(config)!r}, env={{}})\n"
        "assert settings.boards and settings.config_hash\n"
        "try:\n"
        # The example's key and TLS files are not on this machine: the report path runs too.
        f"    load_settings({str(bad)!r}, env={{}}, overrides={{'mqtt.port': 'x'}})\n"
        "except ConfigError as exc:\n"
        "    assert len(exc.issues) > 1, exc\n"
        "else:\n"
        "    raise AssertionError('the example loaded with its files missing')\n"
    )
    assert "msgspec" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_core")}
