"""``make bench-instructions``: instructions per request of the server and the edge, by callgrind.

Wall times on a shared 2-core machine swing by +-20 % between runs of the
same code; an instruction count does not: valgrind counts what the process
executes, whatever else the machine does. So this is the figure for "did
that change make a request cost more?" (issue 15's "no figure worse by more
than 10 %", issue 16's CPU targets), beside ``make bench``'s wall times.

The server and the edge start as ``make run`` starts them (``dev/run.py``
of the tree measured), each under ``valgrind --tool=callgrind`` with
instrumentation off until the measured window. Periodic work (health
probes, key refresh) is moved out of the way by long intervals, and the
instructions of an idle window of the same length are subtracted. Each
route is called ``--requests`` times in sequence after a warm-up.

This file imports nothing of ``bench`` (only the measured tree's
``dev/run.py``), so it can measure another checkout with that checkout's
interpreter, for a before/after pair on one machine::

    /work/wt/base/.venv/bin/python bench/instructions.py --tree /work/wt/base

Results: ``bench/results/<date>-instructions.json``, compared with the
newest earlier one (or ``--baseline``): a count more than 10 % higher is
flagged (the exit status stays 0, as in ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORSE = 1.10
# Below this a count is what an idle window subtracts, not work: the edge in a
# gRPC figure, which it does not serve.
NOISE = 20_000
FIXED_FILES = 10  # a directory of this many 1 KiB files, made once, never changed


def _fixed_directory(home: str, user: str) -> str:
    """A directory whose listing never changes (other tests add files to the home)."""
    path = Path(home) / "hpcgate-instructions"
    if not (path / f"f{FIXED_FILES}").exists():
        path.mkdir(exist_ok=True)
        for index in range(1, FIXED_FILES + 1):
            (path / f"f{index}").write_bytes(b"x" * 1024)
        subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=True)
    stamp = time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, -1))
    for entry in [path, *path.iterdir()]:
        os.utime(entry, (stamp, stamp))
    return str(path)


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _dumps(out_dir: Path, pid: int) -> set[Path]:
    return set(out_dir.glob(f"cg.{pid}")) | set(out_dir.glob(f"cg.{pid}.*"))


def _dumped(out_dir: Path, pid: int, before: set[Path]) -> int:
    """Instructions in the dump ``callgrind_control -d`` just wrote (its summary line)."""
    for _ in range(200):
        new = _dumps(out_dir, pid) - before
        if new:
            break
        time.sleep(0.05)
    total = 0
    for path in new:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
    return total


def _window(
    out_dir: Path, pids: dict[str, int], work: Callable[[], None]
) -> tuple[float, dict[str, int]]:
    """Instructions each process executes while ``work`` runs, and how long it ran."""
    for pid in pids.values():
        _control(pid, "-i", "on")
        _control(pid, "-z")
    started = time.monotonic()
    work()
    took = time.monotonic() - started
    counts = {}
    for name, pid in pids.items():
        before = _dumps(out_dir, pid)
        _control(pid, "-d")
        _control(pid, "-i", "off")
        counts[name] = _dumped(out_dir, pid, before)
    return took, counts


def measure(tree: Path, requests: int) -> dict[str, Any]:
    """Instructions per request of each route, per process, in ``tree``."""
    sys.path[:0] = [str(tree / "dev"), str(tree)]
    os.chdir(tree)
    import grpc

    import localsite
    import run as devrun  # the measured tree's own
    from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

    out_dir = tree / ".hpcgate" / "instructions"
    out_dir.mkdir(parents=True, exist_ok=True)
    local_config = localsite.local_config
    # dev/run.py starts both processes with sys.executable: point it at a shim
    # that runs the same interpreter under callgrind, instrumentation off.
    shim = out_dir / "python-under-callgrind"
    shim.write_text(
        "#!/bin/sh\n"
        f"exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file={out_dir}/cg.%p"
        f' {sys.executable} "$@"\n'
    )
    shim.chmod(0o755)

    def quiet(*args: Any, **kwargs: Any) -> dict[str, Any]:
        config: dict[str, Any] = local_config(*args, **kwargs)
        for system in config["systems"]:
            system.setdefault("probing", {})["interval"] = 3600
        if "jwks_refresh_interval" in config.get("auth", {}):
            config["auth"]["jwks_refresh_interval"] = 3600
        return config

    devrun.local_config = quiet  # type: ignore[attr-defined]  # run.py imports it by name
    cluster = devrun.start_cluster()
    sys.executable = str(shim)  # after the cluster: only the two processes run under it
    for stale in out_dir.glob("cg.*"):
        stale.unlink()
    issuer, config_path, config = devrun.write_config(cluster, out_dir)
    processes = devrun.spawn_service(config_path, out_dir)
    token = issuer.token("alice", lifetime=3600)
    rest = processes["edge"]["address"]
    system = config["systems"][0]["name"]
    fixed = _fixed_directory(cluster["users"]["alice"]["home"], "alice")

    def get(path: str) -> Callable[[], None]:
        request = urllib.request.Request(rest + path, headers={"Authorization": f"Bearer {token}"})

        def call() -> None:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status}")

        return call

    channel = grpc.insecure_channel(processes["server"]["address"])
    metadata = (("authorization", f"Bearer {token}"),)
    files = filesystem_pb2_grpc.FilesystemStub(channel)
    f1 = f"{fixed}/f1"

    def download_stream() -> None:
        request = filesystem_pb2.DownloadStreamRequest(system_name=system, path=f1)
        for _ in files.DownloadStream(request, metadata=metadata, timeout=300):
            pass

    def download() -> None:
        request = filesystem_pb2.DownloadRequest(system_name=system, path=f1)
        files.Download(request, metadata=metadata, timeout=300)

    routes: dict[str, Callable[[], None]] = {
        "GET /status/systems": get("/status/systems"),
        f"GET ops/ls ({FIXED_FILES} entries)": get(f"/filesystem/{system}/ops/ls?path={fixed}"),
        "GET ops/download (1 KiB)": get(f"/filesystem/{system}/ops/download?path={f1}"),
        "gRPC Download (1 KiB)": download,
        "gRPC DownloadStream (1 KiB)": download_stream,
    }

    figures: dict[str, dict[str, int]] = {}
    try:
        devrun.wait_http(f"{rest}/status/liveness/", 600, out_dir / "edge.log")
        pids = {name: int(processes[name]["pid"]) for name in ("server", "edge")}
        for route, call in routes.items():
            for _ in range(20):  # warm-up: connections, caches, first probe
                call()

            def calls(call: Callable[[], None] = call) -> None:
                for _ in range(requests):
                    call()

            took, busy = _window(out_dir, pids, calls)

            def pause(took: float = took) -> None:
                time.sleep(took)

            _, idle = _window(out_dir, pids, pause)
            figures[route] = {n: round((busy[n] - idle[n]) / requests) for n in pids}
            figures[route]["total"] = figures[route]["server"] + figures[route]["edge"]
    finally:
        channel.close()
        devrun.stop_processes(processes)
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {"tree": str(tree), "commit": commit, "requests": requests, "instructions": figures}


def compare(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """One line per figure: baseline -> current, flagged when more than 10 % higher."""
    lines = []
    for route, counts in current["instructions"].items():
        for process, count in counts.items():
            before = baseline["instructions"].get(route, {}).get(process)
            if not before or max(before, count) < NOISE:
                continue
            ratio = count / before
            flag = "WORSE" if ratio > WORSE else "     "
            change = f"{before:>12,} -> {count:>12,}  x{ratio:.3f}"
            lines.append(f"{flag} {route:32} {process:6} {change}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="checkout to measure")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--baseline", type=Path, help="results file to compare with")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = measure(args.tree.resolve(), args.requests)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    earlier = sorted(args.results.glob("*-instructions.json"))
    path = args.results / f"{stamp}-instructions.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    baseline = args.baseline or (earlier[-1] if earlier else None)
    if baseline:
        print(f"against {baseline.name} ({json.loads(baseline.read_text())['commit']}):")
        print("\n".join(compare(results, json.loads(baseline.read_text()))))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
