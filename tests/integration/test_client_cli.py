"""The ``hpcgate`` command driven as a user would, in a pseudo-terminal (pexpect).

Each test logs in (a profile in a temporary XDG_CONFIG_HOME) and runs the
installed ``hpcgate`` script. The server runs in the test's event loop, so
the blocking terminal session runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pexpect

from cluster_fixture import Cluster
from conftest import LiveService

HPCGATE = str(Path(sys.executable).with_name("hpcgate"))


def _env(config: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CONFIG_HOME": str(config), "COLUMNS": "120", "TERM": "xterm"}


def _run(config: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``hpcgate args`` in a pseudo-terminal; its exit status and everything it showed."""
    child = pexpect.spawn(HPCGATE, list(args), env=_env(config), encoding="utf-8", timeout=timeout)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus or 0, child.before or ""


async def _login(live: LiveService, config: Path) -> None:
    token = live.token("alice")
    args = ("login", "--target", live.grpc_target, "--system", live.system, "--token", token)
    status, shown = await asyncio.to_thread(_run, config, *args)
    assert status == 0, shown
    assert live.system in shown and "saved" in shown


async def test_put_and_get_show_a_progress_bar(
    live: LiveService, remote_dir: str, tmp_path: Path
) -> None:
    await _login(live, tmp_path / "config")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(8 * 1024 * 1024))
    status, shown = await asyncio.to_thread(
        _run, tmp_path / "config", "put", str(source), f"{remote_dir}/data.bin"
    )
    assert status == 0, shown
    assert "put data.bin" in shown and "MB" in shown  # bytes column of the bar
    back = tmp_path / "back.bin"
    status, shown = await asyncio.to_thread(
        _run, tmp_path / "config", "get", f"{remote_dir}/data.bin", "-o", str(back)
    )
    assert status == 0, shown
    assert "get data.bin" in shown and "MB" in shown
    assert (
        hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    )


async def test_json_output_parses(live: LiveService, remote_dir: str, tmp_path: Path) -> None:
    await _login(live, tmp_path / "config")
    status, shown = await asyncio.to_thread(
        _run, tmp_path / "config", "--json", "ls", "/home/alice"
    )
    assert status == 0, shown
    names = [entry["name"] for entry in json.loads(shown)]
    assert Path(remote_dir).name in names


async def test_a_wrong_path_is_one_clear_line_and_a_non_zero_exit(
    live: LiveService, remote_dir: str, tmp_path: Path
) -> None:
    await _login(live, tmp_path / "config")
    status, shown = await asyncio.to_thread(
        _run, tmp_path / "config", "stat", f"{remote_dir}/missing"
    )
    lines = [line for line in shown.splitlines() if line.strip()]
    assert status == 3, shown  # NOT_FOUND
    assert len(lines) == 1 and lines[0].startswith("hpcgate: ") and "missing" in lines[0]
    assert "Traceback" not in shown


async def test_watch_updates_when_the_job_finishes(
    live: LiveService, remote_dir: str, tmp_path: Path
) -> None:
    await _login(live, tmp_path / "config")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nsleep 3\n")
    status, shown = await asyncio.to_thread(
        _run, tmp_path / "config", "submit", str(script), "--workdir", remote_dir, "--name", "w"
    )
    assert status == 0, shown
    job_id = shown.split()[-1]

    def watch() -> tuple[list[str], int]:
        child = pexpect.spawn(
            HPCGATE, ["watch", job_id], env=_env(tmp_path / "config"), encoding="utf-8", timeout=60
        )
        seen = []
        while True:
            index = child.expect(["PENDING", "RUNNING", "COMPLETED", pexpect.EOF])
            if index == 3:
                break
            seen.append(["PENDING", "RUNNING", "COMPLETED"][index])
        child.close()
        return seen, child.exitstatus or 0

    seen, status = await asyncio.to_thread(watch)
    assert status == 0
    assert seen[-1] == "COMPLETED" and len(seen) >= 2  # the table changed in place


async def test_get_many_cp_mv_rm_and_cancel(
    live: LiveService, cluster: Cluster, remote_dir: str, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    await _login(live, config)
    files = {"a": "alpha\n", "b": "beta\n"}
    async with cluster.connect("alice") as conn:
        for name, text in files.items():
            await conn.run(f"printf %s {shlex.quote(text)} > {shlex.quote(remote_dir)}/{name}")

    into = tmp_path / "many"
    remotes = [f"{remote_dir}/{name}" for name in files]
    status, shown = await asyncio.to_thread(
        _run, config, "get", "--many", *remotes, "-o", str(into)
    )
    assert status == 0, shown
    assert "get 2 files" in shown  # one bar for the bulk call
    assert {p.name: p.read_text() for p in into.iterdir()} == files

    d = remote_dir
    # (arguments, exit status, text the command shows): each row after the one before.
    steps = [
        (("cp", f"{d}/a", f"{d}/c"), 0, ""),
        (("cat", f"{d}/c"), 0, "alpha"),
        (("mv", f"{d}/c", f"{d}/m"), 0, ""),
        (("stat", f"{d}/c"), 3, "No such file"),  # NOT_FOUND: moved away
        (("cat", f"{d}/m"), 0, "alpha"),
        (("rm", f"{d}/m"), 0, ""),
        (("stat", f"{d}/m"), 3, "No such file"),
    ]
    for args, expected, text in steps:
        status, shown = await asyncio.to_thread(_run, config, *args)
        assert (status, text in shown) == (expected, True), (args, shown)

    script = tmp_path / "long.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    args = ("submit", str(script), "--workdir", remote_dir, "--name", "to-cancel")
    status, shown = await asyncio.to_thread(_run, config, *args)
    assert status == 0, shown
    job_id = shown.split()[-1]
    status, shown = await asyncio.to_thread(_run, config, "cancel", job_id)
    assert status == 0, shown
    deadline = time.monotonic() + 60
    while True:
        status, shown = await asyncio.to_thread(_run, config, "--json", "jobs")
        states = {str(j["job_id"]): j["status"]["state"] for j in json.loads(shown)}
        if states.get(job_id, "").startswith("CANCELLED"):
            break
        assert time.monotonic() < deadline, states.get(job_id)
        await asyncio.sleep(1)
