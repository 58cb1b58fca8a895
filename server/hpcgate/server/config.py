"""Server configuration: one YAML file (:func:`load_config`), validated with pydantic.

:class:`Settings` is the whole file; :func:`parse_config` validates what is
already parsed (the tests build theirs in Python). Unknown keys are errors,
so a typo cannot fall back to a default silently, and every error names the
offending key (``systems.0.ssh.port: ...``): a bad file stops start-up with
a message an operator can act on.

A secret (``credentials.ca_key``, ``credentials.signing_token``, a system's
``s3.access_key`` and ``s3.secret_key``) is a mapping with exactly one of
``value`` (inline), ``file`` (a path) or ``env`` (a variable's name). Only
its form is checked here: the file or variable is read when the part that
needs it is built (:meth:`Secret.reveal`), the CA key and the signing token
as the server starts, the S3 keys whenever it makes an S3 client (the
transfers' clients, the health probes').
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpcgate.server.schedulerconfig import SchedulerConfig
from hpcgate.server.transferconfig import (
    AnyMethodConfig,
    S3MethodConfig,
    TransferMethodConfig,
)


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


class _Model(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(_Model):
    """A secret given inline, read from a file, or read from an environment variable."""

    value: str | None = None
    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [k for k in ("value", "file", "env") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, file, env")
        return self

    def reveal(self) -> str:
        """Return the secret's text (reads the file or the variable now)."""
        if self.value is not None:
            return self.value
        if self.file is not None:
            return self.file.read_text().strip()
        assert self.env is not None
        try:
            return os.environ[self.env]
        except KeyError:
            raise ConfigError(f"environment variable {self.env} is not set") from None


class SSHTimeouts(_Model):
    """Timeouts of SSH operations, in seconds."""

    connect: float = Field(10.0, gt=0)
    login: float = Field(10.0, gt=0)
    command: float = Field(60.0, gt=0)
    idle: float = Field(60.0, gt=0)
    keepalive: float = Field(15.0, gt=0)


