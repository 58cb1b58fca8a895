"""The scheduler's part of a system's configuration (``systems.N.scheduler``).

Apart from :mod:`.config`, which holds the rest of the file, because the
plug-ins' settings (slurm over SSH, slurm-rest's slurmrestd and tokens)
grow with each scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SchedulerConfig(BaseModel):
    """The system's batch scheduler.

    ``type: slurm`` runs Slurm's commands over SSH; ``type: slurm-rest``
    talks to slurmrestd at ``url`` (with JWT auth) and needs exactly one
    source of the per-user tokens: ``jwt_key_file`` (the cluster's
    ``jwt_hs256.key``; the server mints the tokens) or ``token_command`` (an
    argv run on the server host, ``{user}`` standing for the user name,
    printing a token, e.g. ``scontrol token username={user}``).
    """

    # As every part of the configuration: unknown keys are errors.
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The scheduler plug-in (hpcgate.server.scheduler.plugins.PLUGINS): a new
    # scheduler adds its name here and its factory there.
    type: Literal["slurm", "slurm-rest"] = "slurm"
    version: str | None = None
    # How the scheduler is reached: commands over SSH, or slurmrestd's REST API.
    connection_mode: Literal["ssh", "rest"] = "ssh"
    # slurm-rest: slurmrestd's base URL and its OpenAPI version ("auto": the
    # newest one both sides know, found by asking).
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")] | None = None
    api_version: Literal["auto", "v0.0.40", "v0.0.39", "v0.0.38"] = "auto"
    jwt_key_file: Path | None = None
    token_command: list[str] | None = None
    # Seconds a minted token is valid; it is renewed with a quarter left.
    token_lifetime: float = Field(600.0, ge=30)
    # Free-form adapter options (for example Slurm command paths).
    options: dict[str, str] = {}
    # Bounds of the job-watch poll interval, in seconds: a user's poller polls
    # every `poll_min_interval` while jobs change and backs off towards
    # `poll_max_interval` while nothing does.
    poll_min_interval: float = Field(0.5, gt=0)
    poll_max_interval: float = Field(5.0, gt=0)
    # Seconds a scheduler command may run (at most ssh.timeouts.command), and
    # a scheduler command waits at most for its place when the user's
    # max_scheduler_commands are all in flight: a hung daemon answers 503 then.
    command_timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _poll_bounds(self) -> SchedulerConfig:
        if self.poll_min_interval > self.poll_max_interval:
            raise ValueError("poll_min_interval must not exceed poll_max_interval")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: object) -> object:
        # slurm-rest is reached over REST unless the file says otherwise.
        if isinstance(data, dict) and data.get("type") == "slurm-rest":
            return {"connection_mode": "rest", **data}
        return data

    @model_validator(mode="after")
    def _rest_settings(self) -> SchedulerConfig:
        rest_keys = ("url", "jwt_key_file", "token_command")
        if self.type != "slurm-rest":
            given = [k for k in rest_keys if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for type slurm-rest")
            return self
        if self.url is None:
            raise ValueError("type slurm-rest needs url (slurmrestd's, e.g. http://host:6820)")
        if (self.jwt_key_file is None) == (self.token_command is None):
            raise ValueError("type slurm-rest needs exactly one of jwt_key_file, token_command")
        if self.token_command is not None and not self.token_command:
            raise ValueError("token_command must not be empty")
        if self.connection_mode != "rest":
            raise ValueError("type slurm-rest is reached with connection_mode rest")
        return self
