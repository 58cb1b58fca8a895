"""The streamer job's server: firecrest-streamer's, with exact bytes both ways.

A streamer transfer job (``streamer.sh``) runs this with an interpreter that
has firecrest-streamer (PyPI) installed. It keeps that package's server
(``streamer.streamer_server.stream``: the port range, the shared secret
checked on the ``Authorization`` header, the wait for a client, SIGTERM)
and replaces its two ends of the stream, which as released (0.0.21) are
not exact: its sender sends the closing ``eof`` message as a binary frame,
which the receiver (pyfirecrest's client as much as the server) does not
recognise and writes into the file, 98 bytes more, its hash never checked.

- receive (a client's upload): the announced size is the upload's
  (``HPCGATE_STREAMER_SIZE``), the bytes go to the job's temporary file,
  and only a stream that ends with the ``eof`` message whose SHA-256 is that
  of the bytes received counts (the frame, binary or text, either way).
- send (a client's download): the wire format the unchanged client expects:
  ``init`` as JSON bytes, the file in binary frames, and ``eof`` as a text
  frame in the compact JSON the client matches, so that it checks the hash.
  It counts once the client closed the connection normally after ``eof``.

The job learns the outcome from the exit status (0: done). Configuration
comes from ``HPCGATE_STREAMER_*`` variables, so that the secret is on no
command line. Standard library and firecrest-streamer (websockets) only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any

from streamer import streamer_server  # type: ignore[import-untyped, unused-ignore]

CHUNK_SIZE = 5 * 1024 * 1024
# How long the sender waits for the client to close after the last message.
CLOSE_WAIT_S = 60.0

outcome: list[str] = []  # "ok" once the transfer is complete and verified


def say(message: str) -> None:
    print(f"streamer: {message}", flush=True)


def _json(message: str | bytes) -> dict[str, Any]:
    text = message.decode() if isinstance(message, bytes) else message
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {text[:100]!r}")
    return value


async def receive(websocket: Any, target: str, size_limit: int | None = None, **_: Any) -> bool:
    """Receive the client's file into ``target``; True if it arrived whole and verified."""
    expected = int(os.environ["HPCGATE_STREAMER_SIZE"])
    try:
        init = _json(await websocket.recv())
        size = int(init["file_size"])
        if size != expected:
            say(f"the client announced {size} bytes, the upload was requested for {expected}")
            await websocket.close(code=1008, reason="size differs from the upload's")
            return False
        if size_limit is not None and size > size_limit:
            say(f"{size} bytes exceed the inbound transfer limit of {size_limit}")
            await websocket.close(code=1009, reason="inbound transfer limit exceeded")
            return False
        say(f"receiving {size} bytes")
        digest, received = hashlib.sha256(), 0
        with open(target, "wb") as file:  # noqa: ASYNC230 -- the job's one task
            while received < size:
                chunk = await websocket.recv()
                if isinstance(chunk, str) or received + len(chunk) > size:
                    say(f"unexpected message after {received} bytes: {chunk[:100]!r}")
                    await websocket.close(code=1002, reason="unexpected message")
                    return False
                file.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        end = _json(await websocket.recv())
    except Exception as error:  # the connection broke, or the client sent nonsense
        say(f"the upload broke off: {type(error).__name__}: {error}")
        return False
    if end.get("type") != "eof" or end.get("sha256_hash") != digest.hexdigest():
        say(f"verification failed: the client's eof says {end!r}, received {digest.hexdigest()}")
        return False
    say(f"received {size} bytes, SHA-256 {digest.hexdigest()} verified")
    outcome.append("ok")
    return True


async def send(websocket: Any, target: str, **_: Any) -> bool:
    """Send ``target`` as the unchanged client expects; True once it closed normally after eof."""
    try:
        size = os.stat(target).st_size
        chunks = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
        await websocket.send(
            json.dumps({"type": "init", "num_chunks": chunks, "file_size": size}).encode()
        )
        say(f"sending {size} bytes")
        digest = hashlib.sha256()
        with open(target, "rb") as file:  # noqa: ASYNC230 -- the job's one task
            while chunk := file.read(CHUNK_SIZE):
                await websocket.send(chunk)
                digest.update(chunk)
        eof = {"type": "eof", "sha256_hash": digest.hexdigest()}
        await websocket.send(json.dumps(eof, separators=(",", ":")))
        await asyncio.wait_for(websocket.wait_closed(), CLOSE_WAIT_S)
    except Exception as error:
        say(f"the download broke off: {type(error).__name__}: {error}")
        return False
    if websocket.close_code != 1000:
        say(f"the client closed with code {websocket.close_code} ({websocket.close_reason!r})")
        return False
    say(f"sent {size} bytes, SHA-256 {digest.hexdigest()}")
    outcome.append("ok")
    return True


def main() -> int:
    env = os.environ
    first, last = (int(p) for p in env["HPCGATE_STREAMER_PORTS"].split())
    operation = streamer_server.Operation(env["HPCGATE_STREAMER_OPERATION"])
    streamer_server.stream_receive = receive
    streamer_server.stream_send = send
    config = streamer_server.StreamConfig(
        operation=operation,
        target=env["HPCGATE_STREAMER_PATH"],
        secret=env["HPCGATE_STREAMER_SECRET"],
        port_range=(first, last),
        ips=env["HPCGATE_STREAMER_IPS"].split(),
        host=env["HPCGATE_STREAMER_HOST"],
        wait_timeout=int(env["HPCGATE_STREAMER_WAIT"]),
        inbound_transfer_limit=int(env["HPCGATE_STREAMER_LIMIT"]),
    )
    asyncio.run(streamer_server.stream(config))
    if not outcome:
        say("no transfer completed (no client in time, no free port, or it broke off)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
