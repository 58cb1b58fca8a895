"""Scenario 2: ``ls`` of a 5,300-entry directory, over gRPC and over REST.

Two floors in this process, over the same SSH connection: one SFTP
``readdir`` (the baseline of the ratios) and one ``ls -l`` on an exec
channel, the two ways the server can list. Every listing must name exactly
the entries that were created.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Iterable

from bench.context import Context
from bench.measure import Stopwatch, check_http, measure, unimplemented_is_not_available
from bench.model import Figure, WrongBytesError
from bench.remote import BIG_COUNT, Dataset, output
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

SCENARIO = "big_directory"
BASELINE = "SFTP readdir floor"


def _check(names: Iterable[str], what: str) -> None:
    listed = sorted(names)
    if listed != sorted(Dataset.big_names()):
        raise WrongBytesError(
            f"{what}: listed {len(listed)} entries, expected the {BIG_COUNT} created"
        )


async def _timed(list_names: Callable[[], Awaitable[list[str]]], what: str) -> float:
    with unimplemented_is_not_available():
        watch = Stopwatch()
        names = await list_names()
        elapsed = watch.elapsed()
    _check(names, what)
    return elapsed


async def run(ctx: Context) -> list[Figure]:
    """Measure the floors, then Ls over gRPC and over REST."""
    directory, system = ctx.dataset.big_dir, ctx.stack.system
    stub = filesystem_pb2_grpc.FilesystemStub(ctx.channel)
    params = {"entries": BIG_COUNT}

    async with (await ctx.ssh.get()).start_sftp_client() as sftp:

        async def readdir() -> list[str]:
            entries = await sftp.readdir(directory)
            return [str(e.filename) for e in entries]  # str paths: str names

        floor = Figure(SCENARIO, BASELINE, "s", dict(params))
        # readdir includes "." and ".."; listing them is part of the floor's cost.
        await measure(floor, ctx.plan, lambda: _timed(_without_dots(readdir), BASELINE))

    async def ls_exec() -> list[str]:
        command = f"ls -l --time-style=+%s -- {shlex.quote(directory)}"
        listing = await output(await ctx.ssh.get(), command)
        lines = listing.decode().splitlines()[1:]  # the first is "total N"
        return [line.split(maxsplit=6)[6] for line in lines]

    async def grpc_ls() -> list[str]:
        request = filesystem_pb2.LsRequest(system_name=system, path=directory)
        reply = await stub.Ls(request, metadata=ctx.stack.metadata())
        return [entry.name for entry in reply.output]

    async def rest_ls() -> list[str]:
        url = f"/filesystem/{system}/ops/ls"
        response = await ctx.http.get(url, params={"path": directory})
        check_http(response)
        return [entry["name"] for entry in response.json()["output"]]

    figures = [floor]
    for name, list_names in (
        ("ls -l exec floor", ls_exec),
        ("gRPC Ls", grpc_ls),
        ("REST ls", rest_ls),
    ):
        figure = Figure(SCENARIO, name, "s", dict(params), baseline=BASELINE)

        async def once(
            list_names: Callable[[], Awaitable[list[str]]] = list_names, name: str = name
        ) -> float:
            return await _timed(list_names, name)

        figures.append(await measure(figure, ctx.plan, once))
    return figures


def _without_dots(
    list_names: Callable[[], Awaitable[list[str]]],
) -> Callable[[], Awaitable[list[str]]]:
    async def listed() -> list[str]:
        return [name for name in await list_names() if name not in (".", "..")]

    return listed
