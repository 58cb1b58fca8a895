"""Snakemake executor plugin for hpcgate (``snakemake --executor hpcgate``).

Snakemake reads three names from this module: ``ExecutorSettings`` (the
``--hpcgate-*`` flags and profile keys), ``common_settings`` (how Snakemake
treats the executor) and ``Executor``.
"""

from snakemake_interface_executor_plugins.settings import CommonSettings

from snakemake_executor_plugin_hpcgate.executor import Executor
from snakemake_executor_plugin_hpcgate.settings import ExecutorSettings

# Remote execution on a cluster that shares the workflow's filesystem by
# default (staging is the plugin's own opt-in); Snakemake passes its default
# resources and storage settings, and its --envvars as exports in the job's
# command, to the jobs it spawns.
common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
