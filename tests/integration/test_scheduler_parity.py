"""The two scheduler plug-ins side by side: the same job and cluster, the same answers.

One server reaches Slurm by its commands over SSH (``live_cli``), the other
through slurmrestd (``live_rest``); both on the same cluster. A finished job
(states, times, exit codes, steps), a cancelled one, and the cluster's nodes,
partitions and reservations compare equal field by field.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf import json_format
from integration.test_scheduler import finished, get_job, stub, submit

from conftest import LiveService
from hpcgate.v1 import scheduler_pb2, status_pb2, status_pb2_grpc


async def _both_see(
    live_cli: LiveService, live_rest: LiveService, user: str, job_id: int, steps: bool = True
) -> None:
    """GetJob of ``job_id`` answers the same through either plug-in (once both are settled)."""
    cli = await finished(live_cli, user, job_id, steps=steps)
    # Accounting may still be catching up with the step records: compare once both agree.
    for _ in range(20):
        rest = await get_job(live_rest, user, job_id)
        cli = await get_job(live_cli, user, job_id)
        if rest == cli:
            break
        await asyncio.sleep(0.5)
    assert json_format.MessageToDict(rest) == json_format.MessageToDict(cli)


async def test_a_failed_job_reads_the_same(live_cli: LiveService, live_rest: LiveService) -> None:
    job_id = await submit(live_rest, "alice", "sleep 1; exit 3", name="parity")
    await _both_see(live_cli, live_rest, "alice", job_id)
    job = await get_job(live_rest, "alice", job_id)
    assert (job.status.state, job.status.exit_code) == ("FAILED", 3)
    assert [t.status.exit_code for t in job.tasks if t.id.endswith(".batch")] == [3]


async def test_a_cancelled_job_reads_the_same(
    live_cli: LiveService, live_rest: LiveService
) -> None:
    job_id = await submit(live_cli, "bob", "sleep 120")
    await stub(live_rest).CancelJob(
        scheduler_pb2.CancelJobRequest(system_name=live_rest.system, job_id=job_id),
        metadata=live_rest.metadata("bob"),
    )
    # Cancelled at once, it may never have started a step.
    await _both_see(live_cli, live_rest, "bob", job_id, steps=False)


async def test_the_cluster_reads_the_same(live_cli: LiveService, live_rest: LiveService) -> None:
    async def view(live: LiveService) -> list[dict[str, Any]]:
        status = status_pb2_grpc.StatusStub(live.channel)
        auth = live.metadata("alice")
        system = live.system
        answers = await asyncio.gather(
            status.ListPartitions(
                status_pb2.ListPartitionsRequest(system_name=system), metadata=auth
            ),
            status.ListPartitions(
                status_pb2.ListPartitionsRequest(system_name=system, show_hidden=True),
                metadata=auth,
            ),
            status.ListReservations(
                status_pb2.ListReservationsRequest(system_name=system), metadata=auth
            ),
            status.ListNodes(status_pb2.ListNodesRequest(system_name=system), metadata=auth),
        )
        return [json_format.MessageToDict(answer) for answer in answers]

    cli, rest = await asyncio.gather(view(live_cli), view(live_rest))
    partitions, all_partitions, reservations, nodes = rest
    assert partitions == cli[0]
    assert all_partitions == cli[1]
    assert len(all_partitions["partitions"]) > len(partitions["partitions"])  # the hidden one
    assert reservations == cli[2]
    # A node's load and free memory move between two reads: the rest is the same.
    moving = {"cpuLoad", "freeMemory", "allocMemory", "allocCpus", "idleCpus", "state"}

    def strip(answer: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in node.items() if k not in moving} for node in answer["nodes"]]

    assert strip(nodes) == strip(cli[3])
