"""The path policy: absolute, no NUL, under a configured filesystem; errors name the field."""

from __future__ import annotations

import copy

import pytest

from conftest import SKELETON_CONFIG
from hpcgate.server.config import SystemConfig, parse_config
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem.paths import MAX_PATH, check_path

# daint: /home (default) and /scratch.
SYSTEM = parse_config(SKELETON_CONFIG).systems[0]


def _system_with(*roots: str) -> SystemConfig:
    data = copy.deepcopy(SKELETON_CONFIG)
    data["systems"][0]["filesystems"] = [{"path": root} for root in roots]
    return parse_config(data).systems[0]


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/home", "/home"),
        ("/home/", "/home"),
        ("/home/alice", "/home/alice"),
        ("/home/alice/a b/'q'\"/$(x)`y`\n-*", "/home/alice/a b/'q'\"/$(x)`y`\n-*"),
        ("/scratch/alice/../bob/./f", "/scratch/bob/f"),
        ("//home//alice///f", "/home/alice/f"),
        ("/home/alice/é-" + "x" * 250, "/home/alice/é-" + "x" * 250),
    ],
)
def test_allowed_paths_come_back_normalised(path: str, normal: str) -> None:
    assert check_path(SYSTEM, "path", path) == normal


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "PATH_MISSING"),
        ("home/alice", "PATH_NOT_ABSOLUTE"),
        ("./f", "PATH_NOT_ABSOLUTE"),
        ("~/f", "PATH_NOT_ABSOLUTE"),
        ("/home/alice/\x00/etc/passwd", "PATH_INVALID"),
        ("/home/" + "a" * MAX_PATH, "PATH_INVALID"),
        ("/etc/passwd", "PATH_OUTSIDE_FILESYSTEMS"),
        ("/tmp/pwned", "PATH_OUTSIDE_FILESYSTEMS"),
        ("/", "PATH_OUTSIDE_FILESYSTEMS"),
        ("/home/../etc/shadow", "PATH_OUTSIDE_FILESYSTEMS"),
        ("/home/alice/../../etc", "PATH_OUTSIDE_FILESYSTEMS"),
        ("/homeother/alice", "PATH_OUTSIDE_FILESYSTEMS"),
        ("/scratch2", "PATH_OUTSIDE_FILESYSTEMS"),
    ],
)
@pytest.mark.parametrize("field", ["path", "sourcePath", "targetPath"])
def test_refused_paths_name_the_field(path: str, reason: str, field: str) -> None:
    with pytest.raises(ServiceError) as caught:
        check_path(SYSTEM, field, path)
    error = caught.value
    assert error.code == ErrorKind.INVALID_ARGUMENT
    assert error.reason == reason
    assert error.message.startswith(f"{field}: ")
    assert list(error.fields) == [field]


def test_outside_error_lists_the_filesystems() -> None:
    with pytest.raises(ServiceError, match=r"\(/home, /scratch\)"):
        check_path(SYSTEM, "path", "/etc")


def test_a_root_filesystem_admits_every_absolute_path() -> None:
    system = _system_with("/")
    assert check_path(system, "path", "/etc/../var/x") == "/var/x"
    with pytest.raises(ServiceError):
        check_path(system, "path", "var/x")


def test_trailing_slash_in_the_configured_root_is_ignored() -> None:
    system = _system_with("/data/")
    assert check_path(system, "path", "/data/x") == "/data/x"
    assert check_path(system, "path", "/data") == "/data"
    with pytest.raises(ServiceError):
        check_path(system, "path", "/database")


def test_no_filesystems_refuses_everything() -> None:
    data = copy.deepcopy(SKELETON_CONFIG)
    system = parse_config(data).systems[1]  # eiger: none configured
    with pytest.raises(ServiceError, match="none configured"):
        check_path(system, "path", "/home/alice")
