"""The edge as a real process under hostile clients: tokens first, bounded bodies, timeouts.

The edge runs as ``python -m hpcgate.edge`` (the command a site runs), in
front of the live server on the loopback cluster, so that its memory can
be read from /proc and its connections attacked over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import LiveService, free_port

SYSTEM_JOBS = "/compute/cluster/jobs"
# Short timeouts, so that the tests of them are quick; the defaults are longer.
HEADER_TIMEOUT = 2.0
BODY_IDLE = 2.0
BODY_GRACE = 2.0
MiB = 1024 * 1024


@dataclass
class EdgeProcess:
    """A running ``hpcgate-edge`` process."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self, key: str) -> int:
        """A size from /proc/<pid>/status (VmRSS, VmHWM), in bytes."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(f"no {key}")


def start_edge(server: str, *extra: str) -> EdgeProcess:
    """Start the edge in front of ``server`` and wait until it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "hpcgate.edge", "--server", server, "--port", str(port)]
    argv += ["--header-timeout", str(HEADER_TIMEOUT), "--body-idle-timeout", str(BODY_IDLE)]
    argv += ["--body-grace", str(BODY_GRACE), *extra]
    process = subprocess.Popen(argv)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the edge exited"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return EdgeProcess(process, port)
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the edge did not start")


def stop_edge(edge: EdgeProcess) -> None:
    if edge.process.poll() is None:
        edge.process.send_signal(signal.SIGTERM)
        try:
            edge.process.wait(30)
        except subprocess.TimeoutExpired:
            edge.process.kill()
            edge.process.wait()


@pytest.fixture
def edge(live: LiveService) -> Iterator[EdgeProcess]:
    running = start_edge(live.grpc_target)
    try:
        yield running
    finally:
        stop_edge(running)


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client got out before the edge answered or closed


async def raw_request(
    port: int,
    head: str,
    body: AsyncIterator[bytes] | None = None,
) -> RawReply:
    """Send ``head`` (request line and headers) then ``body``; read the edge's answer to EOF.

    Sending stops when the edge closes the connection: ``sent`` says how far it got.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    sent = 0

    async def send() -> None:
        nonlocal sent
        if body is None:
            return
        with contextlib.suppress(ConnectionError):
            async for piece in body:
                writer.write(piece)
                await writer.drain()
                sent += len(piece)

    sender = asyncio.create_task(send())
    answer = b""
    try:
        async with asyncio.timeout(60):
            while piece := await reader.read(65536):
                answer += piece
    except (ConnectionResetError, BrokenPipeError):
        pass  # after the edge's lingering close, if the client went on sending
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
    assert answer, "the edge closed without an answer"
    head_bytes, _, content = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        content = _dechunk(content)
    return RawReply(int(lines[0].split()[1]), headers, content, sent)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def zeros(total: int, piece: int = MiB, pause: float = 0.0) -> AsyncIterator[bytes]:
    chunk = b"0" * piece
    left = total
    while left > 0:
        yield chunk[:left]
        left -= piece
        if pause:
            await asyncio.sleep(pause)


async def chunked(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``pieces`` in HTTP/1.1 chunked transfer coding (no final chunk: the sender never ends)."""
    async for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


