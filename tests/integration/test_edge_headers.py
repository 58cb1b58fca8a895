"""Response headers: FirecREST's F7T-* meta headers, safety headers, downloads as attachments."""

from __future__ import annotations

import shlex
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from firecrest.v2 import AsyncFirecrest

from cluster_fixture import Cluster
from conftest import LiveService, StaticToken
from hpcgate.edge.headers import FIRECREST_API_VERSION, attachment, hpcgate_version


def assert_meta(response: httpx.Response, user: str | None, started: float) -> None:
    headers = response.headers
    assert headers["f7t-appversion"] == FIRECREST_API_VERSION
    assert started <= float(headers["f7t-timestamp"]) <= time.time()
    assert headers["x-hpcgate-version"] == hpcgate_version()
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert headers.get("f7t-authusername") == user


async def test_every_response_carries_the_meta_headers(live: LiveService) -> None:
    started = time.time()
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        systems = await client.get("/status/systems", headers=live.headers("alice"))
        as_bob = await client.get(f"/status/{live.system}/nodes", headers=live.headers("bob"))
        missing_job = await client.get(
            f"/compute/{live.system}/jobs/4000000000", headers=live.headers("alice")
        )
        anonymous = await client.get("/status/systems")
        liveness = await client.get("/status/liveness/")
        unknown_path = await client.get("/no/such/path")
        document = await client.get("/openapi.json")
    assert systems.status_code == 200
    assert_meta(systems, "alice", started)
    assert_meta(as_bob, "bob", started)
    # An error after authentication still names the caller, as FirecREST's does.
    assert missing_job.status_code == 404
    assert_meta(missing_job, "alice", started)
    # No authenticated caller, no username.
    assert anonymous.status_code == 401
    assert_meta(anonymous, None, started)
    assert liveness.status_code == 200
    assert_meta(liveness, None, started)
    assert unknown_path.status_code == 404
    assert_meta(unknown_path, None, started)
    assert_meta(document, None, started)


async def test_pyfirecrest_reads_the_api_version(live: LiveService) -> None:
    client = AsyncFirecrest(live.rest_url, StaticToken(live.token("alice")))
    try:
        assert await client.server_version() == FIRECREST_API_VERSION
    finally:
        await client.close_session()


@pytest.fixture
async def odd_file(cluster: Cluster) -> AsyncIterator[tuple[str, str]]:
    """A file of alice's whose name needs quoting in a header: (directory, name)."""
    directory = f"/home/alice/test-{uuid.uuid4().hex[:12]}"
    name = 'r\u00e9sum\u00e9 "final";.txt'
    async with cluster.connect("alice") as conn:
        quoted = shlex.quote(f"{directory}/{name}")
        await conn.run(f"mkdir -- {shlex.quote(directory)} && echo hi > {quoted}", check=True)
        try:
            yield directory, name
        finally:
            await conn.run(shlex.join(["rm", "-rf", "--", directory]), check=True)


async def test_download_is_an_attachment_with_a_safely_quoted_name(
    live: LiveService, odd_file: tuple[str, str]
) -> None:
    directory, name = odd_file
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as client:
        response = await client.get(
            f"/filesystem/{live.system}/ops/download", params={"path": f"{directory}/{name}"}
        )
    assert response.status_code == 200, response.text
    assert response.content == b"hi\n"
    disposition = response.headers["content-disposition"]
    assert disposition == attachment(name)
    assert disposition.startswith('attachment; filename="r_sum_ _final_;.txt"; ')
    assert disposition.endswith("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B.txt")
    assert response.headers["x-content-type-options"] == "nosniff"
