"""The fault matrix: one backend at a time fails under a steady mixed load.

For each of sshd, slurmctld (stopped and hung), slurmdbd, MariaDB and S3, a
load of alice's and bob's calls runs (system list, ls, job list, partitions)
while the part is down for a few seconds. Calls that need the part answer
503 with a reason (never 500, never a hang); calls that do not need it keep
answering 200; once the part is back, every call answers 200 again within
one probe interval (plus the probe's own timeout). Faults are short and
always undone (``faults.py``); a stop that another session's
``cluster.py start`` undid before the end is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from faults import cluster_pid, eventually, off_loop, paused, running, stopped
from localsite import local_config

SYSTEM = "matrix"
INTERVAL, PROBE_TIMEOUT = 1.0, 2.0
COMMAND_TIMEOUT = 5.0
# How long each part stays down, and how long the recovery may take. A hung
# part stays down longer: a call already in flight when it hung waits out its
# command timeout, and only the one after it can both start and fail in the
# window.
WINDOW = 6.0
HUNG_WINDOW = 2 * COMMAND_TIMEOUT + 1.0
# One probe (interval + timeout) finds the part back; the slack is for the
# calls themselves: on 2 loaded cores (CI's whole suite) a call started just
# after the return took longer than the 3 s once allowed (slurmdbd, S3 hung).
RECOVERY = INTERVAL + PROBE_TIMEOUT + 12.0
USERS = ("alice", "bob")


def _paths(user: str) -> dict[str, str]:
    return {
        "systems": "/status/systems",
        "ls": f"/filesystem/{SYSTEM}/ops/ls?path=/home/{user}",
        "jobs": f"/compute/{SYSTEM}/jobs",
        "partitions": f"/status/{SYSTEM}/partitions",
    }


@dataclass(frozen=True)
class Outcome:
    kind: str
    user: str
    status: int
    reason: str | None
    started: float
    ended: float


@dataclass
class Load:
    """Each user's calls of each kind, one after another, recorded."""

    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float, kinds: set[str]) -> list[Outcome]:
        return [
            o for o in self.outcomes if o.kind in kinds and o.started >= start and o.ended <= end
        ]