def post_head(path: str, token: str | None, length: int | None, content_type: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: edge", f"Content-Type: {content_type}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return "\r\n".join(lines) + "\r\n\r\n"


def reason(reply: RawReply) -> str:
    return str(json.loads(reply.body)["data"]["reason"])


# -- tokens before bodies, in that order -------------------------------------------


async def test_no_token_is_refused_before_the_body_is_read(edge: EdgeProcess) -> None:
    # Only the headers go out: the answer comes without a byte of the body.
    head = post_head(SYSTEM_JOBS, None, 100 * MiB, "application/json")
    reply = await raw_request(edge.port, head)
    assert reply.status == 401
    assert reason(reply) == "TOKEN_MISSING"
    assert reply.headers["connection"] == "close"
    # Not JWT-shaped, or another scheme: the edge's own check, no RPC.
    for authorization in ("Bearer not-a-jwt", "Basic YWxpY2U6c2VjcmV0"):
        head = post_head(SYSTEM_JOBS, None, 10, "application/json")
        head = head.replace("\r\n\r\n", f"\r\nAuthorization: {authorization}\r\n\r\n", 1)
        reply = await raw_request(edge.port, head)
        assert reply.status == 401
        assert reason(reply) == "TOKEN_MALFORMED"


async def test_a_refused_token_is_refused_before_the_body_is_read(
    edge: EdgeProcess, live: LiveService
) -> None:
    """JWT-shaped but not the server's: the server's verdict, asked before the body."""
    token = live.token("alice")
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.AAAA"
    reply = await raw_request(
        edge.port, post_head(SYSTEM_JOBS, forged, 100 * MiB, "application/json")
    )
    assert reply.status == 401
    assert reason(reply) == "TOKEN_BAD_SIGNATURE"


async def test_an_oversized_token_is_431_with_a_reason(edge: EdgeProcess) -> None:
    token = "a" * 50_000 + ".b.c"
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.get("/status/systems", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 431
    assert response.json()["data"]["reason"] == "TOKEN_TOO_LARGE"
    assert "metadata" not in response.text


async def test_unauthenticated_bad_request_is_401_not_400(
    edge: EdgeProcess, live: LiveService
) -> None:
    forged = live.token("alice").rsplit(".", 1)[0] + ".AAAA"
    async with httpx.AsyncClient(base_url=edge.url) as client:
        bad = "/compute/cluster/jobs/not-a-number"
        anonymous = await client.get(bad)
        forged_reply = await client.get(bad, headers={"Authorization": f"Bearer {forged}"})
        bad_json = await client.post(
            SYSTEM_JOBS, content=b"{not json", headers={"Authorization": f"Bearer {forged}"}
        )
        genuine = await client.get(bad, headers=live.headers("alice"))
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["data"]["reason"] == "TOKEN_MISSING"
    assert forged_reply.status_code == 401, forged_reply.text
    assert forged_reply.json()["data"]["reason"] == "TOKEN_BAD_SIGNATURE"
    assert bad_json.status_code == 401
    assert genuine.status_code == 400
    assert "job_id" in genuine.json()["message"]


# -- bounded bodies ---------------------------------------------------------------


async def test_declared_length_over_the_route_limit_is_413_at_once(
    edge: EdgeProcess, live: LiveService
) -> None:
    token = live.token("alice")
    head = post_head(SYSTEM_JOBS, token, 2_147_483_648, "application/json")
    reply = await raw_request(edge.port, head, zeros(100 * MiB, 2048, pause=0.5))
    assert reply.status == 413
    assert reason(reply) == "PAYLOAD_TOO_LARGE"
    assert reply.sent < 64 * 1024  # the trickle was cut at its start


async def test_body_without_length_is_cut_at_the_route_limit(
    edge: EdgeProcess, live: LiveService
) -> None:
    head = post_head(SYSTEM_JOBS, live.token("alice"), None, "application/json")
    reply = await raw_request(edge.port, head, chunked(zeros(100 * MiB, 256 * 1024)))
    # The answer came at the limit; what the client still sends while the
    # connection lingers is dropped unread (the peak-memory test shows it).
    assert reply.status == 413
    assert reason(reply) == "PAYLOAD_TOO_LARGE"


async def test_a_silent_or_trickling_body_is_cut_off(edge: EdgeProcess, live: LiveService) -> None:
    token = live.token("alice")
    # Half a body, then silence.
    head = post_head(SYSTEM_JOBS, token, 1000, "application/json")
    silent = await raw_request(edge.port, head, zeros(500, 500))
    assert silent.status == 408
    assert reason(silent) == "REQUEST_TIMEOUT"
    # A byte now and then: never idle for long, but far below the floor rate.
    head = post_head(SYSTEM_JOBS, token, None, "application/json")
    trickle = await raw_request(edge.port, head, chunked(zeros(MiB, 1, pause=0.5)))
    assert trickle.status == 408
    assert "slower than" in json.loads(trickle.body)["message"]


async def test_slow_or_oversized_headers_are_cut_off(edge: EdgeProcess) -> None:
    # A connection that sends nothing at all.
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    idle = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert idle.startswith(b"HTTP/1.1 408")

    async def drip() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"X-Slow: y\r\n"
            await asyncio.sleep(0.5)

    reply = await raw_request(edge.port, "GET /status/systems HTTP/1.1\r\nHost: edge\r\n", drip())
    assert reply.status == 408
    assert reason(reply) == "REQUEST_TIMEOUT"

    async def flood() -> AsyncIterator[bytes]:
        for index in range(10_000):
            yield f"X-Big-{index}: {'y' * 1000}\r\n".encode()

    reply = await raw_request(edge.port, "GET /status/systems HTTP/1.1\r\nHost: edge\r\n", flood())
    assert reply.status == 431
    assert reason(reply) == "HEADERS_TOO_LARGE"
    assert reply.sent < 10 * MiB


async def test_peak_memory_stays_bounded_under_body_attacks(
    edge: EdgeProcess, live: LiveService
) -> None:
    """100 MB bodies, with and without a token, several at once: the peak RSS barely moves."""
    async with httpx.AsyncClient(base_url=edge.url, headers=live.headers("alice")) as client:
        assert (await client.get("/status/systems")).status_code == 200  # warm: channel, caches
    before = edge.status("VmHWM")
    token = live.token("alice")
    attacks = [
        # Four anonymous 100 MB POSTs at once, declared and sent.
        *(
            raw_request(
                edge.port,
                post_head(SYSTEM_JOBS, None, 100 * MiB, "application/json"),
                zeros(100 * MiB),
            )
            for _ in range(4)
        ),
        # Four authenticated 100 MB bodies without a length, to a JSON route.
        *(
            raw_request(
                edge.port,
                post_head(SYSTEM_JOBS, token, None, "application/json"),
                chunked(zeros(100 * MiB)),
            )
            for _ in range(4)
        ),
        # A 2 GB Content-Length trickled.
        raw_request(
            edge.port,
            post_head(SYSTEM_JOBS, token, 2_147_483_648, "application/json"),
            zeros(2_147_483_648, 2048, pause=0.5),
        ),
    ]
    replies = await asyncio.gather(*attacks)
    assert [r.status for r in replies] == [401] * 4 + [413] * 5
    growth = edge.status("VmHWM") - before
    print(f"\nedge peak RSS {before / MiB:.0f} MiB before, grew by {growth / MiB:.1f} MiB")
    assert growth < 40 * MiB
    assert edge.process.poll() is None


# -- bad bytes, deep nesting --------------------------------------------------------


async def test_bad_utf8_and_deep_nesting_are_400(edge: EdgeProcess, live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=edge.url, headers=live.headers("alice")) as client:
        bad_bytes = await client.post(
            SYSTEM_JOBS,
            content=b'{"job": {"name": "\xff\xfe"}}',
            headers={"content-type": "application/json"},
        )
        deep = await client.post(
            SYSTEM_JOBS,
            content=b"[" * 100_000 + b"]" * 100_000,
            headers={"content-type": "application/json"},
        )
        deep_object = await client.post(
            SYSTEM_JOBS, content=b'{"job": ' * 50_000 + b"1" + b"}" * 50_000
        )
    assert bad_bytes.status_code == 400, bad_bytes.text
    assert "UTF-8" in bad_bytes.json()["message"]
    assert deep.status_code == 400, deep.text
    assert "nested too deeply" in deep.json()["message"]
    assert deep_object.status_code == 400, deep_object.text


# -- internals never leak ----------------------------------------------------------------


async def test_unreachable_server_is_503_without_its_address(live: LiveService) -> None:
    dead = f"127.0.0.1:{free_port()}"
    running = start_edge(dead)
    try:
        async with httpx.AsyncClient(base_url=running.url, headers=live.headers("alice")) as client:
            unary = await client.get("/status/systems")
            body_route = await client.post(SYSTEM_JOBS, json={"job": {}})
            stream = await client.get("/compute/cluster/jobs/watch")
    finally:
        stop_edge(running)
    for response in (unary, body_route, stream):
        assert response.status_code == 503, response.text
        assert response.json()["data"]["reason"] == "SERVER_UNAVAILABLE"
        assert "127.0.0.1" not in response.text and "ipv4" not in response.text


async def test_message_over_the_server_limit_is_413_in_plain_words(
    edge: EdgeProcess, live: LiveService
) -> None:
    """A file over maxOpsFileSize: the server's FILE_TOO_LARGE, never gRPC's transport text.

    The server's message limits sit above every size the servicers let
    through, so the servicer answers first; a status gRPC itself made is
    worded by the edge's table (tests/unit/test_edge_errors.py).
    """
    limit = live.settings.systems[0].data_operation.max_ops_file_size
    size = limit + 2 * MiB  # over the old server message limit (maxOpsFileSize + 1 MiB)
    async with httpx.AsyncClient(base_url=edge.url, headers=live.headers("alice")) as client:
        response = await client.post(
            "/filesystem/cluster/ops/upload",
            params={"path": "/home/alice"},
            files={"file": ("big.bin", b"x" * size)},
        )
    assert response.status_code == 413, response.text
    assert response.json()["data"]["reason"] == "FILE_TOO_LARGE"
    assert "larger than max" not in response.text
