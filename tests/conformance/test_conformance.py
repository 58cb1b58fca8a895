"""hpcgate's edge against the golden record of FirecREST v2's real responses.

``firecrest-v2-record.json`` holds what FirecREST v2 answered to each
operation of :mod:`conformance.scenario` (made by ``record.py``). Here the
same operations, in the same order and on the same fixture tree, go to
hpcgate's edge on the loopback cluster, and each answer must agree with the
record as :func:`conformance.compare.differences` decides.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conformance import drive, scenario
from conformance.compare import differences
from conformance.golden import RECORDED

from cluster_fixture import Cluster
from conftest import LiveService

# Differences allowed within an answer: operation -> {prefix of a difference: why}. Most come
# from how the two services were set up, not from what they do. Everything else must agree.
ALLOWED: dict[str, dict[str, str]] = {
    "status_systems": {
        **{
            f"body.systems[].dataOperation.data_transfer.{key}: missing": (
                "never sent by hpcgate, not even masked: the S3 private URL and credentials"
                " are write-only in FirecREST's schema, and unset fields are left out"
                " (status.proto, DataTransferConfig); FirecREST sends '**********' and null"
            )
            for key in ("privateUrl", "accessKeyId", "secretAccessKey", "tenant")
        },
        "body.systems[].servicesHealth[]": (
            "FirecREST's probes cannot run in run.sh's setup (no service-account token):"
            " its list holds one failed entry; hpcgate's holds real probes"
        ),
        "body.systems[].lastHealthCheck:": "FirecREST's probes never ran (as above)",
    },
    "status_nodes": {
        "body.nodes[].features:": (
            "a node without features: Slurm's placeholder '(null)' is null in hpcgate, as"
            " everywhere it reads Slurm; FirecREST passes the placeholder on"
        ),
    },
    "status_liveness": {
        "body.healthcheckRuns.cluster:": "FirecREST's probes never ran (as above)",
    },
    "transfer_upload_no_directives": {
        "errorType 'error', FirecREST 'validation'": (
            "both 400; hpcgate takes absent transferDirectives as s3, the one method it offers"
            " (servicers/transfer.py), and its server then refuses the missing"
            " transferDirectives.fileSize, where FirecREST's request validation refuses the"
            " missing object"
        ),
    },
}

# Where hpcgate refuses on purpose what FirecREST serves or answers with a 5xx:
# operation -> (the operation whose recorded error body hpcgate's must look like, why).
# Status, headers and body shape are held against that operation; its text is not.
DELIBERATE: dict[str, tuple[str, str]] = {
    "ls_outside": (
        "view_zero_size",
        "400: a path must lead to a place under a configured filesystem (ARCHITECTURE)",
    ),
    "ls_relative": ("view_zero_size", "400: a relative path is bad input"),
    "chmod_bad_mode": ("view_zero_size", "400 before any command; FirecREST: 500 from chmod"),
    "file_missing": ("ls_missing", "404 for a missing path; FirecREST: 200 with file(1)'s error"),
    "job_cancel_unknown": ("job_get_unknown", "404 as for the job; FirecREST: 500 with scancel's"),
}


def _not_allowed(name: str, found: list[str]) -> list[str]:
    allowed = ALLOWED.get(name, {})
    return [d for d in found if not any(d.startswith(prefix) for prefix in allowed)]


@pytest.fixture(scope="module")
async def answers(live: LiveService, cluster: Cluster) -> dict[str, dict[str, Any]]:
    """hpcgate's normalised answers to every operation, on a fresh fixture tree of alice's."""
    ctx = drive.Context.fresh(live.system, "alice")

    async def on_cluster(command: str) -> None:
        async with cluster.connect("alice") as conn:
            await conn.run(command, check=True)

    await on_cluster(scenario.setup_script(ctx.scratch))
    try:
        async with httpx.AsyncClient(base_url=live.rest_url, timeout=60) as client:
            return await drive.run(client, ctx, live.token("alice"))
    finally:
        await on_cluster(scenario.cleanup_script([ctx.scratch, *ctx.stray_files]))


@pytest.mark.parametrize("name", [op.name for op in scenario.OPERATIONS])
async def test_operation(name: str, answers: dict[str, dict[str, Any]]) -> None:
    """hpcgate answers ``name`` as FirecREST v2 did: status, headers, keys, types, error texts."""
    if name in DELIBERATE:
        like = DELIBERATE[name][0]
        found = differences(RECORDED[like]["response"], answers[name], texts=False)
    else:
        found = _not_allowed(name, differences(RECORDED[name]["response"], answers[name]))
    assert not found, "\n".join([f"{name} differs from FirecREST v2:", *found])
