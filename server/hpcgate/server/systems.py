"""Finding the configured system a request names."""

from __future__ import annotations

import grpc

from hpcgate.server.config import Settings, SystemConfig
from hpcgate.server.errors import ServiceError


def resolve_system(settings: Settings, name: str) -> SystemConfig:
    """The system called ``name`` (case-insensitive); NOT_FOUND (SYSTEM_NOT_FOUND) if none."""
    system = settings.system(name)
    if system is None:
        known = ", ".join(s.name for s in settings.systems)
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"system {name!r} is not configured (systems: {known})",
            "SYSTEM_NOT_FOUND",
            metadata={"system": name},
        )
    return system
