"""Configuration applied by dispatch: validated whole, stored durably, applied by restart.

``apply_config`` carries a *partial* config (``{"timing": {"pulse_s": 0.5}}``). It is
merged over what dispatch applied before (the *overlay*, kept in the store), layered over
the cabinet's file and flags exactly as at start-up, and validated as a whole: a bad
value is refused with the key that is wrong, and nothing changes. Accepted, the overlay is
committed to the store and the daemon restarts itself after replying (systemd brings it
back), so every part of it runs on one consistent configuration, and the overlay is
layered again at every later start.

Only some sections may change from afar. Identity (``cabinet``), the broker (``mqtt``),
the store (``redis``), the keys (``security``), the wiring (``buses``, ``boards``,
``compartments``) and the lane's I/O are changed on site: a wrong broker address or a
wrong lock channel pushed remotely could orphan a cabinet or open the wrong door.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.settings import ConfigError, Settings, load_settings

__all__ = ["REMOTE_SECTIONS", "OverlayRejected", "flatten", "merge", "settings_with_overlay"]

#: Top-level sections dispatch may change with ``apply_config``.
REMOTE_SECTIONS = frozenset({"timing", "tenants", "zones", "log"})


class OverlayRejected(ValueError):
    """The overlay cannot be applied; ``key`` is the dotted key at fault."""

    def __init__(self, message: str, key: str | None) -> None:
        super().__init__(message)
        self.key = key


def merge(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """``change`` deep-merged over ``base``; arrays (of tables) are replaced whole."""
    out = dict(base)
    for key, value in change.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(partial: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for the settings' flag layer: ``{"timing": {"pulse_s": 1}}`` ->
    ``{"timing.pulse_s": 1}``. Arrays stay whole values."""
    out: dict[str, Any] = {}
    for key, value in partial.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def check_sections(partial: Mapping[str, Any]) -> None:
    for key in partial:
        if key not in REMOTE_SECTIONS:
            raise OverlayRejected(
                f"[{key}] cannot be changed remotely; allowed: "
                f"{', '.join(sorted(REMOTE_SECTIONS))} (change the cabinet's file on site)",
                str(key),
            )


def settings_with_overlay(
    path: Path | None, flags: Mapping[str, Any], overlay: Mapping[str, Any],
    *, env: Mapping[str, str] | None = None,
) -> Settings:
    """The settings as the daemon would load them with ``overlay`` applied: defaults <
    file < environment < flags < overlay. Raises OverlayRejected naming the key."""
    check_sections(overlay)
    try:
        return load_settings(path, env=env, overrides=flags, overlay=flatten(overlay))
    except ConfigError as exc:
        issue = exc.issues[0] if exc.issues else None
        raise OverlayRejected(str(exc), issue.key if issue is not None else None) from exc
