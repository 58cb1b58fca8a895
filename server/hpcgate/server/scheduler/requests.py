"""What a request to the Scheduler service may ask, checked before anything runs.

The servicer hands over the request's fields as plain values (the job's
environment as the JSON value it came as); these checks turn them into the
domain's :class:`JobDescription` and :class:`JobQuery`, or refuse them with
INVALID_ARGUMENT naming the field as REST clients spell it
(``job.workingDirectory``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from hpcgate.server.errors import invalid_argument
from hpcgate.server.scheduler.jobs import (
    DEFAULT_TIME_WINDOW,
    TIME_WINDOWS,
    JobDescription,
    JobQuery,
)

# FirecREST's environment for a job submitted without one.
DEFAULT_ENV = (("F7T_version", "v2.0.0"),)
# An account name as sacct and sbatch take it: no blanks, quotes, control
# characters or anything an option parser would read as more than one word.
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Fields of a job description passed to the scheduler as they are.
OptionalText = Literal[
    "name",
    "account",
    "partition",
    "reservation",
    "constraints",
    "standard_input",
    "standard_output",
    "standard_error",
]
OPTIONAL_TEXT: tuple[OptionalText, ...] = get_args(OptionalText)


def job_field(name: str) -> str:
    """How REST clients name field ``name`` of the job (``job.workingDirectory``)."""
    head, *rest = name.split("_")
    return "job." + head + "".join(word.capitalize() for word in rest)


def text(value: str, field: str) -> str:
    """``value`` if it can be an argument of a command: not empty, no NUL."""
    if not value:
        raise invalid_argument(field, "must not be empty")
    if "\x00" in value:
        raise invalid_argument(field, "must not contain NUL")
    return value


def _absolute(value: str, field: str) -> str:
    """``value`` if it is an absolute path."""
    if not text(value, field).startswith("/"):
        raise invalid_argument(field, f"must be an absolute path, got {value!r}")
    return value


def environment(env: Any) -> tuple[tuple[str, str], ...]:
    """The job's environment from FirecREST's object form or list-of-``NAME=value`` form.

    ``env`` is the request's JSON value; None (absent, or null) gives
    FirecREST's default environment.
    """
    field = job_field("env")
    if env is None:
        return DEFAULT_ENV
    pairs: list[tuple[str, Any]]
    if isinstance(env, dict):
        pairs = sorted(env.items())
    elif isinstance(env, list):
        pairs = []
        for item in env:
            if not isinstance(item, str) or "=" not in item:
                raise invalid_argument(field, 'list items must be "NAME=value" strings')
            name, _, value = item.partition("=")
            pairs.append((name, value))
    else:
        raise invalid_argument(field, 'must be an object or a list of "NAME=value" strings')
    for name, value in pairs:
        if not _ENV_NAME.match(name):
            raise invalid_argument(field, f"{name!r} is not a valid variable name")
        if not isinstance(value, str):
            raise invalid_argument(field, f"the value of {name} must be a string")
        if "\x00" in value:
            raise invalid_argument(field, f"the value of {name} must not contain NUL")
    return tuple(pairs)


def job_description(
    working_directory: str,
    script: str | None,
    script_path: str | None,
    env: Any,
    optional: Mapping[OptionalText, str],
) -> JobDescription:
    """The validated JobDescription of a SubmitJob request.

    Exactly one of ``script`` and ``script_path`` is given; ``optional``
    holds the :data:`OPTIONAL_TEXT` fields the request set.
    """
    if (script is None) == (script_path is None):
        raise invalid_argument(job_field("script"), "give exactly one of script and scriptPath")
    if script is not None:
        script = text(script, job_field("script"))
    if script_path is not None:
        script_path = _absolute(script_path, job_field("script_path"))
    checked = {name: text(value, job_field(name)) for name, value in optional.items()}
    return JobDescription(
        working_directory=_absolute(working_directory, job_field("working_directory")),
        script=script,
        script_path=script_path,
        env=environment(env),
        **checked,
    )


def job_query(
    user: str, allusers: bool, account: str | None, name: str | None, time_window: str
) -> JobQuery:
    """The validated JobQuery of a ListJobs request (an empty window is the default)."""
    window = time_window or DEFAULT_TIME_WINDOW
    if window not in TIME_WINDOWS:
        allowed = ", ".join(TIME_WINDOWS)
        raise invalid_argument("timeWindow", f"must be one of {allowed}, got {window!r}")
    # The name reaches sacct: one of Slurm's account names, or sacct fails
    # ("Unknown error 1267" for control characters) as if slurmdbd were down.
    if account is not None and not ACCOUNT_NAME.match(account):
        raise invalid_argument("account", "must be one account name")
    return JobQuery(user=user, allusers=allusers, account=account, name=name, time_window=window)
