"""The streamer job's server (transfer/scripts/streamer_job.py) against firecrest-streamer's client.

The client is the released package's, as pyfirecrest calls it; the server
runs as the job runs it (``python -u -c CODE``, configured by environment),
here on loopback without a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamer import streamer_client  # type: ignore[import-untyped]

from conftest import free_port
from hpcgate.server.transfer import streamer

JOB = (Path(streamer.__file__).parent / "scripts" / "streamer_job.py").read_text()
SIZE = 12 * 1024 * 1024 + 7  # three chunks of 5 MiB, the last one short


def _server(operation: str, path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    variables = {
        "HPCGATE_STREAMER_OPERATION": operation,
        "HPCGATE_STREAMER_PATH": str(path),
        "HPCGATE_STREAMER_SECRET": "the-secret",
        "HPCGATE_STREAMER_HOST": "127.0.0.1",
        "HPCGATE_STREAMER_PORTS": f"{port} {port}",
        "HPCGATE_STREAMER_IPS": "127.0.0.1",
        "HPCGATE_STREAMER_WAIT": "20",
        "HPCGATE_STREAMER_LIMIT": str(1024**3),
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", JOB],
        env={**os.environ, **variables},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # until it listens
        if line.startswith("Server is listening on"):
            return process
    raise AssertionError(f"the server did not listen (exit {process.wait()})")


def _client(port: int, target: Path) -> streamer_client.ClientConfig:
    coordinates = streamer.coordinates((port, port), ["127.0.0.1"], "the-secret")
    config = streamer_client.set_coordinates(coordinates)
    config.target = str(target)
    return config


@pytest.fixture
def content(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "content.bin"
    path.write_bytes(os.urandom(SIZE))
    yield path


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def test_an_upload_arrives_exact_and_verified(content: Path, tmp_path: Path) -> None:
    port, received = free_port(), tmp_path / "received.bin"
    process = _server("receive", received, port, HPCGATE_STREAMER_SIZE=str(SIZE))
    asyncio.run(streamer_client.client_send(_client(port, content)))
    code, out = _finish(process)
    assert code == 0, out
    assert received.read_bytes() == content.read_bytes()  # no eof message in the file
    assert f"SHA-256 {hashlib.sha256(content.read_bytes()).hexdigest()} verified" in out


def test_a_download_arrives_exact_and_the_client_checks_the_hash(
    content: Path, tmp_path: Path
) -> None:
    port, fetched = free_port(), tmp_path / "fetched.bin"
    process = _server("send", content, port)
    asyncio.run(streamer_client.client_receive(_client(port, fetched)))
    code, out = _finish(process)
    assert code == 0, out
    assert fetched.read_bytes() == content.read_bytes()


def test_an_upload_of_another_size_than_announced_fails(content: Path, tmp_path: Path) -> None:
    port, received = free_port(), tmp_path / "received.bin"
    process = _server("receive", received, port, HPCGATE_STREAMER_SIZE=str(SIZE - 1))
    asyncio.run(streamer_client.client_send(_client(port, content)))
    code, out = _finish(process)
    assert code == 1
    assert f"the client announced {SIZE} bytes, the upload was requested for {SIZE - 1}" in out


def test_nobody_connecting_in_time_fails(tmp_path: Path) -> None:
    process = _server(
        "receive",
        tmp_path / "never.bin",
        free_port(),
        HPCGATE_STREAMER_SIZE="1",
        HPCGATE_STREAMER_WAIT="1",
    )
    code, out = _finish(process)
    assert code == 1
    assert "no transfer completed" in out
