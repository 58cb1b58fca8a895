"""Schemathesis fuzzes every operation of the edge's OpenAPI document (issue 14).

The real stack (server, edge, sshd, Slurm, S3 on loopback) answers cases
generated from ``/openapi.json``, authenticated as alice and aimed at a
scratch directory (see ``fuzz_aim``). Every check of schemathesis's default set
must hold: no 5xx, every status code and body as documented. The budget is
small and the generation derandomized, so CI runs the same cases each time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cluster_fixture import Cluster
from fuzz_aim import JOB_NAME, JOB_SCRIPT, Target, aim
from fuzz_checks import valid_requests_accepted
from fuzz_stack import ThreadedStack, threaded_stack
from hpcgate.edge.bindings import bindings_of, hpcgate_services
from hpcgate.edge.openapi import openapi_document
from hpcgate.server.transfer.jobs import JOB_NAMES
from localsite import SYSTEM

# Per operation; ~40 operations x 5 cases fit in about three minutes on 2 cores.
MAX_EXAMPLES = 5
# No single answer may take longer than this (a hang is a failure too).
CALL_TIMEOUT = 60


@pytest.fixture(scope="module")
def stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    with threaded_stack(cluster, tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def _seed(stack: ThreadedStack, scratch: str) -> None:
    """Fill the scratch directory with the names ``aim`` picks from."""
    script = (
        'set -e; cd -- "$1"; printf \'%s\' "$2" > file.txt; mkdir dir;'
        " echo inner > dir/inner.txt; tar -czf archive.tar.gz dir; ln -s file.txt link"
    )
    stack.run(stack.shell("alice", "mkdir", "--", scratch))
    stack.run(stack.shell("alice", "bash", "-c", script, "seed", scratch, JOB_SCRIPT))


def _submit_sleeper(stack: ThreadedStack, scratch: str) -> str:
    """A job of the fuzz's own, for the cancel and attach operations to act on."""
    job = {"name": JOB_NAME, "workingDirectory": scratch, "script": "#!/bin/bash\nsleep 300\n"}
    response = httpx.post(
        f"{stack.rest_url}/compute/{SYSTEM}/jobs",
        json={"job": job},
        headers=stack.headers("alice"),
        timeout=CALL_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["jobId"])


def _cancel_transfer_jobs_since(stack: ThreadedStack, first: int) -> None:
    """Cancel alice's transfer jobs numbered from ``first`` on: the fuzz's own.

    A fuzzed staged upload's job waits up to an hour for an upload that never
    comes, holding a CPU of the one node: left queued, they would starve
    every later test's jobs.
    """
    listing = stack.run(
        stack.shell("alice", "squeue", "--noheader", "--user=alice", "--format=%i %j")
    )
    jobs = [line.split(" ", 1) for line in listing.splitlines() if " " in line]
    mine = [i for i, name in jobs if i.isdigit() and int(i) >= first and name in JOB_NAMES.values()]
    if mine:
        stack.run(stack.shell("alice", "scancel", "--", *mine))


@pytest.fixture(scope="module")
def target(stack: ThreadedStack) -> Iterator[Target]:
    """A fresh scratch directory of alice's and a job; both gone afterwards."""
    scratch = f"/home/alice/fuzz-{uuid.uuid4().hex[:12]}"
    made: Target | None = None
    try:
        _seed(stack, scratch)
        made = Target(system=SYSTEM, scratch=scratch, job_id=_submit_sleeper(stack, scratch))
        yield made
    finally:
        # Only the fuzz's jobs carry its name; other tests' jobs of alice's stay.
        stack.run(stack.shell("alice", "scancel", "--name", JOB_NAME, "--user", "alice"))
        if made is not None:
            _cancel_transfer_jobs_since(stack, int(made.job_id))
        leftovers = sorted(made.leftovers) if made is not None else []
        # The fuzz may chmod what it made (mode 000, 500), and a cancelled
        # transfer job may still be writing: make it removable, try again.
        wipe = (
            'for _ in 1 2 3 4 5; do chmod -R u+rwX -- "$1" 2>/dev/null;'
            ' rm -rf -- "$@" && exit 0; sleep 1; done; exit 1'
        )
        stack.run(stack.shell("alice", "sh", "-c", wipe, "sh", scratch, *leftovers))


# The document the edge serves, built as the edge builds it: schemathesis's
# fixture-loaded schemas (``schemathesis.pytest.from_fixture``) rename pytest
# nodes through an attribute pytest 9.2 no longer has, and a schema known at
# import time also gives each operation a test item of its own.
DOCUMENT = openapi_document(bindings_of(hpcgate_services()))
schema = schemathesis.openapi.from_dict(DOCUMENT)
# Unknown query parameters are ignored, as FirecREST (FastAPI) ignores them; an
# OpenAPI document cannot say either way, so the fuzz does not send them.
schema.config.generation.update(allow_extra_parameters=False)


def test_the_fuzz_reads_the_document_the_edge_serves(stack: ThreadedStack) -> None:
    response = httpx.get(f"{stack.rest_url}/openapi.json", timeout=CALL_TIMEOUT)
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # no examples replayed from earlier runs: CI runs exactly these
    # Aimed cases repeat values by design; the budget, not Hypothesis, bounds the run.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_edge_keeps_its_document(case: Case[Any], stack: ThreadedStack, target: Target) -> None:
    aim(case, target)
    # Reading `meta` revalidates the case after aim's edits: a negative case whose
    # invalid value aim replaced is judged as the valid request it has become.
    assert case.meta is not None
    response = case.call_and_validate(
        base_url=stack.rest_url,
        headers=stack.headers("alice"),
        timeout=CALL_TIMEOUT,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[valid_requests_accepted],
    )
    _keep_transfer_logs(response, target)


def _keep_transfer_logs(response: Any, target: Target) -> None:
    """Note the logs a transfer job writes (beside alice's home, not in the scratch directory)."""
    try:
        logs = response.json()["transferJob"]["logs"]
    except (ValueError, KeyError, TypeError):
        return
    # Only files named as transfer logs are removed, whatever else an answer names.
    for path in map(str, logs.values()):
        if path.rsplit("/", 1)[-1].startswith(".hpcgate-transfer-"):
            target.leftovers.add(path)
