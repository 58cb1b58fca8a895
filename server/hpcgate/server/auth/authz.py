"""Authorization per system from the token's claims.

A system may list claims its users must carry (``required_claims``, e.g.
``{"groups": ["hpc-users"]}``): every listed claim must hold one of the
listed values. A claim is a string (compared whole) or a list of strings
(any element); a dotted name such as ``realm_access.roles`` reaches into
nested objects when the token has no claim of that literal name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpcgate.server.auth.tokens import Identity
from hpcgate.server.config import SystemConfig
from hpcgate.server.errors import ErrorKind, ServiceError

_MISSING = object()


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``, following dots into nested objects; a sentinel if absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _values(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list | tuple):
        return {item for item in value if isinstance(item, str)}
    return set()


def authorize(identity: Identity, system: SystemConfig) -> None:
    """Return if ``identity`` may use ``system``; else PERMISSION_DENIED (SYSTEM_ACCESS_DENIED)."""
    for name, accepted in system.required_claims.items():
        value = claim_value(identity.claims, name)
        if value is _MISSING:
            problem = f"the token has no {name!r} claim"
        elif _values(value).isdisjoint(accepted):
            problem = f"the token's {name!r} claim holds none of {', '.join(map(repr, accepted))}"
        else:
            continue
        raise ServiceError(
            ErrorKind.PERMISSION_DENIED,
            f"user {identity.username!r} may not use system {system.name!r}: {problem}",
            "SYSTEM_ACCESS_DENIED",
            metadata={"system": system.name, "claim": name},
        )
