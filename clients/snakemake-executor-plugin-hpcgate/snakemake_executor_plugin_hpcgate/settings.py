"""The plugin's settings: ``--hpcgate-<field>`` flags and profile YAML keys.

Snakemake turns every field of :class:`ExecutorSettings` into a command-line
flag (``target`` becomes ``--hpcgate-target``) and reads the same names,
without the dashes' prefix, from a profile (``hpcgate-target: host:port``).
Fields marked ``env_var`` are also read from ``SNAKEMAKE_HPCGATE_<FIELD>``,
which is where secrets belong. (No ``from __future__ import annotations``
here: Snakemake reads the fields' types at run time.)
"""

from dataclasses import dataclass, field

from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase


def _meta(help_text: str, *, env_var: bool = False, kind: type = str) -> dict[str, object]:
    """A field's metadata: its help, whether an env var sets it, its argparse type."""
    meta: dict[str, object] = {"help": help_text, "env_var": env_var, "required": False}
    if kind is not bool:
        meta["type"] = kind
    return meta


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """Where the hpcgate server is, who the jobs run as, and how files travel."""

    target: str | None = field(
        default=None,
        metadata=_meta("host:port of the hpcgate gRPC server (required)", env_var=True),
    )
    system: str | None = field(
        default=None, metadata=_meta("Name of the cluster (system) in hpcgate (required)")
    )
    token: str | None = field(
        default=None,
        metadata=_meta(
            "A bearer token (static; prefer token-file or client credentials)", env_var=True
        ),
    )
    token_file: str | None = field(
        default=None,
        metadata=_meta("File holding a bearer token, re-read when it changes", env_var=True),
    )
    token_url: str | None = field(
        default=None, metadata=_meta("OAuth2 token endpoint for client credentials", env_var=True)
    )
    client_id: str | None = field(default=None, metadata=_meta("OAuth2 client id", env_var=True))
    client_secret: str | None = field(
        default=None, metadata=_meta("OAuth2 client secret", env_var=True)
    )
    tls: bool = field(default=False, metadata=_meta("Connect with TLS", kind=bool))
    tls_ca: str | None = field(
        default=None, metadata=_meta("PEM file of the CA certificates to trust (implies TLS)")
    )
    account: str | None = field(
        default=None, metadata=_meta("Default Slurm account (resource slurm_account overrides)")
    )
    partition: str | None = field(
        default=None,
        metadata=_meta("Default Slurm partition (resource slurm_partition overrides)"),
    )
    status_interval: float = field(
        default=0.25,
        metadata=_meta(
            "Seconds between Snakemake's status checks; they read the watch's latest"
            " state in memory and cost no scheduler command",
            kind=float,
        ),
    )
    staging: bool = field(
        default=False,
        metadata=_meta(
            "No shared filesystem: upload the Snakefile and each job's inputs into"
            " remote-workdir before it runs, download its outputs and logs after",
            kind=bool,
        ),
    )
    remote_workdir: str | None = field(
        default=None,
        metadata=_meta("Working directory on the cluster in staging mode (required there)"),
    )
    remote_python: str = field(
        default="python3",
        metadata=_meta("Python on the cluster that has Snakemake, in staging mode"),
    )