class SSHPoolLimits(_Model):
    """Limits of one (system, user) connection pool."""

    # Connections opened for one user at most.
    max_connections: int = Field(4, ge=1, le=64)
    # Channels open at once per connection: exec sessions plus the one
    # SFTP channel; must not exceed the sshd's MaxSessions (10 by default).
    max_channels: int = Field(10, ge=1, le=1024)
    # SFTP requests in flight at once per connection. They all share the
    # connection's single SFTP channel (one session whatever their number),
    # so this bound is about queueing on that channel, not about MaxSessions.
    max_sftp_requests: int = Field(64, ge=1, le=4096)
    # Scheduler commands one user may run at once (default: half of
    # max_connections x max_channels). The user's other channels stay free for
    # filesystem calls, so a hung slurmctld or slurmdbd cannot block them.
    max_scheduler_commands: int | None = Field(None, ge=1)

    @property
    def scheduler_commands(self) -> int:
        """The cap on one user's concurrent scheduler commands."""
        if self.max_scheduler_commands is not None:
            return self.max_scheduler_commands
        return max(1, self.max_connections * self.max_channels // 2)


class SSHConfig(_Model):
    """How to reach a system over SSH."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    # "user@host:port" of a jump host, as in ssh's ProxyJump.
    proxy_jump: str | None = None
    # known_hosts file, or a literal known_hosts line, to verify the host key.
    known_hosts: Path | None = None
    known_hosts_entry: str | None = None
    timeouts: SSHTimeouts = SSHTimeouts()
    pool: SSHPoolLimits = SSHPoolLimits()

    @model_validator(mode="after")
    def _host_key_source(self) -> SSHConfig:
        if self.known_hosts is None and self.known_hosts_entry is None:
            raise ValueError("give known_hosts or known_hosts_entry: host keys are always verified")
        return self


class FileSystemConfig(_Model):
    """A filesystem mounted on the system."""

    path: Annotated[str, Field(pattern=r"^/")]
    data_type: Literal["users", "store", "archive", "apps", "scratch", "project"] = "users"
    default_work_dir: bool = False


# S3's own limits (AWS): a part holds at most 5 GiB, a multipart upload has at
# most 10,000 parts, an object at most 5 TiB; presigned URLs (SigV4) live at
# most 7 days.
S3_MAX_OBJECT_SIZE = 5 * 1024**4
S3_MAX_PARTS = 10_000
S3_MIN_PART_SIZE = 5 * 1024**2
S3_MAX_PRESIGN_EXPIRY = 7 * 24 * 3600
# The largest part size the contract can carry: TransferDirectives.maxPartSize
# is a uint32 (S3 itself would take 5 GiB).
MAX_PART_SIZE = 2**32 - 1
# A bucket prefix: the start of an S3 bucket name, short enough to leave room
# for the user's name.
_BUCKET_PREFIX = r"^([a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?)?$"


class S3Config(_Model):
    """The S3 store that stages large transfers (one bucket per user).

    The server and the transfer jobs on the cluster reach S3 at ``endpoint``;
    clients get presigned URLs for ``public_endpoint`` (the same store as seen
    from outside, e.g. through a proxy), or for ``endpoint`` when it is unset.
    """

    endpoint: str
    # Where clients reach the store; presigned URLs given to clients name it.
    public_endpoint: str | None = None
    region: str = "us-east-1"
    access_key: Secret
    secret_key: Secret
    # User U's bucket is "<bucket_prefix>-<U>"; an empty prefix names it "U"
    # (FirecREST's naming).
    bucket_prefix: Annotated[str, Field(pattern=_BUCKET_PREFIX)] = "hpcgate"
    # Path-style addressing (http://endpoint/bucket/key), as S3-compatible stores need.
    path_style: bool = True
    # Validity of the presigned URLs given to clients, in seconds.
    url_expiry: int = Field(3600, ge=60, le=S3_MAX_PRESIGN_EXPIRY)
    # Validity of the presigned URLs inside transfer jobs, in seconds: they
    # must outlive the job's time in the queue.
    job_url_expiry: int = Field(S3_MAX_PRESIGN_EXPIRY, ge=60, le=S3_MAX_PRESIGN_EXPIRY)
    # Part size of multipart uploads, in bytes (grown for a file that would
    # otherwise need more than 10,000 parts).
    max_part_size: int = Field(1024**3, ge=S3_MIN_PART_SIZE, le=MAX_PART_SIZE)
    # Staged objects expire after this many days (the buckets' lifecycle rule).
    lifecycle_days: int = Field(10, ge=1)
    # Seconds after an upload request during which its job waits for the
    # client to complete the upload; unset means url_expiry (the client's
    # URLs are dead after that anyway).
    ingress_timeout: int | None = Field(None, ge=1)
    # Seconds between two sweeps that abort expired multipart uploads.
    sweep_interval: float = Field(300.0, gt=0)

    @property
    def client_endpoint(self) -> str:
        """The endpoint named in the presigned URLs that clients get."""
        return self.public_endpoint or self.endpoint

    @property
    def ingress_wait(self) -> int:
        """Seconds an ingress job waits for its upload (``ingress_timeout`` or ``url_expiry``)."""
        return self.ingress_timeout if self.ingress_timeout is not None else self.url_expiry


class ProbingConfig(_Model):
    """Health probing of the system's services."""

    interval: float = Field(60.0, gt=0)
    timeout: float = Field(10.0, gt=0)


class DataOperationConfig(_Model):
    """The transfer methods offered, and limits of the small, synchronous file operations."""

    # The methods a client may ask for, the first one the default (and the
    # one /status/systems shows as FirecREST's single `data_transfer`). Unset:
    # ``s3`` when the system has an ``s3`` store, else none.
    data_transfer: list[TransferMethodConfig] | None = None

    # Largest file that the ops download/upload endpoints move, in bytes.
    max_ops_file_size: int = Field(5 * 1024**2, ge=0)
    # Downloads of small files by one user go straight to SFTP in a burst of
    # this many, then at this rate per second; beyond that they are gathered
    # into one remote tar per batch (0 and 0: always batched). See
    # hpcgate.server.filesystem.smallreads.
    direct_read_burst: int = Field(16, ge=0)
    direct_read_rate: float = Field(50.0, ge=0)
    # Upload temporaries (".<name>.hpcgate-<hex>.part") a dead upload left
    # are removed once unchanged this long (seconds), by a sweep as each
    # connected user every part_sweep_interval seconds (0: never). See
    # hpcgate.server.filesystem.sweep.
    part_max_age: float = Field(86400.0, gt=0)
    part_sweep_interval: float = Field(3600.0, ge=0)
    # Extra scheduler directives for the transfer jobs, one line each
    # ("#SBATCH --partition=xfer"); "{account}" is replaced by the request's
    # account (a request without one is refused then).
    datatransfer_jobs_directives: list[str] = []

    @field_validator("datatransfer_jobs_directives")
    @classmethod
    def _directive_lines(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if not line.startswith("#") or "\n" in line or "\r" in line or "\x00" in line:
                raise ValueError(f"{line!r} is not one directive line starting with '#'")
        return lines


class SystemConfig(_Model):
    """One HPC system (cluster) the service gives access to."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    ssh: SSHConfig
    scheduler: SchedulerConfig = SchedulerConfig()
    filesystems: list[FileSystemConfig] = []
    s3: S3Config | None = None
    probing: ProbingConfig = ProbingConfig()
    data_operation: DataOperationConfig = DataOperationConfig()
    # Claims a caller's token must carry to use this system, e.g.
    # {"groups": ["hpc-users"]}: every listed claim must contain one of the values.
    required_claims: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _transfer_methods(self) -> SystemConfig:
        methods = self.data_operation.data_transfer or []
        kinds = [m.service_type for m in methods]
        if len(set(kinds)) != len(kinds):
            raise ValueError("data_operation.data_transfer: each method at most once")
        if "s3" in kinds and self.s3 is None:
            raise ValueError("data_operation.data_transfer: the s3 method needs the system's s3")
        return self

    @property
    def transfer_methods(self) -> tuple[AnyMethodConfig, ...]:
        """The transfer methods offered, the default first."""
        if self.data_operation.data_transfer is not None:
            return tuple(self.data_operation.data_transfer)
        return (S3MethodConfig(service_type="s3"),) if self.s3 is not None else ()


class AuthConfig(_Model):
    """Validation of the callers' OIDC bearer tokens.

    The signing keys come from ``jwks_file``, from ``jwks_url``, or, when
    neither is given, from the ``jwks_uri`` of the issuer's discovery
    document (``{issuer}/.well-known/openid-configuration``).
    """

    jwks_file: Path | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    username_claim: str = "preferred_username"
    algorithms: list[str] = ["RS256", "ES256"]
    # Tokens that expire sooner than this (seconds) are refused.
    min_remaining_lifetime: float = Field(0.0, ge=0)
    # Unknown key ids trigger a JWKS refetch at most this often (seconds).
    jwks_refresh_interval: float = Field(300.0, gt=0)
    # A cached JWKS older than this (seconds) is refetched in the background,
    # so that keys the issuer withdrew stop being trusted.
    jwks_max_age: float = Field(3600.0, gt=0)
    # Tolerated clock skew (seconds) when checking exp, nbf and iat.
    leeway: float = Field(0.0, ge=0, le=300)
    # Tokens valid for longer than this (seconds; exp - iat, or exp - now
    # without iat) are refused: a stolen long-lived token is a standing key.
    max_token_lifetime: float = Field(86400.0, gt=0)
    # Bearer tokens longer than this (bytes) are refused before any parsing.
    max_token_bytes: int = Field(16384, ge=1024, le=131072)
    # Accounts no token may act as (besides credentials.service_account,
    # which is always refused).
    denied_users: list[str] = ["root"]

    @field_validator("algorithms")
    @classmethod
    def _no_symmetric_or_none(cls, algorithms: list[str]) -> list[str]:
        for alg in algorithms:
            if alg.lower() == "none" or alg.startswith("HS"):
                raise ValueError(f"{alg} is not allowed: only asymmetric algorithms")
        return algorithms

    @model_validator(mode="after")
    def _one_key_source(self) -> AuthConfig:
        if self.jwks_file is not None and self.jwks_url is not None:
            raise ValueError("give at most one of jwks_file, jwks_url")
        if self.jwks_file is None and self.jwks_url is None and self.issuer is None:
            raise ValueError("give jwks_file, jwks_url, or issuer (keys from its discovery)")
        return self


class StaticKey(_Model):
    """A fixed private key for a service account."""

    private_key_file: Path
    certificate_file: Path | None = None


class CredentialsConfig(_Model):
    """Where the per-user SSH credentials come from."""

    # The server mints a short-lived user certificate from this CA key.
    ca_key: Secret | None = None
    # ... or asks a signing service for one.
    signing_url: str | None = None
    # Bearer token the server presents to the signing service.
    signing_token: Secret | None = None
    # Certificate validity, in seconds.
    certificate_lifetime: int = Field(300, ge=30, le=86400)
    # Fixed keys for service accounts, by username.
    static_keys: dict[str, StaticKey] = {}
    # The identity the health checker probes with.
    service_account: str | None = None


class TLSConfig(_Model):
    """TLS of the gRPC listener.

    ``certificate`` is the server's PEM chain, ``key`` its PEM private key.
    With ``client_ca`` the TLS is mutual: a client must present a certificate
    that CA signed (the edges', say), or the handshake fails.
    """

    certificate: Path
    key: Secret
    client_ca: Path | None = None


class ServerConfig(_Model):
    """Where the server listens."""

    listen: str = "127.0.0.1:50051"
    # Without it the listener is plaintext: for loopback only, since bearer
    # tokens cross it.
    tls: TLSConfig | None = None
    metrics_listen: str | None = "127.0.0.1:9464"
    # Seconds that in-flight RPCs get to finish on shutdown.
    shutdown_grace: float = Field(10.0, ge=0)
    # Calls received but not yet handed to a handler, beyond which gRPC
    # refuses new ones (CANCELLED). gRPC's own default, 1,000, already
    # cancels some calls of one client that starts 1,500 downloads at once.
    max_pending_rpcs: int = Field(20_000, ge=1)


class CoordinationConfig(_Model):
    """What the server's replicas share, and where (the README's "Replicas").

    ``memory`` (the default): one process, nothing shared. ``redis``: the
    replicas share their job pollers, health probes, per-user SSH limits
    and S3 sweeps through the Redis server at ``url``.
    """

    backend: Literal["memory", "redis"] = "memory"
    # redis://host:port/db (or rediss:// for TLS); required with backend redis.
    url: str | None = None
    # Prefix of every key and channel, so several fleets can share one Redis.
    prefix: str = "hpcgate:"
    # Seconds a lease (a poller, a prober) or an SSH slot outlives its holder's
    # last renewal: how long a dead replica's duties wait for another.
    lease_ttl: float = Field(10.0, ge=1, le=300)

    @model_validator(mode="after")
    def _url_for_redis(self) -> CoordinationConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("url: required with backend redis (redis://host:port)")
        return self


class Settings(_Model):
    """The whole configuration file."""

    server: ServerConfig = ServerConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    auth: AuthConfig | None = None
    credentials: CredentialsConfig = CredentialsConfig()
    systems: list[SystemConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_system_names(self) -> Settings:
        seen: set[str] = set()
        for system in self.systems:
            key = system.name.lower()  # FirecREST treats system names case-insensitively
            if key in seen:
                raise ValueError(f"systems: duplicate system name {system.name!r}")
            seen.add(key)
        return self

    def system(self, name: str) -> SystemConfig | None:
        """Return the system called ``name`` (case-insensitive), if configured."""
        for system in self.systems:
            if system.name.lower() == name.lower():
                return system
        return None


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def parse_config(data: object) -> Settings:
    """Validate already-parsed YAML; raise ConfigError naming each bad key."""
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def load_config(path: Path) -> Settings:
    """Read and validate the YAML file at ``path``."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration {path} is not valid YAML: {error}") from None
    return parse_config(data if data is not None else {})
