"""Files and sockets the daemon trusts, that another local user could read or replace:
the code key (its file and its directory), the store's socket and its password file. Each
is refused with an error that says what to fix."""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.security.codes import CodeKey, CodeKeyError, code_key_issue
from controller.store.access import Accounts, check_store_access, resolve_password_file
from controller.store.errors import StoreConfigError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
OTHER = 4242  # a uid that is neither root, this process, nor any daemon account


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory


# -- the code key's directory ------------------------------------------------------------


def test_a_private_directory_holds_the_code_key(private_dir: Path) -> None:
    key = CodeKey.load_or_create(private_dir / "code.key")
    assert CodeKey.load_or_create(private_dir / "code.key").key_id == key.key_id


@pytest.mark.parametrize(("mode", "says"), [(0o777, "every local user"),
                                            (0o1777, "every local user"),
                                            (0o770, "its group"), (0o730, "its group")])
def test_a_code_key_in_a_directory_others_can_write_is_refused(
    private_dir: Path, mode: int, says: str,
) -> None:
    CodeKey.load_or_create(private_dir / "code.key")  # made while the directory was private
    private_dir.chmod(mode)
    with pytest.raises(CodeKeyError, match=says):
        CodeKey.load_or_create(private_dir / "code.key")
    # Nor is a new key made there.
    (private_dir / "code.key").unlink()
    with pytest.raises(CodeKeyError, match="replace the code key"):
        CodeKey.load_or_create(private_dir / "code.key")
    assert not (private_dir / "code.key").exists()


@needs_root
def test_a_code_key_in_a_directory_another_user_owns_is_refused(private_dir: Path) -> None:
    CodeKey.load_or_create(private_dir / "code.key")
    os.chown(private_dir, OTHER, OTHER)
    with pytest.raises(CodeKeyError, match=f"owned by uid {OTHER}"):
        CodeKey.load_or_create(private_dir / "code.key")


