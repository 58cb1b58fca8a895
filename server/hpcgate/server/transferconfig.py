"""The transfer methods' part of the configuration (``data_operation.data_transfer``).

Each system lists the methods it offers, as FirecREST's ``data_transfer``
keys (``service_type`` and the method's own); :mod:`.config` holds the rest
of the file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Method(BaseModel):
    # As every part of the configuration: unknown keys are errors.
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3MethodConfig(_Method):
    """The ``s3`` transfer method: staged through the system's ``s3`` store (configured there)."""

    service_type: Literal["s3"]


# The firecrest-streamer release the streamer jobs run (its server, with
# hpcgate's fixes: transfer/scripts/streamer_job.py); installed per job
# unless the system names a preinstalled interpreter (``python``).
STREAMER_PACKAGE = "firecrest-streamer==0.0.21"


class StreamerMethodConfig(_Method):
    """The ``streamer`` transfer method: a job runs a websocket server the client streams with.

    The keys are FirecREST's (``StreamerDataTransfer``), plus where the job
    finds its Python and how long the server waits for it to listen.
    """

    service_type: Literal["streamer"]
    # An interpreter on the cluster that has firecrest-streamer installed
    # (readable by every user). Unset: each job makes a venv in its working
    # directory and pip-installs ``package`` into it, as FirecREST's job does.
    python: str | None = None
    package: str = STREAMER_PACKAGE
    # A PyPI index for that install (unset: pip's default).
    pypi_index_url: str | None = None
    # The interface the job's server listens on, and the addresses and ports
    # the client tries (the server takes the first free port of the range).
    host: str = "localhost"
    public_ips: Annotated[list[str], Field(min_length=1)] = ["localhost"]
    port_range: tuple[int, int] = (5665, 5675)
    # Seconds the job's server waits for the client before it gives up.
    wait_timeout: int = Field(24 * 3600, ge=1)
    # Largest upload the job's server accepts, in bytes.
    inbound_transfer_limit: int = Field(5 * 1024**3, ge=0)
    # Seconds the server waits, before it answers an upload or download, for
    # the job to listen (pyfirecrest connects as soon as the job runs, once);
    # a job still queued then is answered without its port.
    listen_timeout: float = Field(30.0, ge=0)

    @field_validator("port_range")
    @classmethod
    def _ports(cls, ports: tuple[int, int]) -> tuple[int, int]:
        first, last = ports
        if not 1 <= first <= last <= 65535:
            raise ValueError("give [first, last] ports, 1 <= first <= last <= 65535")
        return ports


# The magic-wormhole release the wormhole jobs run, installed per job unless
# the system names a preinstalled ``wormhole`` command (``command``).
WORMHOLE_PACKAGE = "magic-wormhole==0.24.0"


class WormholeMethodConfig(_Method):
    """The ``wormhole`` transfer method: a job runs ``wormhole send`` or ``receive``.

    The client runs the other end (pyfirecrest runs the ``wormhole`` command
    on its machine); both meet at the mailbox server and, when they cannot
    reach each other directly, move the bytes through the transit relay. The
    keys are FirecREST's (``WormholeDataTransfer``: ``pypi_index_url``), plus
    which servers the jobs use, where they find ``wormhole`` and how long a
    transfer may take. The clients must use the same mailbox server.
    """

    service_type: Literal["wormhole"]
    # A ``wormhole`` command on the cluster (executable by every user). Unset:
    # each job makes a venv in its working directory and pip-installs
    # ``package`` into it, as FirecREST's job does.
    command: str | None = None
    package: str = WORMHOLE_PACKAGE
    # A PyPI index for that install (unset: pip's default).
    pypi_index_url: str | None = None
    # The mailbox (rendezvous) server, ``ws://`` or ``wss://``, and the transit
    # relay, ``tcp:HOST:PORT``. Unset: magic-wormhole's public ones.
    relay_url: str | None = Field(None, pattern=r"^wss?://[^\s]+$")
    transit_helper: str | None = Field(None, pattern=r"^tcp:[^\s:]+:[0-9]{1,5}$")
    # Seconds a job's wormhole may take in all: waiting for the client, then
    # moving the bytes. Past it the job gives up (an upload leaves nothing).
    transfer_timeout: int = Field(24 * 3600, ge=1)


TransferMethodConfig = Annotated[
    S3MethodConfig | StreamerMethodConfig | WormholeMethodConfig,
    Field(discriminator="service_type"),
]
# One configured method, whichever it is.
AnyMethodConfig = S3MethodConfig | StreamerMethodConfig | WormholeMethodConfig
