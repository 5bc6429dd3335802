"""Checks of a configuration against the way a cabinet is attacked, run with the others
(at start-up and by ``--check``/``lockerctl config check``); each names the key at fault.

**Production** is recognised from the configuration itself, with no separate flag to forget:
a configuration is a production one when it requires signed commands
(``[security] require_signed_commands = true``) and drives real lane I/O
(``[lane] backend`` is ``gpiod`` or ``rpigpio``). The simulator, the demo and the test rigs
use the ``simulator`` or ``mock`` lane and are not production.

Always refused:

- a Modbus TCP bus (``kind = "tcp"``) whose ``host`` is not a loopback address, unless the
  bus declares the isolated link it is on (``isolated_interface``): Modbus TCP has no
  authentication, two frames from the network open a door;
- a cabinet TLS key (``[mqtt.tls] key_file``) that others can read or write.

Refused in production:

- plaintext MQTT (no ``[mqtt.tls]``): the broker credentials and every code hash would
  cross the network in clear.

The store's own checks (its socket's permissions, Redis over TCP) run when the daemon
connects to it (:mod:`controller.store.access`).
"""

from __future__ import annotations

import ipaddress
import os
import stat

from controller.settings.errors import Loc
from controller.settings.models import Settings

__all__ = ["deployment_issues", "is_loopback_host", "is_production"]

_HARDWARE_LANES = ("gpiod", "rpigpio")


def is_production(s: Settings) -> bool:
    """Whether ``s`` is a production configuration (see the module docstring)."""
    return s.security.require_signed_commands and s.lane.backend in _HARDWARE_LANES


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def deployment_issues(s: Settings) -> list[tuple[Loc, str]]:
    """Every problem of ``s`` listed in the module docstring, as (key, message)."""
    out: list[tuple[Loc, str]] = []
    for i, bus in enumerate(s.buses):
        if bus.kind == "tcp" and bus.host is not None and not is_loopback_host(bus.host) \
                and bus.isolated_interface is None:
            out.append((("buses", i, "host"),
                        f"Modbus TCP to {bus.host} has no authentication: anyone on that "
                        "network can open a door. Put the gateway on a dedicated link and "
                        "declare it with isolated_interface = \"eth1\" (docs/security.md)"))
    tls = s.mqtt.tls
    if tls is not None and tls.key_file is not None:
        try:
            mode = os.stat(tls.key_file).st_mode
        except OSError:
            mode = 0  # missing: the file check reports it
        if mode & stat.S_IRWXO:
            out.append((("mqtt", "tls", "key_file"),
                        f"{tls.key_file} is readable by every local user (mode "
                        f"{stat.S_IMODE(mode):o}): chown locker, chmod 0600"))
    if is_production(s) and tls is None:
        out.append((("mqtt", "tls"),
                    "missing: a production cabinet (signed commands, lane backend "
                    f"{s.lane.backend}) talks to the broker over TLS only"))
    return out
