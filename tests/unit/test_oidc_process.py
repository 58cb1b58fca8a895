"""The OIDC provider as ``make run`` runs it: a process of its own, its state in a file."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from firecrest import ClientCredentialsAuth

import run as devrun
from oidc import Provider


@pytest.fixture
def process(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The provider started by dev/run.py's spawn_oidc in ``tmp_path``; stopped afterwards."""
    entry = devrun.spawn_oidc(tmp_path)
    try:
        devrun.wait_http(
            f"{entry['address']}/.well-known/openid-configuration", 30, tmp_path / "oidc.log"
        )
        yield entry
    finally:
        devrun.stop_processes({"oidc": entry})


async def published_kids(issuer: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(f"{issuer}/jwks")).json()
    return [key["kid"] for key in jwks["keys"]]


async def test_state_file_serves_make_run_and_sighup_rotates(
    process: dict[str, Any], tmp_path: Path
) -> None:
    issuer, state = process["address"], tmp_path / "oidc.json"
    assert state.stat().st_mode & 0o777 == 0o600  # it holds secrets and private keys
    # What dev/run.py reads back: the running provider's own clients and keys.
    provider = Provider.load_or_create(issuer, state)
    assert set(provider.facts()["clients"]) == {"alice", "bob"}
    assert await published_kids(issuer) == [provider.ring.signing.kid]

    alice = provider.facts()["clients"]["alice"]
    auth = ClientCredentialsAuth(alice["client_id"], alice["client_secret"], provider.token_url)
    token = await asyncio.to_thread(auth.get_access_token)
    assert jwt.get_unverified_header(token)["kid"] == provider.ring.signing.kid
    assert jwt.decode(token, options={"verify_signature": False})["preferred_username"] == "alice"

    os.kill(process["pid"], signal.SIGHUP)
    for _ in range(100):  # the handler runs between the process's own steps
        kids = await published_kids(issuer)
        if len(kids) == 2:
            break
        await asyncio.sleep(0.05)
    assert kids[0] == provider.ring.signing.kid
    # The rotated key is in the state file, so tokens minted from it are the provider's.
    assert Provider.load_or_create(issuer, state).ring.signing.kid == kids[1]
