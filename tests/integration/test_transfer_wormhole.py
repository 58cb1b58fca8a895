"""The wormhole transfer method, through the official pyfirecrest client, unchanged.

From ``MAX_DIRECT_UPLOAD_SIZE`` (1 MiB) on, pyfirecrest with
``transfer_method="wormhole"`` runs the ``wormhole`` command on the client's
machine: for an upload ``wormhole send`` (the mailbox allocates the code,
which pyfirecrest sends to ``transfer/upload``; the job receives with it),
for a download ``wormhole receive`` with the code ``transfer/download``
answered (the job sends with it). Both ends use the loopback cluster's
mailbox server and transit relay: the jobs because dev/localsite.py
configures them, this client through magic-wormhole's own variables
(``WORMHOLE_RELAY_URL``, ``WORMHOLE_TRANSIT_HELPER``), with the ``wormhole``
of the cluster's venv on its PATH.

pyfirecrest (3.10, the newest) downloads with ``wormhole receive --code
CODE``, an option no magic-wormhole release has (0.10.5 to 0.24.0 take the
code as ``receive``'s argument; ``send`` has ``--code``): its wormhole
download cannot work against the real command. So the client's PATH holds
a shim (``localsite.wormhole_client_env``) that passes that code as the argument and runs
the real ``wormhole``; and :func:`test_a_download_reaches_the_unmodified_cli`
shows the server's side with the real command, no shim, as magic-wormhole
documents it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bigfiles import as_alice, random_file, sha256
from firecrest.FirecrestException import FirecrestException
from firecrest.v2 import AsyncFirecrest

from cluster_fixture import Cluster
from conftest import LiveService, StaticToken, live_settings, start_service
from devkeys import DevIssuer
from localsite import SYSTEM, transfer_methods, wormhole_client_env

SIZE = 200 * 1024 * 1024
# Large enough that a transfer is still moving when the test interrupts it.
INTERRUPTED_SIZE = 150 * 1024 * 1024


async def _remove_logs(cluster: Cluster, *transfers: dict[str, Any]) -> None:
    paths = [p for data in transfers for p in data["transferJob"]["logs"].values()]
    await as_alice(cluster, "rm", "-f", "--", *paths)


@pytest.fixture
def wormhole_client(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> str:
    """This process's ``wormhole``: the cluster's, at its mailbox and relay.

    Returns the real command. The PATH gains a directory holding only the
    shim for pyfirecrest's ``receive --code`` (module docstring).
    """
    wormhole = cluster.raw.get("wormhole")
    assert wormhole, "the cluster has no wormhole servers: run `dev/cluster/cluster.py start`"
    bin_dir = tmp_path_factory.mktemp("wormhole-bin")
    env = wormhole_client_env(cluster.raw, bin_dir, os.environ["PATH"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return str(wormhole["command"])


@pytest.mark.timeout(900)
async def test_upload_and_download_200_mib_exact(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path, cluster: Cluster, wormhole_client: str
) -> None:
    local = tmp_path / "big.bin"
    random_file(local, SIZE)
    want = sha256(local)

    upload = await client.upload(
        SYSTEM, str(local), remote_dir, "big.bin", transfer_method="wormhole"
    )
    assert upload is not None  # blocking: pyfirecrest waited for the job and for its wormhole
    data = upload.transfer_data
    assert data["transferDirectives"]["transferMethod"] == "wormhole"
    remote = f"{remote_dir}/big.bin"
    assert (await as_alice(cluster, "sha256sum", "--", remote)).split()[0] == want
    # Nothing else is left beside it: the temporary directory was removed.
    assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == ["big.bin"]
    log = await client.view(SYSTEM, data["transferJob"]["logs"]["outputLog"])
    assert f"File was successfully uploaded to {remote} ({SIZE} bytes)" in log

    fetched = tmp_path / "fetched.bin"
    download = await client.download(SYSTEM, remote, str(fetched), transfer_method="wormhole")
    assert download is not None
    directives = download.transfer_data["transferDirectives"]
    assert directives["transferMethod"] == "wormhole"
    # A nameplate far above those the mailbox allocates, and a random password.
    assert re.fullmatch(r"[1-9][0-9]{8}-[0-9a-f]{8}-[0-9a-f]{8}", directives["wormholeCode"])
    assert fetched.stat().st_size == SIZE
    assert sha256(fetched) == want
    await download.wait_for_transfer_job()  # the job saw the client's confirmation
    await _remove_logs(cluster, data, download.transfer_data)


@pytest.mark.timeout(300)
async def test_a_download_reaches_the_unmodified_cli(
    live: LiveService, remote_dir: str, tmp_path: Path, cluster: Cluster, wormhole_client: str
) -> None:
    remote = f"{remote_dir}/down.bin"
    await as_alice(cluster, "sh", "-c", 'head -c 5000000 /dev/urandom > "$1"', "sh", remote)
    want = (await as_alice(cluster, "sha256sum", "--", remote)).split()[0]
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        response = await http.post(
            f"/filesystem/{SYSTEM}/transfer/download",
            json={"sourcePath": remote, "transferDirectives": {"transferMethod": "wormhole"}},
            timeout=60,
        )
    assert response.status_code == 201, response.text
    data = response.json()
    code = data["transferDirectives"]["wormholeCode"]
    fetched = tmp_path / "fetched.bin"
    receive = await asyncio.create_subprocess_exec(
        wormhole_client,
        "receive",
        "--accept-file",
        "--hide-progress",
        "-o",
        str(fetched),
        code,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(receive.communicate(), 240)
    assert receive.returncode == 0, err.decode()
    assert sha256(fetched) == want
    await _remove_logs(cluster, data)


async def _started_send(wormhole: str, local: Path) -> tuple[asyncio.subprocess.Process, str]:
    """A client's ``wormhole send`` of ``local`` (as pyfirecrest starts it), and its code."""
    send = await asyncio.create_subprocess_exec(
        wormhole,
        "send",
        "--hide-progress",
        "--code-length",
        "4",
        str(local),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert send.stderr is not None
    while line := (await send.stderr.readline()).decode():
        if line.startswith("Wormhole code is:"):
            return send, line.split(":", 1)[1].strip()
    raise AssertionError("wormhole send printed no code")


async def _post_upload(live: LiveService, path: str, directives: dict[str, Any]) -> httpx.Response:
    """POST transfer/upload as alice, with these ``transferDirectives``."""
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        return await http.post(
            f"/filesystem/{SYSTEM}/transfer/upload",
            json={"path": path, "transferDirectives": directives},
            timeout=60,
        )


async def _until_receiving(cluster: Cluster, remote_dir: str) -> None:
    """Wait until the job's wormhole has written a MiB or more into its temporary directory."""
    for _ in range(600):
        found = await as_alice(
            cluster, "find", remote_dir, "-mindepth", "2", "-type", "f", "-size", "+1M"
        )
        if found.strip():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the job's wormhole received nothing within two minutes")


async def _interrupted_upload(
    client: AsyncFirecrest,
    live: LiveService,
    cluster: Cluster,
    remote_dir: str,
    local: Path,
    wormhole: str,
    interrupt: str,
) -> dict[str, Any]:
    """An upload broken off mid-way by ``interrupt``: "client" (killed) or "job" (cancelled).

    Returns the job's transfer data once the job ended.
    """
    random_file(local, INTERRUPTED_SIZE)
    send, code = await _started_send(wormhole, local)
    try:
        response = await _post_upload(
            live, f"{remote_dir}/{local.name}", {"transferMethod": "wormhole", "wormholeCode": code}
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        job_id = data["transferJob"]["jobId"]
        await _until_receiving(cluster, remote_dir)
        if interrupt == "client":
            send.kill()
        else:
            await client.cancel_job(SYSTEM, job_id)
        await client.wait_for_job(SYSTEM, job_id)
    finally:
        if send.returncode is None:
            send.kill()
        await send.wait()
    return data


@pytest.mark.timeout(600)
@pytest.mark.parametrize("interrupt", ["client", "job"])
async def test_an_interrupted_upload_leaves_nothing_at_the_target(
    client: AsyncFirecrest,
    live: LiveService,
    remote_dir: str,
    tmp_path: Path,
    cluster: Cluster,
    wormhole_client: str,
    interrupt: str,
) -> None:
    local = tmp_path / "part.bin"
    data = await _interrupted_upload(
        client, live, cluster, remote_dir, local, wormhole_client, interrupt
    )
    log = await client.view(SYSTEM, data["transferJob"]["logs"]["outputLog"])
    assert "File was successfully" not in log
    if interrupt == "client":
        assert f"the upload did not complete; {remote_dir}/part.bin is unchanged" in log
    else:
        assert "stopped by a signal" in log
    # No target, and no temporary directory (nor wormhole's partial file) beside it.
    assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == []
    await _remove_logs(cluster, data)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (None, "is required for a wormhole upload"),
        ("7-guitarist; touch /tmp/x", "not a wormhole code"),
        ("guitarist-revenge", "not a wormhole code"),
    ],
)
async def test_a_missing_or_malformed_code_is_refused_naming_the_field(
    live: LiveService, remote_dir: str, cluster: Cluster, code: str | None, words: str
) -> None:
    directives: dict[str, Any] = {"transferMethod": "wormhole"}
    if code is not None:
        directives["wormholeCode"] = code
    response = await _post_upload(live, f"{remote_dir}/f.bin", directives)
    assert response.status_code == 400
    violation = response.json()["data"]["fieldViolations"][0]
    assert violation["field"] == "transferDirectives.wormholeCode"
    assert words in violation["description"]
    # Nothing was submitted: no job log, no file.
    assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == []


