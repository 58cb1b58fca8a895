"""Snakemake's remote executor on hpcgate: submit over gRPC, learn of ends from a watch.

Each Snakemake job becomes one batch job: a script of ``#SBATCH``
directives (from the job's resources, see :mod:`.directives`) and the
command Snakemake builds to run the job on the node
(``format_job_exec``: ``python -m snakemake --target-jobs ... --mode
remote``), submitted with ``SubmitJob`` as the credentials' user. Its
output goes to ``.snakemake/hpcgate_logs/rule_<rule>/<jobid>-<slurm id>.log``
in the working directory, the log a failed job is reported with.

Job ends come from :class:`.tracker.JobTracker`'s single ``WatchJobs``
stream; ``check_active_jobs`` only reads its latest states, so it runs every
``--hpcgate-status-interval`` seconds (0.25 by default) at no cost to the
scheduler. Cancelling the workflow (Ctrl-C) cancels every active job with
``CancelJob`` (scancel on Slurm).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path, PurePosixPath
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.real import RealExecutor
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from hpcgate.client import Client, HpcgateError, NotFound
from hpcgate.v1 import scheduler_pb2
from snakemake_executor_plugin_hpcgate.connect import open_client
from snakemake_executor_plugin_hpcgate.directives import job_script, placement, sbatch_options
from snakemake_executor_plugin_hpcgate.settings import ExecutorSettings
from snakemake_executor_plugin_hpcgate.staging import Stager
from snakemake_executor_plugin_hpcgate.tracker import JobTracker, is_terminal

S = scheduler_pb2
LOG_DIR = PurePosixPath(".snakemake/hpcgate_logs")


def _describe(status: scheduler_pb2.JobStatus) -> str:
    """``FAILED (exit code 1)``: the scheduler's words for how the job ended."""
    details = []
    if status.HasField("exit_code"):
        details.append(f"exit code {status.exit_code}")
    if status.HasField("interrupt_signal") and status.interrupt_signal:
        details.append(f"signal {status.interrupt_signal}")
    if status.HasField("state_reason") and status.state_reason not in ("", "None"):
        details.append(status.state_reason)
    return status.state + (f" ({', '.join(details)})" if details else "")


