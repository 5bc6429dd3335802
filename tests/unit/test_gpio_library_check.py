"""The config check names a lane GPIO backend whose library is not installed: the daemon
would start without its lane otherwise."""

from __future__ import annotations

import importlib.util

import pytest

from controller.daemon.main import missing_gpio_library


@pytest.mark.parametrize("backend", ["mock", "simulator"])
def test_backends_without_a_library_are_never_missing(backend: str) -> None:
    assert missing_gpio_library(backend) is None


@pytest.mark.parametrize(("backend", "module"), [("gpiod", "gpiod"), ("rpigpio", "RPi")])
def test_a_missing_library_is_named_with_the_install_option(backend: str, module: str) -> None:
    said = missing_gpio_library(backend)
    if importlib.util.find_spec(module) is not None:
        assert said is None
    else:
        assert said is not None
        assert said.startswith("lane.backend:")
        assert f"{module!r}" in said
        assert "install.sh --gpio" in said
