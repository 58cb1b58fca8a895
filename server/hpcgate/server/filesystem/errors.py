"""Cluster-side failures to ServiceErrors, keeping the cluster's own words.

pyfirecrest and people read the message ("No such file or directory"), so
the message is the cluster's text; the kind and reason are derived from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.commands import Output

# The words a command prints for a condition, and what they mean.
_COMMAND_WORDS: tuple[tuple[str, ErrorKind, str], ...] = (
    ("No such file or directory", ErrorKind.NOT_FOUND, "NOT_FOUND"),
    ("Permission denied", ErrorKind.PERMISSION_DENIED, "PERMISSION_DENIED"),
    ("Operation not permitted", ErrorKind.PERMISSION_DENIED, "PERMISSION_DENIED"),
    ("File exists", ErrorKind.ALREADY_EXISTS, "ALREADY_EXISTS"),
    ("Not a directory", ErrorKind.INVALID_ARGUMENT, "NOT_A_DIRECTORY"),
    ("Is a directory", ErrorKind.INVALID_ARGUMENT, "IS_A_DIRECTORY"),
    # ELOOP: the caller's path is a symlink loop, not a server fault (the fuzz found a 500).
    ("Too many levels of symbolic links", ErrorKind.INVALID_ARGUMENT, "SYMLINK_LOOP"),
    ("Directory not empty", ErrorKind.FAILED_PRECONDITION, "DIRECTORY_NOT_EMPTY"),
    ("No space left on device", ErrorKind.RESOURCE_EXHAUSTED, "NO_SPACE"),
    ("Disk quota exceeded", ErrorKind.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
    ("invalid user", ErrorKind.INVALID_ARGUMENT, "INVALID_OWNER"),
    ("invalid group", ErrorKind.INVALID_ARGUMENT, "INVALID_OWNER"),
)


# SFTP status codes (draft-ietf-secsh-filexfer) in the same words.
_SFTP_WORDS: dict[int, str] = {
    asyncssh.FX_NO_SUCH_FILE: "No such file or directory",
    asyncssh.FX_NO_SUCH_PATH: "No such file or directory",
    asyncssh.FX_PERMISSION_DENIED: "Permission denied",
    asyncssh.FX_FILE_ALREADY_EXISTS: "File exists",
    asyncssh.FX_NOT_A_DIRECTORY: "Not a directory",
    asyncssh.FX_FILE_IS_A_DIRECTORY: "Is a directory",
    asyncssh.FX_DIR_NOT_EMPTY: "Directory not empty",
    asyncssh.FX_NO_SPACE_ON_FILESYSTEM: "No space left on device",
    asyncssh.FX_QUOTA_EXCEEDED: "Disk quota exceeded",
}


# dash, the cluster's /bin/sh, reports a failed redirection (``exec 3<"$1"``,
# how the confined steps hold a file) in words of its own, not strerror's:
# "sh: 1: cannot open /x: No such file". Every other tool, and FirecREST's
# bash, prints "/x: No such file or directory", which clients match on.
_DASH_REDIRECT = re.compile(r"^[^:\n]+: \d+: cannot (?:open|create) (.+): ([^:\n]+)$", re.M)
_DASH_WORDS = {
    "No such file": "No such file or directory",
    "Directory nonexistent": "No such file or directory",
    "nonexistent directory": "No such file or directory",
}


def _strerror_words(text: str) -> str:
    """``text`` with dash's redirection errors in the C library's words."""

    def plain(match: re.Match[str]) -> str:
        return f"{match[1]}: {_DASH_WORDS.get(match[2], match[2])}"

    return _DASH_REDIRECT.sub(plain, text)


def _classify(text: str) -> tuple[ErrorKind, str] | None:
    for words, code, reason in _COMMAND_WORDS:
        if words in text:
            return code, reason
    return None


def words_error(words: str, path: str, unknown: str = "SFTP_FAILURE") -> ServiceError:
    """The ServiceError for a failure on ``path`` said in the C library's ``words``.

    Classified by the words alone, never by a path that may hold them.
    """
    code, reason = _classify(words) or (ErrorKind.INTERNAL, unknown)
    return ServiceError(code, f"{path}: {words}", reason, metadata={"path": path})


def sftp_error(error: asyncssh.SFTPError, path: str) -> ServiceError:
    """The ServiceError for an SFTP failure on ``path``."""
    return words_error(_SFTP_WORDS.get(error.code, error.reason or "Failure"), path)


def step_error(output: Output, path: str) -> ServiceError:
    """The ServiceError for a failed shell step acting on one ``path``.

    A tool's message ends with the C library's words ("mkdir: cannot
    create directory 'x': File exists"); the step acts on a bare name in a
    held directory, so the words of its last line are told about ``path``,
    the caller's own name for it.
    """
    lines = _strerror_words(output.stderr.decode(errors="replace")).strip().splitlines()
    words = lines[-1].rpartition(": ")[2] if lines else f"exit status {output.exit_status}"
    return words_error(words, path, "COMMAND_FAILED")


def command_error(argv: Sequence[str], output: Output) -> ServiceError:
    """The ServiceError for a command that failed; its stderr is the message."""
    text = _strerror_words(output.stderr.decode(errors="replace").strip())
    text = text or f"exit status {output.exit_status}"
    found = _classify(text)
    if found is None:
        return ServiceError(ErrorKind.INTERNAL, f"{argv[0]}: {text}", "COMMAND_FAILED")
    return ServiceError(found[0], text, found[1])


def checked(argv: Sequence[str], output: Output) -> bytes:
    """stdout of a command that must succeed; raises its mapped error otherwise."""
    if output.exit_status != 0:
        raise command_error(argv, output)
    return output.stdout
