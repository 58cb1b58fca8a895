"""A job description as slurmrestd's ``job/submit`` body, the way sbatch would submit it.

sbatch reads the ``#SBATCH`` directives of a script itself; slurmrestd
(22.05, v0.0.38) does not: a directive it is not told of as a job property
is silently lost. So the directives are read here into properties
(:data:`_DIRECTIVES`), and the request's own fields override them, as the
command-line options the CLI plug-in passes override a script's directives.
A script with a directive not in the table (or one whose value is not
understood) cannot be submitted faithfully this way: :func:`rest_submission`
says so with None, and the plug-in submits it with sbatch over SSH instead.

The environment: the CLI plug-in submits with ``--export=ALL`` from the
user's login, so a job sees the user's login environment plus the request's
variables. ``get_user_environment`` asks slurmd for the same login
environment, with the request's variables on top of it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from hpcgate.server.scheduler.jobs import JobDescription

# sbatch's words for a script without an interpreter line (clients match on them).
NOT_A_SCRIPT = (
    "This does not look like a batch script.  The first line must start with #! "
    "followed by the path to an interpreter."
)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def minutes(text: str) -> int | None:
    """sbatch's ``--time`` value in minutes, seconds rounded up (None if not understood)."""
    match = _TIME.match(text.strip())
    if match is None:
        return None
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        hours, mins, secs = [*parts, 0, 0][:3]
        return int(days) * 1440 + hours * 60 + mins + (1 if secs else 0)
    if len(parts) == 1:  # minutes
        return parts[0]
    if len(parts) == 2:  # minutes:seconds
        return parts[0] + (1 if parts[1] else 0)
    hours, mins, secs = parts  # hours:minutes:seconds
    return hours * 60 + mins + (1 if secs else 0)


def _positive(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _text(text: str) -> str | None:
    return text or None


# sbatch option (long form) -> (job property, value converter).
_DIRECTIVES: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "job-name": ("name", _text),
    "partition": ("partition", _text),
    "account": ("account", _text),
    "time": ("time_limit", minutes),
    "output": ("standard_output", _text),
    "error": ("standard_error", _text),
    "input": ("standard_input", _text),
    "chdir": ("current_working_directory", _text),
    "reservation": ("reservation", _text),
    "constraint": ("constraints", _text),
    "qos": ("qos", _text),
    "ntasks": ("tasks", _positive),
    "cpus-per-task": ("cpus_per_task", _positive),
}
_SHORT = {
    "J": "job-name",
    "p": "partition",
    "A": "account",
    "t": "time",
    "o": "output",
    "e": "error",
    "i": "input",
    "D": "chdir",
    "C": "constraint",
    "q": "qos",
    "n": "ntasks",
    "c": "cpus-per-task",
}


def _options(words: list[str]) -> list[tuple[str, str]] | None:
    """(long option, value) pairs of one directive line's words; None if any is unknown."""
    found = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--"):
            name, sep, value = word[2:].partition("=")
            if not sep:
                index += 1
                if index == len(words):
                    return None
                value = words[index]
        elif word.startswith("-") and len(word) >= 2 and word[1] in _SHORT:
            name, value = _SHORT[word[1]], word[2:]
            if not value:
                index += 1
                if index == len(words):
                    return None
                value = words[index]
        else:
            return None
        if name not in _DIRECTIVES:
            return None
        found.append((name, value))
        index += 1
    return found


def directives(script: str) -> dict[str, Any] | None:
    """The job properties of ``script``'s ``#SBATCH`` lines; None if one is not understood.

    As sbatch does, directives are read up to the first line that is
    neither blank nor a comment.
    """
    properties: dict[str, Any] = {}
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if not stripped.startswith("#SBATCH"):
            continue
        try:
            words = shlex.split(stripped[len("#SBATCH") :], comments=True)
        except ValueError:
            return None
        options = _options(words)
        if options is None:
            return None
        for name, value in options:
            prop, convert = _DIRECTIVES[name]
            converted = convert(value)
            if converted is None:
                return None
            properties[prop] = converted
    return properties


def environment(job: JobDescription, api_version: str) -> dict[str, str] | list[str]:
    """The request's variables: a mapping up to v0.0.38, ``NAME=value`` strings after."""
    if api_version == "v0.0.38":
        return dict(job.env)
    return [f"{name}={value}" for name, value in job.env]


def rest_submission(job: JobDescription, api_version: str) -> dict[str, Any] | None:
    """The ``job/submit`` body for ``job`` (an inline script); None: submit it with sbatch.

    Only the script's interpreter line is checked here (as sbatch does);
    everything else is slurmctld's to judge.
    """
    assert job.script is not None
    found = directives(job.script)
    if found is None:
        return None
    fields = {
        "name": job.name,
        "account": job.account,
        "partition": job.partition,
        "reservation": job.reservation,
        "constraints": job.constraints,
        "standard_input": job.standard_input,
        "standard_output": job.standard_output,
        "standard_error": job.standard_error,
    }
    properties = {
        **found,
        **{key: value for key, value in fields.items() if value is not None},
        "current_working_directory": job.working_directory,
        "environment": environment(job, api_version),
        "get_user_environment": "1",
    }
    return {"script": job.script, "job": properties}
