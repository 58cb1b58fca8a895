"""What the fuzz found, pinned down case by case (so a regression fails here by name).

Each test is one defect the schemathesis fuzz (test_edge_fuzz.py) reported,
replayed as a plain request against the live stack.
"""

from __future__ import annotations

import shlex
from typing import Any

import httpx

from cluster_fixture import Cluster
from conftest import LiveService


async def _get(live: LiveService, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        return await http.get(path, params=params, timeout=60)


async def test_a_symlink_loop_is_the_callers_error(
    live: LiveService, cluster: Cluster, remote_dir: str
) -> None:
    loop = f"{remote_dir}/loop"
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["ln", "-s", "--", loop, loop]), check=True)
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        response = await http.post(
            f"/filesystem/{live.system}/transfer/download",
            json={"sourcePath": loop},
            timeout=60,
        )
    assert response.status_code == 400, response.text
    assert response.json()["data"]["reason"] == "SYMLINK_LOOP"


async def test_a_job_list_refuses_an_account_sacct_cannot_read(live: LiveService) -> None:
    response = await _get(live, f"/compute/{live.system}/jobs", account="\U000e5cef\x1b")
    assert response.status_code == 400, response.text
    assert response.json()["data"]["fieldViolations"][0]["field"] == "account"


async def test_a_job_list_by_a_name_beyond_latin_1_is_answered(live: LiveService) -> None:
    # Slurm's latin1 accounting tables cannot compare it: no job of alice's has it.
    response = await _get(live, f"/compute/{live.system}/jobs", name="\u0107\u65e5")
    assert response.status_code == 200, response.text
    assert response.json()["jobs"] in ([], None)


async def test_the_liveness_document_asks_for_no_token(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url) as http:
        document = (await http.get("/openapi.json")).json()
        answer = await http.get("/status/liveness/")
    assert document["paths"]["/status/liveness/"]["get"]["security"] == []
    assert answer.status_code == 200
