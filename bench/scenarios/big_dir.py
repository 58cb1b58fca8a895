"""Scenario 2: ``ls`` of directories of 1,000, 5,300 and 100,000 entries, over gRPC and REST.

Two floors in this process, over the same SSH connection: one SFTP
``readdir`` and one ``ls -l`` on an exec channel, the two ways a user
could list by hand. The faster of the two (per directory, by median) is
the baseline of the ratios. A third figure, the server's own ``find``
command run bare on an exec channel (no confinement, no remote
``timeout``, names sorted here), is not a baseline: it shows what the
service adds to the command it runs. Beside the times: the server's
(gRPC) and the server's + edge's (REST) CPU per entry listed, and their RSS after the
listings (memory must stay in proportion). Every listing must name
exactly the entries created, in order.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable

from bench.context import Context
from bench.measure import (
    Stopwatch,
    check_http,
    measure,
    measure_many,
    unimplemented_is_not_available,
)
from bench.model import Figure, WrongBytesError
from bench.procfs import CpuMeter, rss_bytes
from bench.remote import BIG_COUNTS, Dataset, create_big, output
from hpcgate.server.filesystem.findlisting import FIELDS, FORMAT, NAME_FIELD
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

SCENARIO = "big_directory"
READDIR = "SFTP readdir floor"
LS_EXEC = "ls -l exec floor"
FIND_EXEC = "find -printf exec (the server's command, bare)"
REST_PROCESSES = ("server", "edge")
Lister = Callable[[], Awaitable[list[str]]]


def cpu_figure(name: str, processes: tuple[str, ...]) -> str:
    """The name of the CPU-per-entry figure of the listing figure ``name``."""
    return f"{name}: {' + '.join(processes)} CPU per entry"


def _check(names: list[str], count: int, what: str, ordered: bool = True) -> None:
    listed = names if ordered else sorted(names)
    if listed != Dataset.big_names(count):
        raise WrongBytesError(
            f"{what}: listed {len(listed)} entries, expected the {count} created, sorted"
        )


async def _timed(list_names: Lister, count: int, what: str, ordered: bool = True) -> float:
    with unimplemented_is_not_available():
        watch = Stopwatch()
        names = await list_names()
        elapsed = watch.elapsed()
    _check(names, count, what, ordered)
    return elapsed


async def _floors(ctx: Context, directory: str, count: int) -> list[Figure]:
    params = {"entries": count}
    async with (await ctx.ssh.get()).start_sftp_client() as sftp:

        async def readdir() -> list[str]:
            # readdir includes "." and ".."; listing them is part of the floor's cost.
            entries = await sftp.readdir(directory)
            return [str(e.filename) for e in entries if e.filename not in (".", "..")]

        floor = Figure(SCENARIO, READDIR, "s", dict(params))
        await measure(floor, ctx.plan, lambda: _timed(readdir, count, READDIR, ordered=False))

    async def ls_exec() -> list[str]:
        command = f"ls -l --time-style=+%s -- {shlex.quote(directory)}"
        listing = await output(await ctx.ssh.get(), command)
        lines = listing.decode().splitlines()[1:]  # the first is "total N"
        return [line.split(maxsplit=6)[6] for line in lines]

    exec_floor = Figure(SCENARIO, LS_EXEC, "s", dict(params))
    await measure(exec_floor, ctx.plan, lambda: _timed(ls_exec, count, LS_EXEC))
    return [floor, exec_floor]


async def _own_command(ctx: Context, directory: str, count: int, baseline: str) -> Figure:
    """The server's ``find`` step without its confinement and remote ``timeout``."""

    async def find_exec() -> list[str]:
        argv = ["find", directory, "-mindepth", "1", "-maxdepth", "1", "-printf", FORMAT]
        listing = await output(await ctx.ssh.get(), f"TZ=UTC0 {shlex.join(argv)}")
        fields = listing.split(b"\0")
        return sorted(name.decode() for name in fields[NAME_FIELD::FIELDS])

    own = Figure(SCENARIO, FIND_EXEC, "s", {"entries": count}, baseline=baseline)
    await measure(own, ctx.plan, lambda: _timed(find_exec, count, FIND_EXEC))
    return own


async def _served(
    ctx: Context,
    name: str,
    count: int,
    baseline: str,
    list_names: Lister,
    processes: tuple[str, ...],
) -> list[Figure]:
    """The time of ``list_names`` and the CPU per entry of ``processes`` meanwhile."""
    params = {"entries": count}
    stack = ctx.stack
    meter = CpuMeter({p: stack.pids[p] for p in processes})
    time = Figure(SCENARIO, name, "s", dict(params), baseline=baseline)
    cpu = Figure(SCENARIO, cpu_figure(name, processes), "us", dict(params))

    async def once() -> dict[str, float]:
        meter.start()
        elapsed = await _timed(list_names, count, name)
        used = meter.stop()
        return {"time": elapsed, "cpu": sum(used.values()) * 1e6 / count}

    await measure_many({"time": time, "cpu": cpu}, ctx.plan, once)
    return [time, cpu]


async def _listings(ctx: Context, directory: str, count: int, baseline: str) -> list[Figure]:
    system, params = ctx.stack.system, {"entries": count}
    stub = filesystem_pb2_grpc.FilesystemStub(ctx.channel)
    request = filesystem_pb2.LsRequest(system_name=system, path=directory)
    streamed = filesystem_pb2.LsStreamRequest(system_name=system, path=directory)

    async def grpc_ls() -> list[str]:
        reply = await stub.Ls(request, metadata=ctx.stack.metadata())
        return [entry.name for entry in reply.output]

    async def grpc_stream() -> list[str]:
        names: list[str] = []
        async for chunk in stub.LsStream(streamed, metadata=ctx.stack.metadata()):
            names += [entry.name for entry in chunk.output]
        return names

    async def rest_ls() -> list[str]:
        url = f"/filesystem/{system}/ops/ls"
        response = await ctx.http.get(url, params={"path": directory})
        check_http(response)
        return [entry["name"] for entry in response.json()["output"]]

    figures = []
    for name, list_names, processes in (
        ("gRPC Ls", grpc_ls, ("server",)),
        ("gRPC LsStream", grpc_stream, ("server",)),
        ("REST ls", rest_ls, REST_PROCESSES),
    ):
        figures += await _served(ctx, name, count, baseline, list_names, processes)
    for names in (("server",), ("edge",), REST_PROCESSES):
        rss = Figure(SCENARIO, f"{' + '.join(names)} RSS after the listings", "MiB", dict(params))
        rss.samples.append(sum(rss_bytes(ctx.stack.pids[p]) for p in names) / 2**20)
        figures.append(rss)
    return figures


async def run(ctx: Context) -> list[Figure]:
    """Per directory size: the floors, then Ls over gRPC (unary, streamed) and REST."""
    await create_big(await ctx.ssh.get(), ctx.dataset, BIG_COUNTS)
    figures: list[Figure] = []
    for count in BIG_COUNTS:
        directory = ctx.dataset.big_dir(count)
        floors = await _floors(ctx, directory, count)
        timed = [f for f in floors if f.median is not None]
        baseline = min(timed, key=lambda f: f.median or 0).name if timed else READDIR
        for floor in floors:
            floor.extra["baseline_of_ratios"] = floor.name == baseline
        figures += floors
        figures.append(await _own_command(ctx, directory, count, baseline))
        figures += await _listings(ctx, directory, count, baseline)
    return figures
