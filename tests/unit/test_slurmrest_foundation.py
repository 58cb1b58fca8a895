"""slurm-rest foundation without a daemon: token minting and the classification of answers."""

from __future__ import annotations

import jwt
import pytest

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.slurmrest.client import classify
from hpcgate.server.scheduler.slurmrest.tokens import CommandTokens, TokenMinter

KEY = b"k" * 32


def test_token_claims_and_signature() -> None:
    minter = TokenMinter(KEY, 600, clock=lambda: 1000.0)
    claims = jwt.decode(
        minter.token("alice"), KEY, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims == {"sun": "alice", "iat": 1000, "exp": 1600}


def test_token_is_reused_then_renewed_near_expiry() -> None:
    now = [1000.0]
    minter = TokenMinter(KEY, 600, clock=lambda: now[0])
    first = minter.token("alice")
    now[0] = 1400.0  # 200 s of 600 left: still reused
    assert minter.token("alice") == first
    now[0] = 1500.0  # 100 s left, under a quarter: renewed
    assert minter.token("alice") != first
    assert minter.token("bob") != minter.token("alice")


def test_success_is_no_error() -> None:
    assert classify(200, {"errors": [], "pings": []}) is None


def test_slurmctld_down_behind_slurmrestd() -> None:
    error = classify(500, {"errors": [{"error_number": 1007, "error": "Protocol authentication"}]})
    assert error is not None
    assert (error.code, error.reason) == (ErrorKind.UNAVAILABLE, "SCHEDULER_UNAVAILABLE")


def test_slurm_errors_are_reported() -> None:
    error = classify(500, {"errors": [{"error_number": -1, "error": "Unspecified error"}]})
    assert error is not None
    assert error.code is ErrorKind.INTERNAL
    assert "Unspecified error" in str(error)


async def test_a_failing_token_command_is_unavailable() -> None:
    tokens = CommandTokens(["sh", "-c", "echo no key >&2; exit 3", "{user}"], 300)
    with pytest.raises(ServiceError) as caught:
        await tokens.token("alice")
    assert (caught.value.code, caught.value.reason) == (ErrorKind.UNAVAILABLE, "SLURM_TOKEN")
    assert "no key" in caught.value.message


async def test_a_token_commands_output_is_the_token() -> None:
    # `scontrol token` prints SLURM_JWT=...; {user} is one argv word, no shell.
    tokens = CommandTokens(["echo", "SLURM_JWT=t-{user}"], 300)
    assert await tokens.token("a b") == "t-a b"
