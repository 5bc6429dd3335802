"""Checks of a configuration against the way a cabinet is attacked, run with the others
(at start-up and by ``--check``/``lockerctl config check``); each names the key at fault.

**Production** is recognised from what only a real cabinet has, with no separate flag to
forget (:func:`is_production`): any one of

- a hardware lane backend (``[lane] backend`` ``gpiod`` or ``rpigpio``);
- a serial device that is there and is not a pseudo-terminal, for a ``[[buses]]`` RTU line
  or the ``[lane.scanner]`` (the simulator and the test rigs speak over ptys, which are
  never production; a ``/dev/ttyLOCKER0`` that exists is a real adapter, whatever the lane);
- a Modbus TCP bus whose ``host`` is not a loopback address (a real gateway).

Whether commands must be signed does not decide it: a real cabinet that does not require
them is refused (below), it does not become a lab. A device that is absent when the check
runs (a configuration checked on a laptop, an adapter unplugged) does not count: such a
configuration is refused at the first start on the cabinet, where the device is.

Always refused:

- a Modbus TCP bus (``kind = "tcp"``) whose ``host`` is not a loopback address, unless the
  bus declares the isolated link it is on (``isolated_interface``): Modbus TCP has no
  authentication, two frames from the network open a door. The interface must exist on
  this machine, the host must be an IP address (a name could be answered by anyone), and
  the interface must have an address whose network holds the host: only then does the
  kernel's connected route send the traffic out of that link (an interface without an
  address, or on another network, leaves the gateway to whatever route matches, e.g. the
  default one);
- a cabinet TLS key (``[mqtt.tls] key_file``) that group or others may read or write, or
  owned by a user other than the daemon's user or root.

Refused in production:

- plaintext MQTT (no ``[mqtt.tls]``): the broker credentials and every command would cross
  the network in clear;
- unsigned commands (``require_signed_commands = false``): broker credentials alone would
  open a door.

The store's own checks (its socket's permissions, owner and group, Redis over TCP) run when
the daemon connects to it (:mod:`controller.store.access`); the code key's file and directory
when it is loaded (:meth:`controller.security.codes.CodeKey.load_or_create`); ``--check``
runs both without connecting or creating anything
(:func:`controller.daemon.startup.local_file_issues`).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import pwd
import socket
import stat
import struct
from pathlib import Path

from controller.settings.errors import Loc
from controller.settings.models import Settings

__all__ = [
    "DAEMON_USER",
    "deployment_issues",
    "interface_networks",
    "is_loopback_host",
    "is_production",
    "is_real_serial_device",
    "key_file_issue",
    "trusted_owners",
]

_HARDWARE_LANES = ("gpiod", "rpigpio")
#: The account the shipped unit runs the daemon as (deploy/systemd, deploy/install.sh).
DAEMON_USER = "locker"
#: Character-device majors of pseudo-terminals and consoles: Unix98 pty slaves (136-143),
#: /dev/tty, /dev/console and /dev/ptmx (5), BSD-style ptys (2, 3). Major 4 below minor 64
#: is a virtual console.
_PTY_MAJORS = frozenset({2, 3, 5, *range(136, 144)})
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


def is_real_serial_device(port: str) -> bool:
    """Whether ``port`` is a serial device that is there: a character device of the kernel's
    ``tty`` class that is neither a pseudo-terminal nor a virtual console."""
    try:
        info = os.stat(port)  # follows a udev or simulator symlink to the device itself
    except (OSError, ValueError):  # not there, or not a path (a NUL in it)
        return False
    if not stat.S_ISCHR(info.st_mode):
        return False
    major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    if major in _PTY_MAJORS or (major == 4 and minor < 64):
        return False
    subsystem = os.path.realpath(f"/sys/dev/char/{major}:{minor}/subsystem")
    return os.path.basename(subsystem) == "tty"


def is_production(s: Settings) -> bool:
    """Whether ``s`` drives a real cabinet (see the module docstring)."""
    if s.lane.backend in _HARDWARE_LANES:
        return True
    if s.lane.scanner is not None and is_real_serial_device(s.lane.scanner.port):
        return True
    for bus in s.buses:
        if bus.kind == "rtu" and bus.port is not None and is_real_serial_device(bus.port):
            return True
        if bus.kind == "tcp" and bus.host is not None and not is_loopback_host(bus.host):
            return True
    return False


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trusted_owners() -> frozenset[int] | None:
    """Who may own the daemon's keys: root and the user running this check (the daemon, at
    its start). A check run as root (an administrator's ``--check``) takes the daemon's
    account (``locker``) instead; None when this machine has no such account (a staged
    install tree): who the daemon will be is unknown, and its own start checks the owner."""
    if os.geteuid() != 0:
        return frozenset({0, os.geteuid()})
    try:
        return frozenset({0, pwd.getpwnam(DAEMON_USER).pw_uid})
    except KeyError:
        return None


def interface_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of interface ``name``'s addresses (IPv4 primary address, and IPv6);
    ``KeyError`` when there is no such interface on this machine."""
    if name not in {n for _, n in socket.if_nameindex()}:
        raise KeyError(name)
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", name.encode()[:15])
        try:
            addr = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)[20:24]
            mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)[20:24]
            out.append(ipaddress.IPv4Network(
                f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}", strict=False))
        except OSError:
            pass  # no IPv4 address
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5] == name:
            out.append(ipaddress.IPv6Network(
                (ipaddress.IPv6Address(bytes.fromhex(fields[0])), int(fields[2], 16)),
                strict=False))
    return out


