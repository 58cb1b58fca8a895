"""The streamer transfer method, through the official pyfirecrest client, unchanged.

From ``MAX_DIRECT_UPLOAD_SIZE`` (1 MiB) on, pyfirecrest with
``transfer_method="streamer"`` asks ``transfer/upload`` or
``transfer/download`` for a job, waits until the job runs, and streams the
file to or from the job's firecrest-streamer server (the websocket client
of the ``firecrest-streamer`` package) with the reply's ``coordinates``.
On the loopback cluster the job runs the venv that ``cluster.py`` installed
and listens on 127.0.0.1 (dev/localsite.py configures the method).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import websockets
from bigfiles import as_alice, random_file, sha256
from firecrest.FirecrestException import FirecrestException, TransferJobFailedException
from firecrest.v2 import AsyncFirecrest

from cluster_fixture import Cluster
from conftest import LiveService, StaticToken, free_port, live_settings, start_service
from devkeys import DevIssuer
from localsite import SYSTEM, local_config, transfer_methods

SIZE = 200 * 1024 * 1024

T = TypeVar("T")


def _coordinates(transfer: dict[str, Any]) -> dict[str, Any]:
    encoded = transfer["transferDirectives"]["coordinates"]
    coordinates: dict[str, Any] = json.loads(base64.urlsafe_b64decode(encoded))
    return coordinates


async def _remove_logs(cluster: Cluster, *transfers: dict[str, Any]) -> None:
    paths = [p for data in transfers for p in data["transferJob"]["logs"].values()]
    await as_alice(cluster, "rm", "-f", "--", *paths)


async def _listening_upload(
    client: AsyncFirecrest, local: Path, size: int, remote_dir: str
) -> tuple[Any, str, str]:
    """A streamer upload of ``size`` random bytes, not blocking, its job listening.

    Returns the upload, the URI its job listens at, and the secret.
    """
    random_file(local, size)
    upload = await client.upload(
        SYSTEM, str(local), remote_dir, local.name, transfer_method="streamer", blocking=False
    )
    assert upload is not None
    await upload.wait_for_streamer_job_to_listen()
    coordinates = _coordinates(upload.transfer_data)
    return upload, f"ws://{coordinates['ips'][0]}:{coordinates['ports'][0]}", coordinates["secret"]


def _own_loop(live: LiveService, work: Callable[[AsyncFirecrest], Awaitable[T]]) -> Awaitable[T]:
    """``work`` with a pyfirecrest client of its own, on an event loop of its own thread.

    pyfirecrest's streamer client compresses each 5 MiB chunk in its event
    loop (websockets' permessage-deflate): 7 s of one 200 MiB upload with
    the loop blocked. A real client is a process of its own; on the loop of
    the in-process service under test it starved the health probes (5 s
    timeout) until the gate refused the client's GetJob with 503.
    """

    async def run() -> T:
        firecrest = AsyncFirecrest(live.rest_url, StaticToken(live.token("alice")))
        try:
            return await work(firecrest)
        finally:
            await firecrest.close_session()

    return asyncio.to_thread(asyncio.run, run())


@pytest.mark.timeout(600)
async def test_upload_and_download_200_mib_exact(
    live: LiveService, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    local = tmp_path / "big.bin"
    await asyncio.to_thread(random_file, local, SIZE)
    want = await asyncio.to_thread(sha256, local)

    async def upload(client: AsyncFirecrest) -> dict[str, Any]:
        upload = await client.upload(
            SYSTEM, str(local), remote_dir, "big.bin", transfer_method="streamer"
        )
        assert upload is not None
        # The client's stream is done; the job verifies it and renames it into place.
        await upload.wait_for_transfer_job()
        data: dict[str, Any] = upload.transfer_data
        return data

    data = await _own_loop(live, upload)
    assert data["transferDirectives"]["transferMethod"] == "streamer"
    # The server waited for the job to listen, and names the one port it took.
    coordinates = _coordinates(data)
    assert coordinates["ips"] == ["127.0.0.1"]
    assert coordinates["ports"][0] == coordinates["ports"][1]
    assert len(coordinates["secret"]) >= 16
    remote = f"{remote_dir}/big.bin"
    assert (await as_alice(cluster, "sha256sum", "--", remote)).split()[0] == want
    # Nothing else is left beside it: the temporary name was renamed.
    assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == ["big.bin"]

    fetched = tmp_path / "fetched.bin"

    async def download(client: AsyncFirecrest) -> tuple[str, dict[str, Any]]:
        log = await client.view(SYSTEM, data["transferJob"]["logs"]["outputLog"])
        download = await client.download(SYSTEM, remote, str(fetched), transfer_method="streamer")
        assert download is not None
        await download.wait_for_transfer_job()
        fetched_data: dict[str, Any] = download.transfer_data
        return log, fetched_data

    log, fetched_data = await _own_loop(live, download)
    assert f"SHA-256 {want} verified" in log
    assert fetched_data["transferDirectives"]["transferMethod"] == "streamer"
    assert fetched.stat().st_size == SIZE
    assert await asyncio.to_thread(sha256, fetched) == want
    await _remove_logs(cluster, data, fetched_data)


async def test_an_interrupted_upload_leaves_nothing_at_the_target(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    local = tmp_path / "part.bin"
    upload, uri, secret = await _listening_upload(client, local, 3 * 1024 * 1024, remote_dir)
    auth = {"Authorization": f"Bearer {secret}"}
    async with websockets.connect(uri, additional_headers=auth) as websocket:
        init = {"type": "init", "num_chunks": 1, "file_size": 3 * 1024 * 1024}
        await websocket.send(json.dumps(init).encode())
        await websocket.send(local.read_bytes()[: 1024 * 1024])
        websocket.transport.abort()  # the client dies mid-stream: no eof, no close frame
    with pytest.raises(TransferJobFailedException):
        await upload.wait_for_transfer_job()
    log = await client.view(SYSTEM, upload.transfer_data["transferJob"]["logs"]["outputLog"])
    assert "the upload broke off" in log
    assert f"the upload did not complete; {remote_dir}/part.bin is unchanged" in log
    # No target, and no temporary file beside it.
    assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == []
    await _remove_logs(cluster, upload.transfer_data)


async def test_a_wrong_secret_is_refused_and_the_job_waits_on(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    """Another client (another transfer's, scanning the range) cannot take the transfer."""
    local = tmp_path / "small.bin"
    upload, uri, _ = await _listening_upload(client, local, 2 * 1024 * 1024, remote_dir)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await websockets.connect(uri, additional_headers={"Authorization": "Bearer wrong"})
    assert refused.value.response.status_code == 403
    await upload.upload_file_streamer()
    await upload.wait_for_transfer_job()
    got = (await as_alice(cluster, "sha256sum", "--", f"{remote_dir}/small.bin")).split()[0]
    assert got == sha256(local)
    await _remove_logs(cluster, upload.transfer_data)


async def test_systems_list_the_configured_methods(client: AsyncFirecrest) -> None:
    (system,) = [s for s in await client.systems() if s["name"] == SYSTEM]
    operation = system["dataOperation"]
    # FirecREST's one method per system: the default, first configured.
    assert operation["data_transfer"]["serviceType"] == "s3"
    methods = operation["data_transfers"]
    assert [m["serviceType"] for m in methods] == ["s3", "streamer", "wormhole"]
    streamer = methods[1]
    assert streamer["portRange"] == [30100, 30119]
    assert streamer["publicIps"] == ["127.0.0.1"]
    assert streamer["host"] == "127.0.0.1"
    assert streamer["waitTimeout"] == 600
    assert streamer["inboundTransferLimit"] == 5 * 1024**3


async def _own_service(
    cluster: Cluster,
    tmp_path_factory: pytest.TempPathFactory,
    system: Callable[[Path], dict[str, Any]],
) -> AsyncIterator[LiveService]:
    """A server and edge of this module's own, the system's keys changed by ``system(jwks)``."""
    issuer = DevIssuer.generate()
    jwks: Path = tmp_path_factory.mktemp("streamer") / "jwks.json"
    issuer.write_jwks(jwks)
    async for service in start_service(live_settings(cluster, jwks, **system(jwks))):
        await service.running.runtime.system(SYSTEM).health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


@pytest.fixture(scope="module")
async def installing(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """The streamer without a preinstalled Python: each job pip-installs it, as FirecREST's."""
    streamer = transfer_methods(cluster.raw)[1]
    del streamer["python"]
    streamer["listen_timeout"] = 300
    system = {"data_operation": {"data_transfer": [streamer]}}
    async for service in _own_service(cluster, tmp_path_factory, lambda _: system):
        yield service


@pytest.mark.timeout(600)
async def test_a_job_without_a_preinstalled_streamer_installs_it(
    installing: LiveService, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    firecrest = AsyncFirecrest(installing.rest_url, StaticToken(installing.token("alice")))
    try:
        local = tmp_path / "in.bin"
        random_file(local, 3 * 1024 * 1024 + 1)
        upload = await firecrest.upload(
            SYSTEM, str(local), remote_dir, "in.bin", transfer_method="streamer"
        )
        assert upload is not None
        await upload.wait_for_transfer_job()
        fetched = tmp_path / "out.bin"
        download = await firecrest.download(
            SYSTEM, f"{remote_dir}/in.bin", str(fetched), transfer_method="streamer"
        )
        assert download is not None
        await download.wait_for_transfer_job()
    finally:
        await firecrest.close_session()
    assert fetched.read_bytes() == local.read_bytes()
    # Each job removed its venv.
    venvs = await as_alice(
        cluster, "find", "/home/alice", "-maxdepth", "1", "-name", ".hpcgate-*-venv-*"
    )
    assert venvs.split() == []
    await _remove_logs(cluster, upload.transfer_data, download.transfer_data)


@pytest.fixture(scope="module")
async def s3_down(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """s3 and streamer offered, the S3 store unreachable (a port nothing listens on)."""

    def dead_s3(jwks: Path) -> dict[str, Any]:
        config = local_config(cluster.raw, jwks)["systems"][0]
        s3 = {**config["s3"], "endpoint": f"http://127.0.0.1:{free_port()}"}
        return {"s3": s3, "data_operation": config["data_operation"]}

    async for service in _own_service(cluster, tmp_path_factory, dead_s3):
        yield service


async def test_the_streamer_needs_no_s3(
    s3_down: LiveService, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    firecrest = AsyncFirecrest(s3_down.rest_url, StaticToken(s3_down.token("alice")))
    local = tmp_path / "no-s3.bin"
    random_file(local, 2 * 1024 * 1024)
    try:
        with pytest.raises(FirecrestException) as refused:
            await firecrest.upload(SYSTEM, str(local), remote_dir, "no-s3.bin")
        assert refused.value.responses[-1].status_code == 503
        assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == []
        upload = await firecrest.upload(
            SYSTEM, str(local), remote_dir, "no-s3.bin", transfer_method="streamer"
        )
        assert upload is not None
        await upload.wait_for_transfer_job()
    finally:
        await firecrest.close_session()
    got = (await as_alice(cluster, "sha256sum", "--", f"{remote_dir}/no-s3.bin")).split()[0]
    assert got == sha256(local)
    await _remove_logs(cluster, upload.transfer_data)
