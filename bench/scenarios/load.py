"""Scenario 4: 500 concurrent clients x 10 requests through the edge, driven by wrk.

A Python client saturates long before the edge does (it used 4x the
server's CPU in an earlier measurement), so the load comes from ``wrk``
(C, Debian package; installed with apt-get when missing). bench/wrk.lua
adds the bearer token, counts non-2xx answers and stops after about 10
requests per connection. Errors are non-2xx answers plus socket errors
(connect, read, write, timeout); the target is zero. The CPU the server
and the edge spent per request is read from /proc around each run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from typing import Any
from urllib.parse import quote

from bench import ROOT
from bench.context import Context
from bench.measure import check_http, measure_many
from bench.model import Figure, Status
from bench.procfs import CpuMeter

SCENARIO = "load"
CONNECTIONS = 500
PER_CONNECTION = 10
MAX_DURATION = "120s"  # upper bound only: the harness stops wrk after 10 requests per connection
REQUEST_TIMEOUT = "30s"
LUA = ROOT / "bench" / "wrk.lua"
SOCKET_ERRORS = ("connect_errors", "read_errors", "write_errors", "timeouts")
CPU = "server + edge CPU per request"
STATUS = "GET /status/systems"


def wrk_path() -> str:
    """The wrk binary; installs Debian's package first if it is missing."""
    found = shutil.which("wrk")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed and apt-get did not install it")
    return found


async def _wrk(wrk: str, url: str, token: str, threads: int) -> dict[str, Any]:
    """One wrk run; returns the BENCH_JSON line's fields.

    wrk runs for its whole ``-d`` even when every thread has stopped, but a
    SIGINT ends it early with a normal summary: it is sent as soon as every
    thread has printed BENCH_THREAD_DONE (see bench/wrk.lua).
    """
    argv = [wrk, "-t", str(threads), "-c", str(CONNECTIONS), "-d", MAX_DURATION]
    argv += ["--timeout", REQUEST_TIMEOUT, "-s", str(LUA), url, "--"]
    argv += [token, str(PER_CONNECTION), str(CONNECTIONS), str(threads)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    if process.stdout is None or process.stderr is None:
        raise RuntimeError("wrk: no pipes")
    done, result = 0, None
    async for raw in process.stdout:
        line = raw.decode().strip()
        if line == "BENCH_THREAD_DONE":
            done += 1
            if done == threads:
                process.send_signal(signal.SIGINT)
        elif line.startswith("BENCH_JSON "):
            result = dict(json.loads(line.removeprefix("BENCH_JSON ")))
    err = await process.stderr.read()
    await process.wait()
    if result is None:
        raise RuntimeError(f"wrk exited {process.returncode}: {err.decode()[-500:]}")
    return result


def _figures(target: str, params: dict[str, Any]) -> dict[str, Figure]:
    def figure(name: str, unit: str) -> Figure:
        return Figure(SCENARIO, f"{target}: {name}", unit, dict(params))

    return {
        "throughput": figure("throughput", "req/s"),
        "p50": figure("p50 latency", "ms"),
        "p99": figure("p99 latency", "ms"),
        "errors": figure("errors (non-2xx + socket)", "count"),
        "server_cpu": figure("server CPU per request", "ms"),
        "edge_cpu": figure("edge CPU per request", "ms"),
        "cpu": figure(CPU, "ms"),
    }


async def _target(ctx: Context, wrk: str, target: str, path: str) -> list[Figure]:
    params = {"connections": CONNECTIONS, "requests_per_connection": PER_CONNECTION}
    figures = _figures(target, params)
    stack = ctx.stack
    threads = len(os.sched_getaffinity(0))  # one wrk thread per core
    meter = CpuMeter({"server": stack.processes("server"), "edge": stack.processes("edge")})

    runs: list[dict[str, Any]] = []  # wrk's own figures of every run, warm-up first

    async def once() -> dict[str, float]:
        check_http(await ctx.http.get(path))  # a 501 (not built yet) makes this not available
        meter.start()
        result = await _wrk(wrk, stack.rest_url + path, stack.token(), threads)
        cpu = meter.stop()
        runs.append({k: result[k] for k in (*SOCKET_ERRORS, "requests", "non2xx_by_code")})
        requests = max(1, result["requests"])
        return {
            "throughput": result["requests"] / (result["duration_us"] / 1e6),
            "p50": result["p50_us"] / 1000,
            "p99": result["p99_us"] / 1000,
            "errors": result["non2xx"] + sum(result[k] for k in SOCKET_ERRORS),
            "server_cpu": cpu["server"] * 1000 / requests,
            "edge_cpu": cpu["edge"] * 1000 / requests,
            "cpu": (cpu["server"] + cpu["edge"]) * 1000 / requests,
        }

    await measure_many(figures, ctx.plan, once)
    figures["errors"].extra["runs"] = runs[ctx.plan.warmup :]
    return list(figures.values())


async def run(ctx: Context) -> list[Figure]:
    """GET /status/systems, then a small ``ls`` (10 entries), each under the same load."""
    try:
        wrk = await asyncio.to_thread(wrk_path)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        failed = Figure(SCENARIO, "wrk", "", status=Status.FAILED, detail=str(error))
        return [failed]
    ls = f"/filesystem/{ctx.stack.system}/ops/ls?path={quote(ctx.dataset.tiny_dir)}"
    figures = await _target(ctx, wrk, STATUS, "/status/systems")
    figures += await _target(ctx, wrk, "GET ops/ls (10 entries)", ls)
    return figures
