"""pyfirecrest, unchanged, with ClientCredentialsAuth against the local OIDC provider.

The way a site's users run it: the client gets its tokens from the token
endpoint with its id and secret (in the form body or by HTTP Basic), and the
server, configured with the issuer only, checks them by discovery. The
provider's tokens live 20 s here, so a run of half a minute needs new ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from firecrest import ClientCredentialsAuth
from firecrest.v2 import AsyncFirecrest, Firecrest
from unit.test_auth import grpc_refusal

from conftest import OIDC_TEST_LIFETIME, Service
from localsite import SYSTEM
from oidc import Provider

METHODS = ["client_secret_post", "client_secret_basic"]
SCRIPT = "#!/bin/bash\n#SBATCH --output=out.txt\necho hello from $USER\n"


def credentials(provider: Provider, user: str, method: str) -> ClientCredentialsAuth:
    client = provider.client_of(user)
    return ClientCredentialsAuth(
        client.client_id, client.client_secret, provider.token_url, client_auth_method=method
    )


def check_session(systems: list[Any], files: list[Any], job: Any, output: str) -> None:
    """What a short session (systems, ls, submit, wait, job info, view) must have seen."""
    assert [system["name"] for system in systems] == [SYSTEM]
    assert files == []  # the fresh directory, before the job wrote into it
    assert (job["status"]["state"], job["status"]["exitCode"]) == ("COMPLETED", 0)
    assert output == "hello from alice\n"


@pytest.mark.parametrize("method", METHODS)
async def test_sync_client(
    oidc: Provider, oidc_live: Service, remote_dir: str, method: str
) -> None:
    def session() -> tuple[list[Any], list[Any], Any, str]:
        client = Firecrest(oidc_live.rest_url, credentials(oidc, "alice", method))
        systems = client.systems()
        files = client.list_files(SYSTEM, remote_dir)
        job_id = client.submit(SYSTEM, remote_dir, script_str=SCRIPT)["jobId"]
        client.wait_for_job(SYSTEM, str(job_id), timeout=120)
        (job,) = client.job_info(SYSTEM, str(job_id))
        return systems, files, job, client.view(SYSTEM, f"{remote_dir}/out.txt")

    # The sync client blocks; the edge and server run in this test's loop.
    check_session(*await asyncio.to_thread(session))


@pytest.mark.parametrize("method", METHODS)
async def test_async_client(
    oidc: Provider, oidc_live: Service, remote_dir: str, method: str
) -> None:
    client = AsyncFirecrest(oidc_live.rest_url, credentials(oidc, "alice", method))
    try:
        systems = await client.systems()
        files = await client.list_files(SYSTEM, remote_dir)
        job_id = str((await client.submit(SYSTEM, remote_dir, script_str=SCRIPT))["jobId"])
        await client.wait_for_job(SYSTEM, job_id, timeout=120)
        (job,) = await client.job_info(SYSTEM, job_id)
        check_session(systems, files, job, await client.view(SYSTEM, f"{remote_dir}/out.txt"))
    finally:
        await client.close_session()


async def test_tokens_are_refreshed_during_a_long_run(oidc: Provider, oidc_live: Service) -> None:
    auth = credentials(oidc, "alice", "client_secret_basic")
    client = AsyncFirecrest(oidc_live.rest_url, auth)
    tokens: list[str] = []
    try:
        # Longer than one token's lifetime; one call a second, each must succeed.
        started = time.monotonic()
        while time.monotonic() - started < OIDC_TEST_LIFETIME + 5:
            systems = await client.systems()
            assert [system["name"] for system in systems] == [SYSTEM]
            # The token that call carried (pyfirecrest reuses it until near its expiry).
            token = auth.get_access_token()
            if token not in tokens:
                tokens.append(token)
            await asyncio.sleep(1)
    finally:
        await client.close_session()
    assert len(tokens) >= 2
    # The first token has expired by now: without the refresh the run would have failed.
    assert await grpc_refusal(oidc_live, tokens[0]) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_EXPIRED",
    )