async def test_systems_list_wormhole_among_the_methods(client: AsyncFirecrest) -> None:
    (system,) = [s for s in await client.systems() if s["name"] == SYSTEM]
    methods = system["dataOperation"]["data_transfers"]
    assert [m["serviceType"] for m in methods] == ["s3", "streamer", "wormhole"]
    # FirecREST's WormholeDataTransfer has pypi_index_url alone, unset here.
    assert methods[2] == {"serviceType": "wormhole"}


@pytest.fixture(scope="module")
async def s3_only(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """A server and edge of this module's own whose system offers s3 alone."""
    issuer = DevIssuer.generate()
    jwks: Path = tmp_path_factory.mktemp("wormhole") / "jwks.json"
    issuer.write_jwks(jwks)
    (s3, *_) = transfer_methods(cluster.raw)
    settings = live_settings(cluster, jwks, data_operation={"data_transfer": [s3]})
    async for service in start_service(settings):
        await service.running.runtime.system(SYSTEM).health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


async def test_a_method_not_configured_is_refused_as_firecrest_does(
    s3_only: LiveService, remote_dir: str, cluster: Cluster
) -> None:
    await as_alice(cluster, "truncate", "-s", "2M", "--", f"{remote_dir}/f")
    firecrest = AsyncFirecrest(s3_only.rest_url, StaticToken(s3_only.token("alice")))
    try:
        with pytest.raises(FirecrestException) as refused:
            await firecrest.download(
                SYSTEM, f"{remote_dir}/f", "/nonexistent", transfer_method="wormhole"
            )
    finally:
        await firecrest.close_session()
    response = refused.value.responses[-1]
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Requested transfer method is not available."
    assert body["data"]["reason"] == "TRANSFER_METHOD_UNAVAILABLE"
    violation = body["data"]["fieldViolations"][0]
    assert violation["field"] == "transferDirectives.transferMethod"
    assert "'wormhole' is not offered on cluster (s3 is)" in violation["description"]
    # Nothing was submitted: the directory holds the file alone (no job log).
    assert (await as_alice(cluster, "ls", "-A", "--", remote_dir)).split() == ["f"]
