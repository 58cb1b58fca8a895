"""Submitting transfer jobs: names, directives, working directory and logs.

Every transfer runs as a batch job of the caller, as FirecREST's do: in the
caller's directory on the default work filesystem (``/home/alice``), with
the system's ``datatransfer_jobs_directives`` (``{account}`` replaced by the
request's account), and with its logs in hidden files there named after the
job id (``.hpcgate-transfer-1234.log``), where ``ops/view`` can read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hpcgate.server.config import SystemConfig
from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.scheduler.commands import RunWithInput
from hpcgate.server.scheduler.jobs import JobDescription, JobScheduler
from hpcgate.server.scheduler.requests import ACCOUNT_NAME

# The job name of each operation: FirecREST's, so job lists read the same.
JOB_NAMES = {
    "upload": "IngressFileTransfer",
    "download": "OutgressFileTransfer",
    "cp": "CopyFiles",
    "mv": "MoveFiles",
    "rm": "DeleteFiles",
    "compress": "CompressFiles",
    "extract": "ExtractFiles",
}
OPERATIONS = {name: operation for operation, name in JOB_NAMES.items()}
ACCOUNT_PLACEHOLDER = "{account}"


@dataclass(frozen=True)
class TransferJob:
    """A submitted transfer job, as FirecREST's ``transferJob`` describes it."""

    job_id: int
    system: str
    working_directory: str
    output_log: str
    error_log: str


def check_account(account: str | None) -> str | None:
    """``account`` if it is a plausible account name (INVALID_ARGUMENT otherwise)."""
    if account is not None and not ACCOUNT_NAME.match(account):
        raise invalid_argument("account", f"not an account name: {account!r}", "INVALID_ACCOUNT")
    return account


def directives(lines: Sequence[str], account: str | None) -> list[str]:
    """The system's directive lines with ``{account}`` replaced by ``account``.

    A line naming ``{account}`` needs one: without it the request is refused
    (FirecREST: 400 "Account parameter is required on this system").
    """
    account = check_account(account)
    if account is None and any(ACCOUNT_PLACEHOLDER in line for line in lines):
        raise invalid_argument(
            "account",
            "is required on this system: its transfer jobs are charged to an account",
            "ACCOUNT_REQUIRED",
        )
    return [line.replace(ACCOUNT_PLACEHOLDER, account or "") for line in lines]


def work_directory(config: SystemConfig, user: str) -> str:
    """The caller's directory on the default work filesystem: the jobs' home."""
    roots = [fs for fs in config.filesystems if fs.default_work_dir] or config.filesystems
    if not roots:
        raise ServiceError(
            ErrorKind.FAILED_PRECONDITION,
            f"{config.name} has no filesystem to run transfer jobs in",
            "NO_WORK_FILESYSTEM",
        )
    return f"{roots[0].path.rstrip('/')}/{user}"


def log_paths(working_directory: str, job_id: int) -> tuple[str, str]:
    """The output and error logs of transfer job ``job_id``."""
    stem = f"{working_directory.rstrip('/')}/.hpcgate-transfer-{job_id}"
    return f"{stem}.log", f"{stem}.err"


@dataclass(frozen=True)
class Submitter:
    """Submits the caller's transfer jobs on one system."""

    config: SystemConfig
    jobs: JobScheduler
    run: RunWithInput
    user: str
    # Called after each submission (the user's job watchers want to see it start).
    submitted: Callable[[], None] = lambda: None

    def directives(self, account: str | None) -> list[str]:
        """This system's directives for a job charged to ``account``."""
        return directives(self.config.data_operation.datatransfer_jobs_directives, account)

    async def submit(self, operation: str, script: str, account: str | None) -> TransferJob:
        """Submit ``script`` as the ``operation`` job; its logs are named after its id."""
        workdir = work_directory(self.config, self.user)
        # Slurm expands %j to the job id; a literal % is written %%.
        pattern = workdir.replace("%", "%%") + "/.hpcgate-transfer-%j"
        job_id = await self.jobs.submit(
            self.run,
            self.user,
            JobDescription(
                working_directory=workdir,
                script=script,
                name=JOB_NAMES[operation],
                account=account,
                standard_input="/dev/null",
                standard_output=pattern + ".log",
                standard_error=pattern + ".err",
            ),
        )
        self.submitted()
        output_log, error_log = log_paths(workdir, job_id)
        return TransferJob(job_id, self.config.name, workdir, output_log, error_log)
