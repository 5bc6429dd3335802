"""Who else can write the store: checked before the daemon trusts it.

Every code hash, lockout and command record lives in Redis; whoever can write there can open
a door without a signature (rewrite an order's code hash, then type the code). So the store
must be reachable by the daemon alone, and :func:`check_store_access` refuses, with a
:class:`~controller.store.errors.StoreConfigError` that says what to fix, to start on one
that is not:

- ``unix://`` (the shipped layout, ``deploy/redis.conf``): the socket must not be writable
  by others (connecting needs write permission on it), must be owned by root, the daemon's
  user or ``redis`` (whoever owns it runs the server the daemon would trust), and no
  directory on its path may be writable by others without the sticky bit (whoever can write
  there can replace the socket with their own server). A socket its group may write (and
  so connect to), or a socket directory its group may write (and so put its own socket
  in), is only as private as that group: the group may have no member but the daemon's
  user, ``redis`` and root (its members are its member list and every user whose primary
  group it is), or it is refused naming the group and the other members
  (``unixsocketperm 770`` with a group such as ``users`` lets every user in it rewrite
  code hashes). The same group rule holds for every directory above it up to ``/``
  (whoever can write one can move the socket's directory away and put their own there),
  and a POSIX ACL (``getfacl``; ``ls -l`` shows a ``+``) naming a user or a group on the
  socket or its directory is refused: it reaches past the mode bits to that user or group.
  Checked in every mode: it costs nothing and a test rig has no reason to share its
  socket either.
- ``redis://``/``rediss://`` in production: the host must be a loopback address and the URL
  must carry a password (``password_file`` or in the URL), because Redis on TCP answers
  every local user, and without a password it answers them all (``CONFIG SET``, rewriting a
  code hash).

The password is best kept out of the configuration: ``password_file=PATH`` in the URL's query
names a file (readable by the daemon's user only; refused when group or others can read it)
whose first line is the password of the ACL user given by ``username=`` (``deploy/redis.conf``
and ``deploy/install.sh`` create the user ``locker`` with only the commands the store uses).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from controller.settings.deployment import DAEMON_USER, is_loopback_host, trusted_owners
from controller.store.errors import StoreConfigError

__all__ = ["REDIS_USER", "Accounts", "check_store_access", "resolve_password_file"]

#: The account the cabinet's own Redis runs as (Debian's redis-server package).
REDIS_USER = "redis"


def _group_entry(gid: int) -> tuple[str, list[str]] | None:
    try:
        entry = grp.getgrgid(gid)
    except KeyError:
        return None
    return entry.gr_name, list(entry.gr_mem)


def _users() -> list[tuple[str, int]]:
    return [(entry.pw_name, entry.pw_gid) for entry in pwd.getpwall()]


def _this_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


@dataclass(frozen=True)
class Accounts:
    """The account database the group check reads (the system's by default; a test passes
    its own): ``group(gid)`` gives the group's name and member list (None: no such group),
    ``users()`` every user's name and primary gid, ``daemon_user`` the account the daemon
    runs as (this process's user; None: unknown)."""

    group: Callable[[int], tuple[str, list[str]] | None] = _group_entry
    users: Callable[[], Iterable[tuple[str, int]]] = _users
    daemon_user: str | None = field(default_factory=_this_user)

    def members(self, gid: int) -> tuple[str, list[str]]:
        """The group's name (its number when it has none) and every member: its member list
        and every user whose primary group it is."""
        entry = self.group(gid)
        name, listed = entry if entry is not None else (str(gid), [])
        members = list(dict.fromkeys([*listed, *(u for u, g in self.users() if g == gid)]))
        return name, members

    def trusted(self) -> frozenset[str]:
        """Who may share the store's group: root, ``redis``, the daemon's user (and the
        shipped unit's ``locker``, for a check run as root)."""
        names = {"root", REDIS_USER, DAEMON_USER}
        if self.daemon_user is not None:
            names.add(self.daemon_user)
        return frozenset(names)


def resolve_password_file(url: str) -> tuple[str, str | None]:
    """``url`` without its ``password_file`` query item, and the password read from it
    (None when the URL names no file). Refuses a file group or others can read."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    files = [value for key, value in query if key == "password_file"]
    if not files:
        return url, None
    if len(files) > 1:
        raise StoreConfigError("the Redis URL names password_file twice", op="connect")
    path = files[0]
    if not path:
        raise StoreConfigError("the Redis URL's password_file is empty", op="connect")
    try:
        info = os.stat(path)
        mode = info.st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StoreConfigError(
                f"the Redis password file {path} is accessible by group or others (mode "
                f"{stat.S_IMODE(mode):o}): chown it to the daemon's user, chmod 0400",
                op="connect")
        if info.st_uid not in (trusted_owners() or {0, os.geteuid()}):
            raise StoreConfigError(
                f"the Redis password file {path} is owned by uid {info.st_uid}, neither the "
                "daemon's user nor root: chown it to the daemon's user, chmod 0400",
                op="connect")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreConfigError(f"cannot read the Redis password file {path}: {exc.strerror}",
                               op="connect") from None
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise StoreConfigError(f"the Redis password file {path} is empty", op="connect")
    rest = urlencode([(k, v) for k, v in query if k != "password_file"])
    return urlunsplit(parts._replace(query=rest)), password


def check_store_access(url: str, *, production: bool, has_password: bool,
                       accounts: Accounts | None = None) -> None:
    """Refuse a store that users other than the daemon can reach (see the module docstring).

    ``url`` is the store URL without its ``password_file`` item; ``has_password`` says
    whether a password was found (in the URL or its file); ``accounts`` is who is who
    (default: this machine's accounts).
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        _check_socket(Path(parts.path), accounts or Accounts())
        return
    if parts.scheme not in ("redis", "rediss") or not production:
        return
    host = parts.hostname or ""
    if not is_loopback_host(host):
        raise StoreConfigError(
            f"the store is on {host!r}, another machine, over TCP: in production the store "
            "is the cabinet's own Redis on its unix socket (deploy/redis.conf)", op="connect")
    if not (has_password or parts.password):
        raise StoreConfigError(
            "the store is Redis over TCP without a password: every local user could rewrite "
            "code hashes. Use the unix socket of deploy/redis.conf, or an ACL user and "
            "password_file=", op="connect")


def _socket_owners() -> frozenset[int]:
    """Who may own the store's socket: root, the daemon's user, and the ``redis`` account
    the cabinet's Redis runs as (deploy/redis.conf)."""
    owners = set(trusted_owners() or {0, os.geteuid()})
    try:
        owners.add(pwd.getpwnam(REDIS_USER).pw_uid)
    except KeyError:
        pass
    return frozenset(owners)


def _check_group(what: str, gid: int, path: Path, accounts: Accounts) -> None:
    name, members = accounts.members(gid)
    others = [m for m in members if m not in accounts.trusted()]
    if others:
        raise StoreConfigError(
            f"{what} is open to its group {name!r} (gid {gid}), whose members include "
            f"{', '.join(sorted(others))}: each of them could reach the store and rewrite "
            f"code hashes. Give {path} a group of its own (Redis' group, with only the "
            "daemon's user added: deploy/redis.conf) or take the group's access away",
            op="connect")


_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER, _ACL_GROUP = 0x02, 0x08  # named entries; the rest are the mode bits' own
_ACL_ENTRY = struct.Struct("<HHI")


def named_acl_entries(path: Path) -> list[str]:
    """The named entries (``u:UID:rwx``, ``g:GID:rwx``) of ``path``'s POSIX access ACL:
    access beyond its owner, group and others, which the mode bits do not show. Empty when
    there is no ACL (or the file system has none). An ACL that does not parse is reported
    as one entry ``unreadable``."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT):
            return []
        return [f"unreadable ({exc.strerror})"]
    if len(raw) < 4 or (len(raw) - 4) % _ACL_ENTRY.size or struct.unpack_from(
            "<I", raw)[0] != _ACL_VERSION:
        return ["unreadable"]
    named = []
    for offset in range(4, len(raw), _ACL_ENTRY.size):
        tag, perm, ident = _ACL_ENTRY.unpack_from(raw, offset)
        if tag in (_ACL_USER, _ACL_GROUP):
            rwx = "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))
            named.append(f"{'u' if tag == _ACL_USER else 'g'}:{ident}:{rwx}")
    return named


def _check_acl(what: str, path: Path) -> None:
    named = named_acl_entries(path)
    if named:
        raise StoreConfigError(
            f"{what} carries a POSIX ACL ({', '.join(named)}) that reaches users beyond its "
            f"owner and group: they could reach the store and rewrite code hashes. Remove it "
            f"(setfacl -b {path}) and grant access through Redis' group", op="connect")


def _check_socket(path: Path, accounts: Accounts) -> None:
    try:
        info = path.stat()
    except OSError:
        return  # not there yet: the connection attempt reports it
    mode = info.st_mode
    if info.st_uid not in _socket_owners():
        raise StoreConfigError(
            f"the store's socket {path} is owned by uid {info.st_uid}, neither root, the "
            f"daemon's user nor {REDIS_USER!r}: that user's server would answer the daemon "
            "(and every code check)", op="connect")
    if mode & stat.S_IWOTH:
        raise StoreConfigError(
            f"the store's socket {path} is writable by every local user (mode "
            f"{stat.S_IMODE(mode):o}): set unixsocketperm 770 in the Redis config and put "
            "the daemon's user in Redis' group", op="connect")
    if mode & stat.S_IWGRP:
        _check_group(f"the store's socket {path} (mode {stat.S_IMODE(mode):o})", info.st_gid,
                     path, accounts)
    _check_acl(f"the store's socket {path}", path)
    _check_acl(f"{path.parent}, the store's socket directory,", path.parent)
    for parent in path.parents:
        try:
            pinfo = parent.stat()
        except OSError:
            continue
        pmode = pinfo.st_mode
        # The socket's own directory may not be world-writable even with the sticky bit
        # (/tmp): while Redis is down, anyone could create a socket of their own there.
        if pmode & stat.S_IWOTH and (parent == path.parent or not pmode & stat.S_ISVTX):
            raise StoreConfigError(
                f"{parent}, on the path of the store's socket {path}, is writable by every "
                f"local user (mode {stat.S_IMODE(pmode):o}): anyone could put their own "
                "server there. Use a directory only Redis can write (/run/redis-locker)",
                op="connect")
        # Entering a directory alone gives nothing without write permission on the socket;
        # writing the socket's directory lets its group replace the socket with a server of
        # its own, writing one above it lets its group move that directory away.
        if pmode & stat.S_IWGRP and not (parent != path.parent and pmode & stat.S_ISVTX):
            where = ("the store's socket directory" if parent == path.parent
                     else f"on the path of the store's socket {path}")
            _check_group(f"{parent}, {where} (mode {stat.S_IMODE(pmode):o})", pinfo.st_gid,
                         parent, accounts)