@contextlib.asynccontextmanager
async def steady_load(service: LiveService) -> AsyncIterator[Load]:
    load = Load()

    async def loop(client: httpx.AsyncClient, user: str, kind: str, path: str) -> None:
        while True:
            started = time.monotonic()
            response = await client.get(path, headers=service.headers(user))
            reason = None
            if response.status_code >= 400:
                reason = response.json().get("data", {}).get("reason")
            load.outcomes.append(
                Outcome(kind, user, response.status_code, reason, started, time.monotonic())
            )
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=service.rest_url, timeout=60) as client:
        tasks = [
            asyncio.create_task(loop(client, user, kind, path))
            for user in USERS
            for kind, path in _paths(user).items()
        ]
        try:
            yield load
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module")
async def matrix(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    issuer = DevIssuer.generate()
    jwks: Path = tmp_path_factory.mktemp("matrix") / "jwks.json"
    issuer.write_jwks(jwks)
    base = local_config(cluster.raw, jwks)["systems"][0]
    ssh = {**base["ssh"], "timeouts": {"connect": 2, "login": 2}}
    settings = live_settings(
        cluster,
        jwks,
        name=SYSTEM,
        ssh=ssh,
        s3={**base["s3"], "bucket_prefix": "matrix"},
        probing={"interval": INTERVAL, "timeout": PROBE_TIMEOUT},
        scheduler={"type": "slurm", "command_timeout": COMMAND_TIMEOUT},
    )
    async for service in start_service(settings):
        await service.running.runtime.system(SYSTEM).health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


def _stop(part: str) -> Callable[[], contextlib.AbstractContextManager[None]]:
    return lambda: stopped(part)


def _pause(part: str) -> Callable[[], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def fault() -> Iterator[None]:
        with paused(cluster_pid(part)):
            yield

    return fault


KINDS = set(_paths("alice"))
ROWS = {
    # fault: (how, the part it stops, the kinds of call that need it)
    "slurmctld-hung": (_pause("slurmctld"), "slurmctld", {"jobs", "partitions"}),
    "slurmdbd-hung": (_pause("slurmdbd"), "slurmdbd", {"jobs"}),
    "mariadb-stopped": (_stop("mariadbd"), "mariadbd", {"jobs"}),
    "slurmdbd-stopped": (_stop("slurmdbd"), "slurmdbd", {"jobs"}),
    "slurmctld-stopped": (_stop("slurmctld"), "slurmctld", {"jobs", "partitions"}),
    "sshd-stopped": (_stop("sshd"), "sshd", {"ls", "jobs", "partitions"}),
    "s3-hung": (_pause("s3"), "s3", set()),  # the load needs no S3; an upload does
}


def _unanswered(load: Load, since: float) -> set[tuple[str, str]]:
    """The (kind, user) pairs with no call started after ``since`` that answered 200."""
    ok = {(o.kind, o.user) for o in load.outcomes if o.started >= since and o.status == 200}
    return {(kind, user) for kind in KINDS for user in USERS} - ok


def _all_answer(load: Load, since: float) -> bool:
    """Whether every kind of call, for every user, answered 200 after ``since``."""
    return not _unanswered(load, since)


def _since(load: Load, since: float) -> str:
    """What the calls still unanswered did after ``since`` (for a failure's message)."""
    missing = _unanswered(load, since)
    seen = [o for o in load.outcomes if (o.kind, o.user) in missing and o.ended >= since]
    return (
        "; ".join(
            f"{o.kind}/{o.user} +{o.started - since:.1f}s..+{o.ended - since:.1f}s"
            f" {o.status} {o.reason}"
            for o in seen[-12:]
        )
        or f"{sorted(missing)}: no call ended since"
    )


async def _upload(service: LiveService) -> httpx.Response:
    """An upload (it needs S3); a job it started is cancelled at once."""
    body = {"path": "/home/alice/matrix.bin", "account": "proj1",
            "transfer_directives": {"file_size": 1, "transfer_method": "s3"}}  # fmt: skip
    async with httpx.AsyncClient(base_url=service.rest_url, timeout=60) as client:
        headers = service.headers("alice")
        response = await client.post(
            f"/filesystem/{SYSTEM}/transfer/upload", json=body, headers=headers
        )
        if response.status_code == 201:
            job = response.json()["transferJob"]["jobId"]
            await client.delete(f"/compute/{SYSTEM}/jobs/{job}", headers=headers)
    return response


@pytest.mark.parametrize("row", list(ROWS))
async def test_only_calls_needing_the_part_fail_then_all_recover(
    matrix: LiveService, row: str
) -> None:
    fault, part, needs = ROWS[row]
    window = HUNG_WINDOW if row.endswith("-hung") else WINDOW
    health = matrix.running.runtime.system(SYSTEM).health
    for _attempt in range(3):
        upload = None
        async with steady_load(matrix) as load:
            await eventually(partial(_all_answer, load, 0.0), 30, "the load answers 200")
            async with off_loop(fault()):
                began = time.monotonic()
                if part == "s3":  # an upload fails fast once the probe found S3 down
                    await eventually(lambda: not health.by_type().get("s3", True), 10, "s3 down")
                    upload = await _upload(matrix)
                await asyncio.sleep(max(0.0, window - (time.monotonic() - began)))
                ended = time.monotonic()
                undone = "stopped" in row and await asyncio.to_thread(running, part)
            restored = time.monotonic()
            recovered = partial(_all_answer, load, restored)
            try:
                await eventually(recovered, RECOVERY, "every call answers again")
            except AssertionError as error:
                raise AssertionError(f"{error}: {_since(load, restored)}") from None
        if undone:
            continue  # another session started the part again during the window: retry
        failing = load.between(began, ended, needs)
        others = load.between(began, ended, KINDS - needs)
        assert others, f"{row}: no unaffected call ran during the fault"
        assert all(o.status == 200 for o in others), [o for o in others if o.status != 200]
        bad = [o for o in failing if o.status != 200 and (o.status != 503 or not o.reason)]
        assert not bad, f"{row}: {bad}"
        if needs:
            assert any(o.status == 503 for o in failing), f"{row}: no call needing {part} failed"
        if upload is not None:
            assert upload.status_code == 503, upload.text[:300]
            assert upload.json()["data"]["reason"], upload.text[:300]
            assert (await _upload(matrix)).status_code == 201  # and back once S3 is
        return
    raise AssertionError(f"{row}: {part} was restarted by someone else in every attempt")
