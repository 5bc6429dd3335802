"""Whether a local file holding a secret or a trust anchor is this process's own.

A file that decides whom the daemon or dispatch trusts (the cabinet's code key, dispatch's
pinned code keys) is only as safe as the weakest directory on its way from ``/``: whoever
can write any of them can put a file of their own in its place (rename the directory away,
swap a symlink). :func:`private_file_issue` walks the whole way, symlinks followed, and says
what is wrong, or None:

- the file (its final target) must be owned by one of ``owners`` and writable by neither
  its group nor others;
- every directory the path goes through (the symlinks' own directories too, and every one
  above them up to ``/``) must be owned by one of ``owners`` or root and writable by
  neither group nor others, except a sticky world-writable directory (``/tmp``, mode 1777):
  nobody but its owner may rename or remove what is in it. A sticky directory is accepted
  above the file's own directory; as the file's own directory only when ``sticky_home``
  (and the file is this process's own: in a sticky directory, only the file's owner can
  replace it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["private_file_issue", "resolve_links"]

_MAX_LINKS = 40  # as the kernel's own limit on a path's symlinks


def resolve_links(path: Path) -> tuple[Path, list[Path]]:
    """``path``'s final target (symlinks followed, one at a time) and every directory a link
    or the target itself sits in (resolved). ``OSError`` (ELOOP) on a link loop."""
    current = Path(os.path.abspath(path))
    homes: list[Path] = []
    for _ in range(_MAX_LINKS):
        home = current.parent.resolve()
        if current.name in ("", ".", ".."):
            current = current.resolve()
            home = current.parent
        else:
            current = home / current.name
        if home not in homes:
            homes.append(home)
        if not current.is_symlink():
            return current, homes
        current = home / os.readlink(current)
    raise OSError(40, f"{path}: too many levels of symbolic links")


def _writable(mode: int) -> str | None:
    if mode & stat.S_IWOTH:
        return "every local user"
    if mode & stat.S_IWGRP:
        return "its group"
    return None


def private_file_issue(path: Path, owners: frozenset[int] | None, *, what: str, fix: str,
                       sticky_home: bool = False, check_file: bool = True) -> str | None:
    """What makes the file at ``path`` replaceable by someone other than ``owners`` (None:
    owners not checked, modes still are), or None. ``what`` names the file in the message
    ("the pinned code keys"), ``fix`` says what to do. ``check_file=False`` checks only the
    directories (a file not made yet). A file or directory that is not there is not an
    issue here (reading or creating it reports it)."""
    try:
        target, homes = resolve_links(path)
    except OSError as exc:
        return f"{path}: cannot resolve {what}: {exc.strerror or exc}"
    shown = f"{path}" if target == Path(os.path.abspath(path)) else f"{path} (-> {target})"
    file_uid: int | None = None
    if check_file:
        try:
            info = target.stat()
        except FileNotFoundError:
            info = None
        except OSError as exc:
            return f"{shown}: cannot read {what}: {exc.strerror}"
        if info is not None:
            file_uid = info.st_uid
            if owners is not None and info.st_uid not in owners:
                return (f"{shown}, {what}, is owned by uid {info.st_uid}, not by this user "
                        f"(nor root): that user could change it. {fix}")
            who = _writable(info.st_mode)
            if who is not None:
                return (f"{shown}, {what}, is writable by {who} (mode "
                        f"{stat.S_IMODE(info.st_mode):04o}): they could change it. {fix}")
    directory_owners = None if owners is None else owners | {0}
    own_home = target.parent
    seen: set[Path] = set()
    for home in homes:
        for directory in (home, *home.parents):
            if directory in seen:
                continue
            seen.add(directory)
            try:
                info = directory.stat()
            except OSError:
                continue  # not there yet: making the file reports it
            if directory_owners is not None and info.st_uid not in directory_owners:
                return (f"{directory}, on the path of {shown} ({what}), is owned by uid "
                        f"{info.st_uid}, neither this user nor root: that user could "
                        f"replace {what}. {fix}")
            who = _writable(info.st_mode)
            if who is None:
                continue
            sticky_ok = (info.st_mode & stat.S_ISVTX
                         and (directory != own_home
                              or (sticky_home and file_uid is not None
                                  and file_uid == os.geteuid())))
            if not sticky_ok:
                return (f"{directory}, on the path of {shown} ({what}), is writable by "
                        f"{who} (mode {stat.S_IMODE(info.st_mode):04o}): anyone there could "
                        f"replace {what}. {fix}")
    return None
