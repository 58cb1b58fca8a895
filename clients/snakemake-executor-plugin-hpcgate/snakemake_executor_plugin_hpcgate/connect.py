"""An ``hpcgate.client.Client`` made from the plugin's settings.

Exactly one way to authenticate must be configured: a static token, a token
file, or OAuth2 client credentials (token URL, client id and secret). A
missing or contradictory setting is a ``WorkflowError`` naming the flag, so
Snakemake stops before it submits anything.
"""

from __future__ import annotations

from pathlib import Path

from snakemake_interface_common.exceptions import WorkflowError

from hpcgate.client import Client, ClientCredentials, StaticToken, TokenFile, TokenSource
from snakemake_executor_plugin_hpcgate.settings import ExecutorSettings


def token_source(settings: ExecutorSettings) -> TokenSource:
    """The one credential source the settings name."""
    client = (settings.token_url, settings.client_id, settings.client_secret)
    given = [
        name
        for name, present in (
            ("--hpcgate-token", settings.token is not None),
            ("--hpcgate-token-file", settings.token_file is not None),
            ("--hpcgate-client-id", any(part is not None for part in client)),
        )
        if present
    ]
    if len(given) != 1:
        raise WorkflowError(
            "hpcgate credentials: give exactly one of --hpcgate-token, --hpcgate-token-file"
            " or --hpcgate-token-url/--hpcgate-client-id/--hpcgate-client-secret"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if settings.token is not None:
        return StaticToken(settings.token)
    if settings.token_file is not None:
        if not Path(settings.token_file).is_file():
            raise WorkflowError(f"--hpcgate-token-file: no such file {settings.token_file}")
        return TokenFile(settings.token_file)
    url, client_id, secret = client
    missing = [
        flag
        for flag, value in (
            ("--hpcgate-token-url", url),
            ("--hpcgate-client-id", client_id),
            ("--hpcgate-client-secret", secret),
        )
        if not value
    ]
    if missing:
        raise WorkflowError(f"hpcgate client credentials: missing {', '.join(missing)}")
    assert url is not None and client_id is not None and secret is not None
    return ClientCredentials(url, client_id, secret)


def open_client(settings: ExecutorSettings) -> Client:
    """A blocking client on the configured server and system."""
    if not settings.target:
        raise WorkflowError("--hpcgate-target: the hpcgate server's host:port is required")
    if not settings.system:
        raise WorkflowError("--hpcgate-system: the name of the cluster in hpcgate is required")
    if settings.staging and not settings.remote_workdir:
        raise WorkflowError("--hpcgate-remote-workdir is required with --hpcgate-staging")
    if settings.remote_workdir and not settings.remote_workdir.startswith("/"):
        raise WorkflowError("--hpcgate-remote-workdir: must be an absolute path")
    tls = settings.tls or settings.tls_ca is not None
    roots = Path(settings.tls_ca) if settings.tls_ca else None
    return Client(
        settings.target,
        token_source(settings),
        system=settings.system,
        tls=tls,
        root_certificates=roots,
        account=settings.account,
    )
