"""Finding the configured system a request names."""

from __future__ import annotations

from hpcgate.server.config import Settings, SystemConfig
from hpcgate.server.errors import ErrorKind, ServiceError


def resolve_system(settings: Settings, name: str) -> SystemConfig:
    """The system called ``name`` (case-insensitive); NOT_FOUND (SYSTEM_NOT_FOUND) if none."""
    system = settings.system(name)
    if system is None:
        # FirecREST's words, which clients match on; which name and which systems go in
        # the details.
        known = ", ".join(s.name for s in settings.systems)
        raise ServiceError(
            ErrorKind.NOT_FOUND,
            "System not found",
            "SYSTEM_NOT_FOUND",
            metadata={"system": name, "systems": known},
        )
    return system