class Executor(RemoteExecutor):
    """Runs Snakemake's jobs as hpcgate batch jobs."""

    def __init__(self, workflow: Any, logger: Any) -> None:
        """Connect and open the watch first: the base class starts the status thread."""
        self.settings: ExecutorSettings = workflow.executor_settings
        self.client: Client = open_client(self.settings)
        system = self.settings.system
        assert system is not None  # open_client checked it
        self.system = system
        self.run_id = uuid.uuid4().hex[:8]
        self.tracker = JobTracker(self.client, system)
        self.tracker.start()
        self.stager: Stager | None = None
        if self.settings.staging:
            assert self.settings.remote_workdir is not None
            self.stager = Stager(self.client, system, Path.cwd(), self.settings.remote_workdir)
        super().__init__(workflow, logger)

    def __post_init__(self) -> None:
        """The checks read memory only: they can be frequent."""
        self.next_seconds_between_status_checks = self.settings.status_interval

    # -- what the node runs -------------------------------------------------------

    def get_snakefile(self) -> str:
        """The Snakefile as the job sees it: relative when it was staged."""
        if self.stager is not None:
            return str(self.stager.relative(self.workflow.main_snakefile))
        return str(self.snakefile)

    def get_python_executable(self) -> str:
        """This Python (shared filesystem) or the cluster's (staging)."""
        if self.stager is not None:
            return self.settings.remote_python
        return str(super().get_python_executable())

    def get_job_args(self, job: JobExecutorInterface, **kwargs: Any) -> str:
        """Snakemake's job arguments; without a shared filesystem, no wait for local files."""
        if self.stager is not None:
            return str(RealExecutor.get_job_args(self, job, **kwargs))
        return str(super().get_job_args(job))

    # -- submission -----------------------------------------------------------------

    def run_job(self, job: JobExecutorInterface) -> None:
        """Submit one job (or group) as a batch job; report it submitted or failed."""
        rule = f"group_{job.name}" if job.is_group() else f"rule_{job.name}"
        log_dir = LOG_DIR / rule
        log_pattern = log_dir / f"{job.jobid}-%j.log"
        try:
            resources = dict(job.resources.items())
            where = placement(
                resources, partition=self.settings.partition, account=self.settings.account
            )
            script = job_script(sbatch_options(resources, job.threads), self.format_job_exec(job))
            self.logger.debug(f"hpcgate job script:\n{script}")
            workdir = self._prepare(job, log_dir)
            fields: dict[str, Any] = {
                "name": f"smk-{self.run_id}-{job.name}-{job.jobid}",
                "standard_output": str(log_pattern),
            }
            if where.partition:
                fields["partition"] = where.partition
            if where.account:
                fields["account"] = where.account
            submitted = self.client.submit(script, working_directory=workdir, **fields)
        except (HpcgateError, WorkflowError) as error:
            self.report_job_error(SubmittedJobInfo(job), msg=f"hpcgate: submission failed: {error}")
            return
        log = str(log_pattern).replace("%j", str(submitted.job_id))
        self.tracker.expect(submitted.job_id)
        self.logger.info(f"Job {job.jobid} submitted as hpcgate job {submitted.job_id}; log {log}")
        self.report_job_submission(
            SubmittedJobInfo(job, external_jobid=str(submitted.job_id), aux={"log": log})
        )

    def _prepare(self, job: JobExecutorInterface, log_dir: PurePosixPath) -> str:
        """Make the log directory, stage the inputs if needed; the job's working directory."""
        if self.stager is None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            return os.getcwd()
        self.stager.upload([self.workflow.main_snakefile, *job.input])
        remote_workdir = str(self.stager.remote_root)
        self.stager.ensure_directory(PurePosixPath(remote_workdir) / log_dir)
        return remote_workdir

    # -- tracking -------------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Report ended jobs from the watch's latest states; yield the others.

        A watch the server refused fails the workflow (Snakemake's executor error).
        """
        if self.tracker.error is not None:
            raise WorkflowError(f"hpcgate: cannot watch the jobs: {self.tracker.error}")
        for info in active_jobs:
            assert info.external_jobid is not None
            job_id = int(info.external_jobid)
            status = self.tracker.status(job_id)
            if status is None or not is_terminal(status):
                yield info
                continue
            self.tracker.forget(job_id)
            log = str((info.aux or {}).get("log", ""))
            if status.normalized_state == S.JOB_STATE_COMPLETED:
                try:
                    await asyncio.to_thread(self._bring_back, info, log, succeeded=True)
                except WorkflowError as error:
                    self.report_job_error(info, msg=str(error), aux_logs=[log])
                    continue
                self.report_job_success(info)
            else:
                if self.stager is not None:
                    await asyncio.to_thread(self._bring_back, info, log, succeeded=False)
                self.report_job_error(
                    info,
                    msg=f"hpcgate job {job_id} ended {_describe(status)}. ",
                    aux_logs=[log],
                )

    def _bring_back(self, info: SubmittedJobInfo, log: str, *, succeeded: bool) -> None:
        """Staging: download the job's log files, and its outputs when it succeeded."""
        if self.stager is None:
            return
        self.stager.download([log, *info.job.log], missing_ok=True)
        if succeeded:
            self.stager.download(list(info.job.output), missing_ok=False)

    # -- cancellation and the end ---------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Cancel the jobs through hpcgate (scancel); ones already gone are fine."""
        for info in active_jobs:
            if info.external_jobid is None:
                continue
            request = S.CancelJobRequest(system_name=self.system, job_id=int(info.external_jobid))
            try:
                self.client.scheduler.CancelJob(request)
            except NotFound:
                pass
            except HpcgateError as error:
                self.logger.error(f"hpcgate: cancelling job {info.external_jobid}: {error}")

    def shutdown(self) -> None:
        """Stop the status thread, then the watch, then the channel."""
        super().shutdown()
        self.tracker.stop()
        self.client.close()
