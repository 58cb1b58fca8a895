"""The OpenAPI document says what the edge and the server do, operation by operation.

Each divergence the audit found (issue 14, item 12) is checked against the
live service: what the document promises is accepted, what it requires is
required, and what the server refuses the schema does not allow.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import LiveService


@pytest.fixture(scope="module")
async def document(live: LiveService) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _parameter(document: dict[str, Any], path: str, verb: str, name: str) -> dict[str, Any]:
    operation = document["paths"][path][verb]
    (found,) = [p for p in operation["parameters"] if p["name"] == name]
    return dict(found)


def _violation(response: httpx.Response) -> str:
    return str(response.json()["data"]["fieldViolations"][0]["field"])


async def test_the_watch_takes_the_max_duration_it_documents(
    live: LiveService, document: dict[str, Any]
) -> None:
    watch = "/compute/{system_name}/jobs/watch"
    parameter = _parameter(document, watch, "get", "maxDuration")
    assert parameter["schema"]["type"] == "string"
    url = f"/compute/{live.system}/jobs/watch"
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as client:
        # Without maxDuration this watch (all of alice's jobs) would never end.
        async with client.stream("GET", url, params={"maxDuration": "1s"}, timeout=60) as stream:
            assert stream.status_code == 200
            lines = [line async for line in stream.aiter_lines()]
        bad = await client.get(url, params={"maxDuration": "soon"})
    assert not any(line.startswith("event: error") for line in lines), lines
    assert bad.status_code == 400


async def test_path_is_required_where_the_server_requires_it(
    live: LiveService, document: dict[str, Any]
) -> None:
    ls = _parameter(document, "/filesystem/{system_name}/ops/ls", "get", "path")
    assert ls["required"] is True
    assert ls["schema"]["minLength"] == 1
    mkdir = document["paths"]["/filesystem/{system_name}/ops/mkdir"]["post"]
    assert "sourcePath" in mkdir["requestBody"]["content"]["application/json"]["schema"]["required"]
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as client:
        missing = await client.get(f"/filesystem/{live.system}/ops/ls")
    assert missing.status_code == 400
    assert _violation(missing) == "path"


async def test_job_id_zero_is_outside_the_schema_and_refused(
    live: LiveService, document: dict[str, Any]
) -> None:
    for template in (
        "/compute/{system_name}/jobs/{job_id}",
        "/compute/{system_name}/jobs/{job_id}/metadata",
        "/filesystem/{system_name}/transfer/{job_id}",
    ):
        schema = _parameter(document, template, "get", "job_id")["schema"]
        assert schema["minimum"] == 1, template
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as client:
        zero = await client.get(f"/compute/{live.system}/jobs/0")
    assert zero.status_code == 400
    assert _violation(zero) == "jobId"


async def test_a_verb_a_route_does_not_bind_is_405(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as client:
        watch = await client.delete(f"/compute/{live.system}/jobs/watch")
        systems = await client.post("/status/systems", json={})
    assert watch.status_code == 405, watch.text
    assert watch.headers["allow"] == "GET"
    assert watch.json()["data"]["reason"] == "METHOD_NOT_ALLOWED"
    assert systems.status_code == 405


async def test_errors_name_the_field_as_the_client_spelled_it(live: LiveService) -> None:
    url = f"/filesystem/{live.system}/ops/mkdir"
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as client:
        as_path = await client.post(url, json={"path": "relative/dir"})
        as_source_path = await client.post(url, json={"sourcePath": "relative/dir"})
    assert as_path.status_code == 400, as_path.text
    assert _violation(as_path) == "path"
    assert as_path.json()["message"].startswith("path")
    assert as_source_path.status_code == 400
    assert _violation(as_source_path) == "sourcePath"
