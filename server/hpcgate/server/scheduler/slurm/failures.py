"""Why a Slurm command failed: which daemon did not answer.

hpcgate builds every Slurm query itself (squeue, sacct, sinfo, scontrol,
sacctmgr), so a query that fails is not the caller's fault: the daemon it
needs could not answer. That is UNAVAILABLE (503), told by the cause, not by
the wording of Slurm's message:

* the command exited non-zero (Slurm's clients exit 1 for any failure to
  reach or use their daemon: slurmctld down, slurmdbd down, MariaDB down);
* or it exited 0 but its JSON lists errors (22.05's ``squeue --json`` and
  ``sinfo --json`` do that when slurmctld does not answer, with no jobs);
* a command that outlives ``scheduler.command_timeout`` is stopped by the
  pool (UNAVAILABLE ``SCHEDULER_TIMEOUT``).

The daemon comes from the command (:data:`DAEMONS`): slurmctld for the
controller's commands, slurmdbd (and its database) for accounting. Slurm's
text is kept in the message for the operator, without the addresses it
names (``host:localhost:6819``). Submissions and attachments (sbatch, srun)
are not queries: they also fail for the request's sake, and their adapters
tell those cases apart from their messages first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from hpcgate.server.errors import ErrorKind, ServiceError, redact_addresses
from hpcgate.server.scheduler.commands import Output

# The daemon each Slurm command needs to answer.
DAEMONS = {
    "squeue": "slurmctld",
    "scontrol": "slurmctld",
    "sinfo": "slurmctld",
    "scancel": "slurmctld",
    "sbatch": "slurmctld",
    "srun": "slurmctld",
    "sacct": "slurmdbd",
    "sacctmgr": "slurmdbd",
}
_REASONS = {"slurmctld": "SCHEDULER_UNAVAILABLE", "slurmdbd": "ACCOUNTING_UNAVAILABLE"}
_NAMES = {
    "slurmctld": "the Slurm controller (slurmctld)",
    "slurmdbd": "Slurm's accounting (slurmdbd or its database)",
}
# Exit statuses of a shell that could not start the command at all.
_NOT_RUNNABLE = {126: "is not executable", 127: "is not installed"}
# ESLURM_REST_EMPTY_RESULT: a JSON query that matched nothing is no failure.
_EMPTY_RESULT = 9003
# Slurm's JSON documents open with "meta" and "errors"; a document without
# errors says `"errors": [ ]` there, so only one that lists some is parsed twice.
_ERRORS_HEAD = 4096
_ERRORS = re.compile(r'(?<!\\)"errors":\s*\[\s*(\S)')
_PREFIX = re.compile(r"^\w+: (?:error: )?")
# Slurm's words for "the controller cannot be reached", for the commands whose
# failures can also be the request's (sbatch, srun): only there is text matched.
UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused")


def command_name(argv: Sequence[str]) -> str:
    """The Slurm command of ``argv`` (past an ``env NAME=value`` prefix)."""
    words = list(argv)
    if words and words[0] == "env":
        words = [w for w in words[1:] if "=" not in w]
    return words[0] if words else ""


def detail(output: Output) -> str:
    """What the command said (stderr, else stdout), prefixes and addresses removed."""
    text = output.stderr.decode(errors="replace").strip()
    text = text or output.stdout.decode(errors="replace").strip()
    lines = [_PREFIX.sub("", line).strip() for line in text.splitlines()]
    kept = list(dict.fromkeys(line for line in lines if line and not line.startswith("**")))
    return redact_addresses("; ".join(kept)) or f"exit status {output.exit_status}"


def unavailable(command: str, message: str) -> ServiceError:
    """UNAVAILABLE: the daemon ``command`` needs did not answer."""
    daemon = DAEMONS.get(command, "slurmctld")
    return ServiceError(
        ErrorKind.UNAVAILABLE,
        f"{_NAMES[daemon]} is not answering: {command}: {message}",
        _REASONS[daemon],
        metadata={"service": "scheduler", "daemon": daemon},
    )


def failed(argv: Sequence[str], output: Output) -> ServiceError:
    """The error of a Slurm query that exited non-zero (or any other command)."""
    command = command_name(argv)
    if output.exit_status in _NOT_RUNNABLE:
        return ServiceError(
            ErrorKind.FAILED_PRECONDITION,
            f"{command} {_NOT_RUNNABLE[output.exit_status]} on the system",
            "SCHEDULER_COMMAND_MISSING",
        )
    if command in DAEMONS:
        return unavailable(command, detail(output))
    return ServiceError(
        ErrorKind.INTERNAL, f"{command}: {detail(output)}", "SCHEDULER_COMMAND_FAILED"
    )


def json_errors(text: str) -> list[dict[str, Any]]:
    """The failures a Slurm JSON document lists (empty results are none)."""
    found = _ERRORS.search(text, 0, _ERRORS_HEAD)
    if found is None or found.group(1) == "]":
        return []
    try:
        errors = json.loads(text).get("errors") or []
    except (ValueError, AttributeError):
        return []  # not Slurm's JSON: the parser that reads it says so
    return [
        error
        for error in errors
        if isinstance(error, dict)
        and error.get("error_number", error.get("errno")) != _EMPTY_RESULT
    ]


def checked(argv: Sequence[str], output: Output) -> str:
    """stdout of a query that must succeed; UNAVAILABLE when its daemon did not answer."""
    if output.exit_status != 0:
        raise failed(argv, output)
    text = output.stdout.decode(errors="replace")
    if "--json" in argv:
        errors = json_errors(text)
        if errors:
            said = "; ".join(
                str(error.get("description") or error.get("error") or error) for error in errors
            )
            raise unavailable(command_name(argv), redact_addresses(said))
    return text
