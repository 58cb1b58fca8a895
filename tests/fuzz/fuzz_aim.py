"""Aim generated cases at the fuzz's scratch directory, so destructive operations are safe.

Schemathesis generates every field from the OpenAPI document; left alone, a
``DELETE .../ops/rm`` would aim at any path of alice's, a job could run any
script and a cancel could hit another test's job. :func:`aim` rewrites, in
place and still within the document's schema, what names a target: the
system, every path (into the scratch directory, under a name derived from
the generated one, so odd characters still reach the server), the script a
job runs, and the job a cancel or attach acts on (the fuzz's own job).
Everything else stays as generated.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from schemathesis import Case

# The job name the fuzz's jobs carry, so teardown cancels exactly those.
JOB_NAME = "hpcgate-fuzz"
# What every fuzzed job runs: it must not touch anything outside the scratch directory.
JOB_SCRIPT = "#!/bin/bash\ntrue\n"
# Names the scratch directory holds (see the fixture) and one it never does.
KNOWN_NAMES = ("file.txt", "dir", "dir/inner.txt", "archive.tar.gz", "link", "missing")
PATH_FIELDS = frozenset({"path", "sourcePath", "targetPath", "linkPath"})
JOB_PATH_FIELDS = frozenset(
    {"workingDirectory", "standardInput", "standardOutput", "standardError"}
)


@dataclass(frozen=True)
class Target:
    """What the fuzz may act on: one system, one scratch directory, one job."""

    system: str
    scratch: str
    job_id: str
    # Files the fuzz's requests made outside the scratch directory (transfer logs).
    leftovers: set[str] = field(default_factory=set)

    def path(self, generated: Any) -> str:
        """A path in the scratch directory chosen by ``generated``.

        Mostly a name the directory holds (so operations succeed, not only
        fail); otherwise the generated text itself as one name, with ``/``
        replaced and a prefix so it can neither climb out (``..``) nor
        name the directory itself.
        """
        text = str(generated)
        choice = zlib.crc32(text.encode("utf-8", "surrogatepass")) % (len(KNOWN_NAMES) + 1)
        if choice < len(KNOWN_NAMES):
            return f"{self.scratch}/{KNOWN_NAMES[choice]}"
        return f"{self.scratch}/f-{text.replace('/', '_')}"


def _named(value: Any) -> bool:
    """Whether ``value`` can name a target: a non-empty string.

    Anything else (a number, null, "") is a value a negative case made
    invalid on purpose; it stays, and the server must refuse it.
    """
    return isinstance(value, str) and value != ""


def _aim_paths(fields: dict[str, Any], names: frozenset[str], target: Target) -> None:
    for name in names & fields.keys():
        if _named(fields[name]):
            fields[name] = target.path(fields[name])


def aim(case: Case[Any], target: Target) -> None:
    """Rewrite ``case`` in place to act only on ``target``."""
    params = case.path_parameters
    if params is not None:
        if _named(params.get("system_name")):
            params["system_name"] = target.system
        # Only the fuzz's own job may be cancelled or attached to; reading any job is harmless.
        job_id = str(params.get("job_id", ""))
        if job_id.isdigit() and int(job_id) > 0 and case.method.upper() in {"DELETE", "PUT"}:
            params["job_id"] = target.job_id
    query = case.query
    if query is not None:
        _aim_paths(query, frozenset({"path"}), target)
        # A watch with no bound runs until its client leaves; the fuzz waits for each answer.
        if case.operation.path.endswith("/jobs/watch"):
            query["maxDuration"] = "1s"
    body = case.body
    if isinstance(body, dict):
        _aim_paths(body, PATH_FIELDS, target)
        if _named(body.get("command")):
            body["command"] = "true"
        job = body.get("job")
        if isinstance(job, dict):
            _aim_paths(job, JOB_PATH_FIELDS, target)
            job["workingDirectory"] = target.scratch
            job["name"] = JOB_NAME
            # Both, if both came: the server must refuse the pair, but must not run either.
            if _named(job.get("scriptPath")):
                job["scriptPath"] = f"{target.scratch}/file.txt"
            if _named(job.get("script")):
                job["script"] = JOB_SCRIPT
