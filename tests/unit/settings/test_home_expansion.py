"""A path that names the home of a user who does not exist is a config error, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_unknown_users_home_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(ROOT / "deploy" / "sim-cabinet.toml",
                      env={"LOCKER_SECURITY__DISPATCH_PUBLIC_KEYS__K": "~no-such-user-here"})
    assert any("dispatch_public_keys" in key for key in info.value.keys)