def _isolated_link_issue(host: str, interface: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (f"{host!r} is a name: on an isolated link the gateway is named by its IP "
                "address (a name could be answered by anyone who can answer DNS)")
    try:
        networks = interface_networks(interface)
    except KeyError:
        return (f"isolated_interface {interface!r} is no network interface of this machine "
                "(see `ip link`)")
    if not networks:
        return (f"isolated_interface {interface!r} has no address: the gateway {host} would "
                "be reached by whatever route matches it (the default one), not over that "
                f"link. Give {interface} an address on the gateway's network (e.g. "
                f"`ip addr add {_example_address(address)} dev {interface}`, made permanent in "
                "the network configuration)")
    if not any(address in n for n in networks if n.version == address.version):
        nets = ", ".join(str(n) for n in networks)
        return (f"{host} is not on {interface} ({nets}): the gateway would be reached over "
                f"another network. Give {interface} an address on the gateway's network, or "
                "correct host")
    return None


def _example_address(host: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address next to ``host`` on a /24 (/64), for the message's example."""
    prefix = 24 if host.version == 4 else 64
    net = ipaddress.ip_network(f"{host}/{prefix}", strict=False)
    mine = next(a for a in (net.network_address + 1, net.network_address + 2) if a != host)
    return f"{mine}/{prefix}"


def key_file_issue(path: str, owners: frozenset[int] | None) -> str | None:
    """What is wrong with a private key file at ``path``, or None: group or others may
    reach it, or a user outside ``owners`` (:func:`trusted_owners`; None: unknown, not
    checked) owns it. A missing file is for the file checks to report."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None  # missing or not a path: the file check reports it
    mode = stat.S_IMODE(info.st_mode)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        who = "every local user" if info.st_mode & stat.S_IRWXO else "its group"
        return (f"{path} is accessible by {who} (mode {mode:o}): chown {DAEMON_USER}, "
                "chmod 0600")
    if owners is not None and info.st_uid not in owners:
        return (f"{path} is owned by uid {info.st_uid}, neither the daemon's user nor root: "
                f"that user could replace or read the key. chown {DAEMON_USER}, chmod 0600")
    return None


def deployment_issues(s: Settings) -> list[tuple[Loc, str]]:
    """Every problem of ``s`` listed in the module docstring, as (key, message)."""
    out: list[tuple[Loc, str]] = []
    for i, bus in enumerate(s.buses):
        if bus.kind != "tcp" or bus.host is None or is_loopback_host(bus.host):
            continue
        if bus.isolated_interface is None:
            out.append((("buses", i, "host"),
                        f"Modbus TCP to {bus.host} has no authentication: anyone on that "
                        "network can open a door. Put the gateway on a dedicated link and "
                        "declare it with isolated_interface = \"eth1\" (docs/security.md)"))
            continue
        issue = _isolated_link_issue(bus.host, bus.isolated_interface)
        if issue is not None:
            out.append((("buses", i, "isolated_interface"), issue))
    tls = s.mqtt.tls
    if tls is not None and tls.key_file is not None:
        issue = key_file_issue(str(tls.key_file), trusted_owners())
        if issue is not None:
            out.append((("mqtt", "tls", "key_file"), issue))
    if is_production(s):
        if tls is None:
            out.append((("mqtt", "tls"),
                        "missing: a production cabinet (real lane I/O, serial boards or a "
                        "Modbus gateway) talks to the broker over TLS only"))
        if not s.security.require_signed_commands:
            out.append((("security", "require_signed_commands"),
                        "false on a production cabinet (real lane I/O, serial boards or a "
                        "Modbus gateway): broker credentials alone would open a door"))
    return out