def test_a_code_key_under_a_world_writable_directory_without_sticky_bit_is_refused(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    directory = shared / "state"
    directory.mkdir(mode=0o700)
    with pytest.raises(CodeKeyError, match=r"shared, on the path of .*every local user"):
        CodeKey.load_or_create(directory / "code.key")


def test_a_code_key_under_a_group_writable_grandparent_is_refused(tmp_path: Path) -> None:
    # Attack: the key's directory is private, the one above it is its group's: any member
    # can move the key's directory away and put one of their own (and their key) there.
    top = tmp_path / "top"
    top.mkdir(mode=0o700)
    directory = top / "state"
    directory.mkdir(mode=0o700)
    key = CodeKey.load_or_create(directory / "code.key")
    top.chmod(0o770)
    with pytest.raises(CodeKeyError, match=r"top, on the path of .*writable by its group"):
        CodeKey.load_or_create(directory / "code.key")
    assert code_key_issue(directory / "code.key", frozenset({0, os.geteuid()})) is not None
    top.chmod(0o1777)  # sticky above the key's own directory: nobody else can move it
    assert CodeKey.load_or_create(directory / "code.key").key_id == key.key_id


def test_a_code_key_through_a_symlink_into_an_open_directory_is_refused(
    tmp_path: Path, private_dir: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    CodeKey.load_or_create(shared / "code.key")
    shared.chmod(0o777)
    (private_dir / "code.key").symlink_to(shared / "code.key")
    with pytest.raises(CodeKeyError, match=r"-> .*shared.*every local user"):
        CodeKey.load_or_create(private_dir / "code.key")
    issue = code_key_issue(private_dir / "code.key", frozenset({0, os.geteuid()}))
    assert issue is not None
    assert "every local user" in issue
    # A link in an open directory to a private key: the link can be swapped.
    shared.chmod(0o700)
    CodeKey.load_or_create(private_dir / "code.key")
    private_dir.chmod(0o777)
    with pytest.raises(CodeKeyError, match="state, on the path of"):
        CodeKey.load_or_create(private_dir / "code.key")


@needs_root
def test_a_code_key_under_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir(mode=0o755)
    (top / "state").mkdir(mode=0o700)
    CodeKey.load_or_create(top / "state" / "code.key")
    os.chown(top, OTHER, OTHER)  # 0755, but its owner can rename state away
    with pytest.raises(CodeKeyError, match=f"top, on the path of .*owned by uid {OTHER}"):
        CodeKey.load_or_create(top / "state" / "code.key")


@needs_root
def test_a_code_key_file_another_user_owns_is_refused(private_dir: Path) -> None:
    CodeKey.load_or_create(private_dir / "code.key")
    os.chown(private_dir / "code.key", OTHER, OTHER)
    with pytest.raises(CodeKeyError, match=f"owned by uid {OTHER}"):
        CodeKey.load_or_create(private_dir / "code.key")


# -- the store's socket and password file ------------------------------------------------


@pytest.fixture
def unix_socket(private_dir: Path) -> Iterator[Path]:
    path = private_dir / "redis.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        path.chmod(0o770)
        yield path


def test_the_daemons_own_socket_passes(unix_socket: Path) -> None:
    check_store_access(f"unix://{unix_socket}?db=0", production=True, has_password=True)


@needs_root
def test_a_socket_another_user_owns_is_refused(unix_socket: Path) -> None:
    os.chown(unix_socket, OTHER, OTHER)
    with pytest.raises(StoreConfigError, match=f"owned by uid {OTHER}"):
        check_store_access(f"unix://{unix_socket}?db=0", production=False, has_password=True)


@needs_root
def test_a_password_file_another_user_owns_is_refused(private_dir: Path) -> None:
    secret = private_dir / "redis-password"
    secret.write_text("pw\n")
    secret.chmod(0o400)
    url = f"unix:///run/r.sock?db=0&password_file={secret}"
    assert resolve_password_file(url)[1] == "pw"
    os.chown(secret, OTHER, OTHER)
    with pytest.raises(StoreConfigError, match=f"owned by uid {OTHER}"):
        resolve_password_file(url)


# -- the store's socket shared through its group ------------------------------------------


def _accounts(groups: dict[int, tuple[str, list[str]]],
              users: list[tuple[str, int]]) -> Accounts:
    """A fake account database: ``groups`` by gid, ``users`` as (name, primary gid); the
    daemon runs as ``locker``."""
    return Accounts(group=groups.get, users=lambda: users, daemon_user="locker")


_MACHINE = [("root", 0), ("locker", 990), ("redis", 105), ("alice", 100), ("bob", 1001)]


@pytest.mark.parametrize(("groups", "says"), [
    # The attack: gid 100 `users`, alice's primary group.
    ({100: ("users", [])}, "'users' (gid 100), whose members include alice"),
    # A listed (supplementary) member; both kinds named.
    ({100: ("users", ["bob", "locker"])}, "whose members include alice, bob"),
    # A group with no entry, still someone's primary group.
    ({}, "'100' (gid 100), whose members include alice"),
])
def test_a_socket_its_group_shares_with_other_users_is_refused(
    unix_socket: Path, groups: dict[int, tuple[str, list[str]]], says: str,
) -> None:
    os.chown(unix_socket, -1, 100)  # mode 770: the group may connect
    with pytest.raises(StoreConfigError, match=re.escape(says)) as caught:
        check_store_access(f"unix://{unix_socket}?db=0", production=False, has_password=True,
                           accounts=_accounts(groups, _MACHINE))
    assert "group of its own" in str(caught.value)  # what to fix


def test_a_socket_directory_its_group_can_write_is_refused(unix_socket: Path) -> None:
    unix_socket.chmod(0o700)
    unix_socket.parent.chmod(0o770)
    os.chown(unix_socket.parent, -1, 100)
    with pytest.raises(StoreConfigError, match=r"socket directory .*'users' .*alice"):
        check_store_access(f"unix://{unix_socket}?db=0", production=False, has_password=True,
                           accounts=_accounts({100: ("users", [])}, _MACHINE))


def test_a_socket_group_of_redis_and_the_daemon_passes(unix_socket: Path) -> None:
    # The shipped layout: Redis' group, the daemon's user added to it; root in it too.
    os.chown(unix_socket, -1, 105)
    unix_socket.parent.chmod(0o770)
    os.chown(unix_socket.parent, -1, 105)
    check_store_access(f"unix://{unix_socket}?db=0", production=True, has_password=True,
                       accounts=_accounts({105: ("redis", ["locker", "root"])}, _MACHINE))
    # A socket its group may not write, in a directory its group may not write: the
    # group's members do not matter.
    unix_socket.chmod(0o750)
    unix_socket.parent.chmod(0o750)
    os.chown(unix_socket, -1, 100)
    check_store_access(f"unix://{unix_socket}?db=0", production=True, has_password=True,
                       accounts=_accounts({100: ("users", [])}, _MACHINE))


def test_a_socket_under_a_grandparent_its_group_shares_is_refused(tmp_path: Path) -> None:
    # Attack: gp/sub/redis.sock, gp mode 0770 group `users`: alice moves sub away and puts
    # her own server at gp/sub/redis.sock.
    gp = tmp_path / "gp"
    gp.mkdir(mode=0o700)
    (gp / "sub").mkdir(mode=0o700)
    path = gp / "sub" / "redis.sock"
    accounts = _accounts({100: ("users", []), 105: ("redis", ["locker"])}, _MACHINE)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        path.chmod(0o700)
        check_store_access(f"unix://{path}?db=0", production=True, has_password=True,
                           accounts=accounts)
        gp.chmod(0o770)
        os.chown(gp, -1, 100)
        with pytest.raises(StoreConfigError,
                           match=r"gp, on the path of the store's socket .*'users'.*alice"):
            check_store_access(f"unix://{path}?db=0", production=True, has_password=True,
                               accounts=accounts)
        os.chown(gp, -1, 105)  # a group of Redis and the daemon alone may
        check_store_access(f"unix://{path}?db=0", production=True, has_password=True,
                           accounts=accounts)


def _acl(*named: tuple[int, int, int]) -> bytes:
    """A POSIX access ACL as the kernel stores it: version 2, then (tag, perm, id) entries;
    the owner/group/mask/other entries around ``named`` ones (the mask only with them)."""
    undefined = 0xFFFFFFFF
    entries = sorted(  # in tag order, as the kernel wants
        [(0x01, 7, undefined), *named, (0x04, 0, undefined),
         *([(0x10, 6, undefined)] if named else []), (0x20, 0, undefined)])
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _set_acl(path: Path, acl: bytes) -> None:
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            pytest.skip(f"no POSIX ACLs here: {exc.strerror}")
        raise


@pytest.mark.parametrize("target", ["socket", "directory"])
def test_a_socket_or_directory_with_an_acl_naming_another_user_is_refused(
    unix_socket: Path, target: str,
) -> None:
    # Attack: `setfacl -m u:nobody:rw redis.sock`; ls shows srwxrw----+ and the mode bits
    # alone looked like the shipped 770 socket.
    unix_socket.chmod(0o700)
    where = unix_socket if target == "socket" else unix_socket.parent
    _set_acl(where, _acl((0x02, 6 if target == "socket" else 7, 65534)))
    with pytest.raises(StoreConfigError, match=r"POSIX ACL \(u:65534:rw.?\).*setfacl -b"):
        check_store_access(f"unix://{unix_socket}?db=0", production=False, has_password=True,
                           accounts=_accounts({}, _MACHINE))
    _set_acl(where, _acl((0x08, 6, 100)))  # a named group too
    with pytest.raises(StoreConfigError, match="g:100:rw-"):
        check_store_access(f"unix://{unix_socket}?db=0", production=False, has_password=True,
                           accounts=_accounts({}, _MACHINE))
    _set_acl(where, _acl())  # the base entries only: the mode bits say it all
    check_store_access(f"unix://{unix_socket}?db=0", production=False, has_password=True,
                       accounts=_accounts({}, _MACHINE))
