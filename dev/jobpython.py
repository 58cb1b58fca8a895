"""A Python that a cluster user can run, with Snakemake and both executor plugins.

Snakemake runs itself again inside each batch job (``python -m snakemake
... --mode remote``), as the job's user, with the interpreter of the
Snakemake that submitted it. On the loopback cluster that user is alice, on
this same host, and the workspace's ``.venv`` is usually of no use to her:
its interpreter may live where only root can read (pyenv under /root), and
the repository itself may too. So this builds a virtual environment of the
system's ``/usr/bin/python3`` (Debian's, installed with the cluster's
packages: ``python3-venv``) under ``~alice/.hpcgate-job-python/<key>``:
the hpcgate client and the Snakemake plugin installed from this checkout
(copied, not editable), and the ``snakemake*`` requirements of the
workspace's ``dev`` extra (Snakemake and snakemake-executor-plugin-slurm).

The environment's directory is named by a digest of the requirements (and
of the local distributions' own dependencies): building it takes about a
minute, and a checkout that has not changed them reuses it; older ones are
removed. The two local distributions are reinstalled (without their
dependencies, a few seconds) whenever their sources change. Everything is
owned by root and readable by all, so alice can run it and not change it.

    python dev/jobpython.py       # builds if needed, prints the interpreter's path
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_PYTHON = Path("/usr/bin/python3")
USER = "alice"
HOME = Path(f"/home/{USER}")
PLACE = ".hpcgate-job-python"
# The local distributions the jobs need (the client, the plugin).
LOCAL = ("clients", "clients/snakemake-executor-plugin-hpcgate")


def requirements(root: Path = ROOT) -> list[str]:
    """The workspace's ``snakemake*`` dev requirements (the one place their versions live)."""
    with (root / "pyproject.toml").open("rb") as handle:
        dev = tomllib.load(handle)["project"]["optional-dependencies"]["dev"]
    return sorted(spec for spec in dev if spec.lower().startswith("snakemake"))


def _sources(root: Path) -> list[Path]:
    files: list[Path] = []
    for part in LOCAL:
        base = root / part
        files += sorted(base.glob("*.toml"))
        for package in ("hpcgate", "snakemake_executor_plugin_hpcgate"):
            if (base / package).is_dir():
                files += sorted(
                    p
                    for p in (base / package).rglob("*")
                    if p.is_file() and p.suffix in {".py", ".pyi", ".binpb", ".typed"}
                )
    return files


def _digest(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part + b"\0")
    return digest.hexdigest()[:16]


def base_key(root: Path = ROOT) -> str:
    """Digest of the third-party requirements: the environment's name."""
    deps = [(root / part / "pyproject.toml").read_bytes() for part in LOCAL]
    return _digest([spec.encode() for spec in requirements(root)] + deps)


def sources_key(root: Path = ROOT) -> str:
    """Digest of the local distributions' files."""
    return _digest(
        [str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() for p in _sources(root)]
    )


def _readable(target: Path) -> None:
    for path in [target, *target.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))


def ensure(root: Path = ROOT, home: Path = HOME) -> Path:
    """The environment's interpreter, built or brought up to date first."""
    place = home / PLACE
    target = place / base_key(root)
    python = target / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    local = [str(root / part) for part in LOCAL]
    if not (target / ".ready").exists():
        if not BASE_PYTHON.exists():
            raise RuntimeError(
                f"{BASE_PYTHON} is missing (dev/cluster/cluster.py installs python3-venv)"
            )
        place.mkdir(parents=True, exist_ok=True)
        place.chmod(0o755)
        for old in place.iterdir():
            shutil.rmtree(old, ignore_errors=True)
        subprocess.run([str(BASE_PYTHON), "-m", "venv", str(target)], check=True)
        subprocess.run([*pip, *local, *requirements(root)], check=True, stdout=sys.stderr)
        (target / ".ready").write_text("")
    stamp = target / ".sources"
    wanted = sources_key(root)
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run(
            [*pip, "--no-deps", "--force-reinstall", *local], check=True, stdout=sys.stderr
        )
        stamp.write_text(wanted)
    _readable(target)
    return python


def snakemake_argv(python: Path, args: Sequence[str], user: str = USER) -> list[str]:
    """``python -m snakemake args`` as ``user``.

    setpriv execs Snakemake itself with the user's ids (no shell or runuser
    in between), so a signal sent to the process reaches Snakemake.
    """
    ids = [f"--reuid={user}", f"--regid={user}", "--init-groups"]
    return ["setpriv", *ids, "--", str(python), "-m", "snakemake", *args]


def snakemake_env(python: Path, user: str = USER, **extra: str) -> dict[str, str]:
    """A clean environment for Snakemake as ``user``: the environment's bin first on PATH."""
    return {
        "HOME": f"/home/{user}",
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


if __name__ == "__main__":
    print(ensure())
