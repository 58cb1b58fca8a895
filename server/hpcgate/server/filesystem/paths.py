"""The path policy by text: absolute, no NUL, under a configured filesystem.

Checked before anything reaches the cluster, so a bad path changes nothing.
This check is lexical (after normalising ``..`` and ``//``); where a path
leads through links is checked on the cluster, as the user, by
:mod:`hpcgate.server.filesystem.confine`. What a user may read or write
inside the filesystems is the cluster's own permissions' call.
"""

from __future__ import annotations

import posixpath

from hpcgate.server.config import SystemConfig
from hpcgate.server.errors import invalid_argument

# PATH_MAX on Linux; longer paths cannot name anything.
MAX_PATH = 4096


def check_path(system: SystemConfig, field: str, path: str) -> str:
    """``path`` normalised if ``system`` allows it; else INVALID_ARGUMENT naming ``field``."""
    if not path:
        raise invalid_argument(field, "must not be empty", "PATH_MISSING")
    if "\x00" in path:
        raise invalid_argument(field, "must not contain NUL", "PATH_INVALID")
    if len(path.encode()) > MAX_PATH:
        raise invalid_argument(field, f"longer than {MAX_PATH} bytes", "PATH_INVALID")
    if not path.startswith("/"):
        raise invalid_argument(field, f"must be absolute, got {path!r}", "PATH_NOT_ABSOLUTE")
    # normpath keeps a leading "//"; POSIX allows it to mean something else, we don't.
    normal = "/" + posixpath.normpath(path).lstrip("/")
    for filesystem in system.filesystems:
        root = filesystem.path.rstrip("/") or "/"
        if normal == root or normal.startswith(root.rstrip("/") + "/"):
            return normal
    roots = ", ".join(fs.path for fs in system.filesystems) or "none configured"
    raise invalid_argument(
        field,
        f"{path!r} is not under a configured filesystem ({roots})",
        "PATH_OUTSIDE_FILESYSTEMS",
    )
