"""Whether a cache dir can be trusted: nobody but its owner could have written its entries."""

from __future__ import annotations

import os


class UntrustedCacheDir(PermissionError):
    """A cache dir that another user could have written (so its entries are not trusted)."""


def check_trusted(path: str) -> None:
    """Refuse a cache dir another user owns or could write to (as ssh does).

    Writable by others is refused. Writable by its group is refused too, unless that group is
    the owner's own (the user private group that a umask of 002 assumes, so that a cache
    committed to git and cloned there is trusted). A missing dir is fine (it is created 0700).
    Raises ``UntrustedCacheDir``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows has no such permission bits
        return
    if st.st_uid not in (os.geteuid(), 0):
        raise UntrustedCacheDir(f"the cache dir {path} is owned by another user (uid {st.st_uid}); not trusted")
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and not _private_group(st.st_uid, st.st_gid)):
        raise UntrustedCacheDir(
            f"the cache dir {path} is writable by group or others (mode {st.st_mode & 0o777:o}); not trusted. "
            f"Fix it with: chmod go-w {path}"
        )


def _private_group(uid: int, gid: int) -> bool:
    """Whether ``gid`` is the user private group of ``uid`` (same name, no other members)."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid).pw_name
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}
