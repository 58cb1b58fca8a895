"""Send the scenario's operations to a FirecREST-compatible service; normalise what comes back.

Used by ``record.py`` (against FirecREST v2) and by the conformance tests
(against hpcgate's edge), so that both sides are asked and stored alike.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from conformance.scenario import OPERATIONS, Operation

# Headers a FirecREST client reads; others (date, server, request ids) stay out of the record.
RECORDED_HEADERS = ("content-type",)
RECORDED_PREFIX = "f7t-"

# Values that differ on every run or machine. They are replaced by a constant of the
# same JSON type, so that the record keeps the types the comparison checks.
VOLATILE_KEYS = frozenset(
    {
        # times
        "lastModified", "atime", "mtime", "ctime", "timestamp", "lastChecked", "latency",
        "time", "submitTime", "startTime", "endTime", "eligibleTime", "suspendTime",
        "elapsed", "limit", "start", "end", "submission", "suspended", "eligible", "lastUpdate",
        # identities and sizes that depend on the machine
        "ino", "dev", "uid", "gid", "id", "nlink", "size", "port", "priority",
        "cpuLoad", "freeMemory", "allocMemory", "allocCpus", "idleCpus", "hostname",
        "checksum",
    }
)  # fmt: skip
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# FirecREST's validation messages name its source files, wherever it was unpacked.
_SOURCE = re.compile(r'[Ff]ile "[^"]*?/src/(?=firecrest/)')
# A presigned S3 URL (SigV4 in the query string).
_PRESIGNED = re.compile(r"^https?://[^/?]+/[^?]+\?.*X-Amz-Signature=")
# Its query parameters whose values are fixed by the request and the configuration (the
# part, the signing scheme, the URL's lifetime); the rest are per call (upload id, date,
# signature).
_PRESIGNED_KEPT = frozenset(
    {"partNumber", "X-Amz-Algorithm", "X-Amz-Expires", "X-Amz-SignedHeaders"}
)
_LOG_NAME = re.compile(r"(\.f7t_file_handling_job_(?:error_)?)[0-9a-f]{32}")
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
)


@dataclass
class Context:
    """The concrete values behind the placeholders of one run."""

    system: str
    user: str
    run: str  # a fresh id per run: names the scratch directory and the job
    job_id: str = ""
    # Transfer jobs' ids and the log files they write outside the scratch directory.
    transfer_jobs: list[str] = field(default_factory=list)
    stray_files: list[str] = field(default_factory=list)
    # Transfer jobs to cancel at the end (see Operation.cancel_job).
    cancel_jobs: list[str] = field(default_factory=list)

    @classmethod
    def fresh(cls, system: str, user: str) -> Context:
        """A context for a new run of ``user`` on ``system``."""
        return cls(system=system, user=user, run=uuid.uuid4().hex[:12])

    @property
    def scratch(self) -> str:
        """The fixture directory of this run."""
        return f"/home/{self.user}/conformance-{self.run}"

    def fill(self, value: Any) -> Any:
        """``value`` with its placeholders replaced by this run's values."""
        if isinstance(value, str):
            return (
                value.replace("{system}", self.system)
                .replace("{scratch}", self.scratch)
                .replace("{run}", self.run)
                .replace("{jobId}", self.job_id)
            )
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value

    def job_placeholder(self, value: Any) -> Any:
        """A job id as its placeholder: this run's job, a transfer job, or any other job."""
        if str(value) == self.job_id:
            return "{jobId}" if isinstance(value, str) else 0
        if str(value) in self.transfer_jobs:
            n = self.transfer_jobs.index(str(value))
            return f"{{transferJob{n}}}" if isinstance(value, str) else 0
        return _constant(value)

    def placeholders(self, text: str) -> str:
        """``text`` with this run's values put back to their placeholders."""
        if _PRESIGNED.match(text):
            return self.presigned(text)
        text = text.replace(self.scratch, "{scratch}").replace(self.run, "{run}")
        # Job ids are small numbers: only where a name is built from one (Slurm's
        # default output file), never in free text such as "line 2".
        if self.job_id:
            text = text.replace(f"slurm-{self.job_id}.", "slurm-{jobId}.")
        text = _LOG_NAME.sub(r"\1{uuid}", text)
        text = _SOURCE.sub('File "{firecrest}/', text)
        text = _UUID.sub("{uuid}", text)
        return _ISO_TIME.sub("{time}", text)

    def presigned(self, url: str) -> str:
        """A presigned S3 URL with what is per machine, user or call replaced.

        The endpoint becomes ``{s3}`` and the bucket (named differently by the two
        services) ``{bucket}``; the object key (``<uuid>/<file name>`` in both) and the
        names of the query parameters, sorted, stay, with the values that
        :data:`_PRESIGNED_KEPT` names: which S3 operation and part a URL is for.
        """
        parts = urllib.parse.urlsplit(url)
        _, _, key = parts.path.lstrip("/").partition("/")
        query = sorted(
            (name, value if name in _PRESIGNED_KEPT else "{volatile}")
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
        path = self.placeholders(urllib.parse.unquote(key))
        return f"{{s3}}/{{bucket}}/{path}?" + "&".join(f"{n}={v}" for n, v in query)


def _constant(value: Any) -> Any:
    """A fixed stand-in of the same JSON type as ``value``."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return 0
    if isinstance(value, float):
        return 0.0
    if isinstance(value, str):
        return "{volatile}"
    return value


def normalise(value: Any, ctx: Context, key: str = "") -> Any:
    """A JSON value with run- and machine-specific parts replaced, its types and keys kept."""
    if isinstance(value, dict):
        return {k: normalise(v, ctx, k) for k, v in value.items()}
    if isinstance(value, list):
        # Once normalised, many elements are alike (the user's earlier jobs): one copy of
        # each keeps the record small and loses nothing the comparison looks at.
        items: list[Any] = []
        for v in value:
            item = normalise(v, ctx, key)
            if item not in items:
                items.append(item)
        return items
    if key == "jobId":
        return ctx.job_placeholder(value)
    if key in VOLATILE_KEYS:
        return _constant(value)
    if isinstance(value, str):
        return ctx.placeholders(value)
    return value


def _headers(response: httpx.Response, ctx: Context) -> dict[str, str]:
    headers = {}
    for name, value in response.headers.items():
        name = name.lower()
        if name in RECORDED_HEADERS or name.startswith(RECORDED_PREFIX):
            headers[name] = ctx.placeholders(value)
    if "f7t-timestamp" in headers:
        headers["f7t-timestamp"] = "{volatile}"
    return dict(sorted(headers.items()))


def _body(response: httpx.Response, ctx: Context) -> Any:
    """The JSON body, or {"text": ...} for a non-JSON body, or None for an empty one."""
    if not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        return normalise(response.json(), ctx)
    return {"text": ctx.placeholders(response.text)}


async def send(
    client: httpx.AsyncClient, op: Operation, ctx: Context, token: str, *, retries: int = 0
) -> dict[str, Any]:
    """Send ``op`` and return its normalised response: status, headers, body.

    A GET that fails with 408 or 5xx is sent again up to ``retries`` times: FirecREST
    gives each Slurm command 5 to 10 s, which a loaded shared machine overruns now and then.
    """
    headers = {"Authorization": f"Bearer {token}"} if op.authorized else {}
    files = None
    if op.upload is not None:
        files = {"file": (op.upload[0], op.upload[1].encode(), "text/plain")}
    for _ in range(retries + 1 if op.method == "GET" else 1):
        try:
            response = await client.request(
                op.method,
                ctx.fill(op.path),
                params=ctx.fill(op.query),
                json=ctx.fill(op.json),
                files=files,
                headers=headers,
            )
        except httpx.TransportError as e:
            # FirecREST drops the connection when its own reply fails validation.
            return {"status": None, "headers": {}, "body": {"transportError": type(e).__name__}}
        if response.status_code != 408 and response.status_code < 500:
            break
    if op.capture_job and response.status_code < 300:
        ctx.job_id = str(response.json()["jobId"])
    transfer = response.json().get("transferJob") if _is_json_object(response) else None
    if isinstance(transfer, dict):
        ctx.transfer_jobs.append(str(transfer["jobId"]))
        if op.cancel_job:
            ctx.cancel_jobs.append(str(transfer["jobId"]))
        logs = transfer.get("logs") or {}
        ctx.stray_files += [p for p in logs.values() if isinstance(p, str) and ctx.scratch not in p]
    return {
        "status": response.status_code,
        "headers": _headers(response, ctx),
        "body": _body(response, ctx),
    }


def _is_json_object(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith(
        "application/json"
    ) and response.content.startswith(b"{")


async def job_state(
    client: httpx.AsyncClient, ctx: Context, job_id: str, token: str
) -> tuple[str, int]:
    """One job's state as the service reports it ("" if it cannot say), and its number of tasks."""
    response = await client.get(
        f"/compute/{ctx.system}/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    if response.status_code != 200:
        return "", 0
    jobs = response.json().get("jobs") or []
    if not jobs:
        return "", 0
    status = jobs[0].get("status") or {}
    # FirecREST says "CANCELLED by 1001": the first word is the state.
    state = str(status.get("state") or "").partition(" ")[0]
    return state, len(jobs[0].get("tasks") or [])


def running_with_tasks(state: str, tasks: int) -> bool:
    """Running and known to Slurm's accounting (its batch step listed), or already over.

    squeue reports a job running before slurmdbd has its steps: a job listed
    in between would show no tasks on one side and some on the other.
    """
    return state in TERMINAL_STATES or (state == "RUNNING" and tasks > 0)


def finished(state: str, tasks: int) -> bool:
    return state in TERMINAL_STATES


async def wait_for(
    client: httpx.AsyncClient,
    ctx: Context,
    job_id: str,
    token: str,
    done: Callable[[str, int], bool],
    *,
    attempts: int = 120,
) -> None:
    """Poll until ``done(state, tasks)`` holds for the job, or ``attempts`` half-seconds passed."""
    for _ in range(attempts):
        if done(*await job_state(client, ctx, job_id, token)):
            return
        await asyncio.sleep(0.5)


async def run(
    client: httpx.AsyncClient,
    ctx: Context,
    token: str,
    operations: list[Operation] = OPERATIONS,
    *,
    retries: int = 0,
) -> dict[str, dict[str, Any]]:
    """Send every operation in order; the normalised responses by operation name.

    Waits, unrecorded, where a step needs the cluster to catch up: for the job
    to run before attaching, and at the end for the transfer jobs to finish so
    that their logs can be removed. The staged uploads' jobs, which would wait
    for an upload that never comes, are cancelled first.
    """
    responses: dict[str, dict[str, Any]] = {}
    for op in operations:
        if op.wait_running and ctx.job_id:
            await wait_for(client, ctx, ctx.job_id, token, running_with_tasks)
        responses[op.name] = await send(client, op, ctx, token, retries=retries)
    for job in ctx.cancel_jobs:
        await client.delete(
            f"/compute/{ctx.system}/jobs/{job}", headers={"Authorization": f"Bearer {token}"}
        )
    for job in ctx.transfer_jobs:
        await wait_for(client, ctx, job, token, finished)
    return responses
