"""One small download at a time, hop by hop: where the time of a REST download goes.

``python -m bench.hops`` starts the stack as ``make bench`` does, then times
the same 1 KB file fetched sequentially (one request in flight) through each
layer in turn, the layers interleaved round by round so that the machine's
swings fall on all of them alike:

* ``sftp floor``: asyncssh open, read (its fstat), close: what ``make bench``
  calls the SFTP floor at N = 1;
* ``sftp, hpcgate's requests``: the server's own sequence, in this process
  (:func:`hpcgate.server.filesystem.content.read_small` over the same kind of
  connection: realpath and stat, open and its handle check, read, close);
* ``gRPC Download``: straight to the server (auth, servicer, pool, the above);
* ``REST (aiohttp)``: through the edge (HTTP, transcoding, gRPC, the above);
* ``HTTP floor (aiohttp)``: the same client against the trivial HTTP server;
* ``gRPC floor (echo)``: 1 KB echoed by the bare grpc.aio server
  (:mod:`bench.echo`): what a unary call costs with no service behind it, so
  ``gRPC Download`` minus this floor and minus hpcgate's SFTP sequence is the
  server's own work per download.

The difference between two neighbours is what the hop between them costs.
With ``--pids FILE`` it writes the server's and the edge's pids there, for
``py-spy record --pid`` while it runs. Prints medians and quartiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc

from bench.echo import METHOD
from bench.remote import Link, create, remove, verify
from bench.stack import started
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.content import read_small
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

Hop = Callable[[], Awaitable[bytes]]


async def _measure(hops: dict[str, Hop], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in hops}
    for _ in range(rounds):
        for name, hop in hops.items():
            start = time.perf_counter()
            data = await hop()
            times[name].append(time.perf_counter() - start)
            if "floor (" not in name:
                verify([data], name)
    return times


async def main(rounds: int, pids: Path | None) -> None:
    """Start the stack, time every hop ``rounds`` times, print the table."""
    async with started() as stack:
        link = Link(stack.cluster, "alice")
        dataset = await create(await link.get(), stack.home)
        path = dataset.small_paths(1)[0]
        if pids is not None:
            await asyncio.to_thread(pids.write_text, json.dumps(stack.pids))
        channel = grpc.aio.insecure_channel(stack.grpc_target)
        echo_channel = grpc.aio.insecure_channel(stack.echo_target)
        echo = echo_channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        payload = bytes(1024)
        stub = filesystem_pb2_grpc.FilesystemStub(channel)
        request = filesystem_pb2.DownloadRequest(system_name=stack.system, path=path)
        confine = Confine("hops", ("/",))
        url = f"/filesystem/{stack.system}/ops/download"
        try:
            async with (
                (await link.get()).start_sftp_client() as sftp,
                aiohttp.ClientSession(stack.rest_url, headers=stack.headers()) as rest,
                aiohttp.ClientSession(stack.http_floor_url) as floor,
            ):

                async def sftp_floor() -> bytes:
                    async with sftp.open(path, "rb") as file:
                        data: bytes = await file.read()
                        return data

                async def sftp_hpcgate() -> bytes:
                    return await read_small(sftp, confine, path, 1 << 20)

                async def grpc_download() -> bytes:
                    reply = await stub.Download(request, metadata=stack.metadata())
                    data: bytes = reply.data
                    return data

                async def rest_download() -> bytes:
                    async with rest.get(url, params={"path": path}) as answer:
                        return await answer.read()

                async def http_floor() -> bytes:
                    async with floor.get("/bytes", params={"size": "1024"}) as answer:
                        return await answer.read()

                async def grpc_floor() -> bytes:
                    reply: bytes = await echo(payload, metadata=stack.metadata())
                    return reply

                hops: dict[str, Hop] = {
                    "sftp floor": sftp_floor,
                    "sftp, hpcgate's requests": sftp_hpcgate,
                    "gRPC Download": grpc_download,
                    "REST (aiohttp)": rest_download,
                    "HTTP floor (aiohttp)": http_floor,
                    "gRPC floor (echo)": grpc_floor,
                }
                await _measure(hops, 20)  # warm-up
                times = await _measure(hops, rounds)
        finally:
            await channel.close(None)
            await echo_channel.close(None)
            await remove(await link.get(), dataset)
            link.close()
        print(f"{'hop':28} {'median':>8} {'p25':>8} {'p75':>8}  ms, {rounds} rounds")
        for name, samples in times.items():
            low, median, high = (q * 1e3 for q in statistics.quantiles(samples, n=4))
            print(f"{name:28} {median:8.3f} {low:8.3f} {high:8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--pids", type=Path, help="write the server's and edge's pids here")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.pids))
