"""The authentication hook around every call: no valid bearer token, no call.

Every RPC except the public ones (liveness, gRPC health, reflection) must
carry ``authorization: Bearer <JWT>`` metadata (the edge forwards the HTTP
header as is). The validated :class:`Identity` is visible to the servicer,
and to everything it awaits, through :func:`current_identity`.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from hpcgate.server.auth.tokens import Identity, TokenValidator, refusal
from hpcgate.server.config import AuthConfig
from hpcgate.server.errors import ServiceError
from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.errors import abort
from hpcgate.server.rpc.method_table import Around, Metadata
from hpcgate.server.rpc.observability import current_request

log = logging.getLogger(__name__)

# Full method names (``/package.Service/Method``) callable without a token,
# and prefixes of whole services that are.
PUBLIC_METHODS = frozenset({"/hpcgate.v1.Status/GetLiveness"})
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Trailing metadata that names the authenticated caller, for the REST edge
# (FirecREST's F7T-AuthUsername header). Replaced by the status details
# when the call fails.
USERNAME_METADATA = "hpcgate-username"

_identity: ContextVar[Identity | None] = ContextVar("hpcgate_identity", default=None)


def current_identity() -> Identity:
    """The caller of the RPC being served; UNAUTHENTICATED if there is none.

    There is none in public methods, and when the server runs without an
    ``auth`` section.
    """
    identity = _identity.get()
    if identity is None:
        raise refusal("TOKEN_MISSING", "this call has no authenticated caller")
    return identity


def is_public(method: str) -> bool:
    """Whether ``method`` (a full method name) needs no token."""
    return method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES)


def bearer_token(metadata: Any) -> str:
    """The token in the ``authorization`` metadata; ServiceError if absent or not Bearer."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise refusal("TOKEN_MISSING", "a bearer token is required (authorization metadata)")
    if len(values) > 1:
        raise refusal("TOKEN_MALFORMED", "more than one authorization metadata entry")
    value = values[0]
    scheme, _, token = (value if isinstance(value, str) else "").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise refusal("TOKEN_MALFORMED", "the authorization metadata is not 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise refusal("TOKEN_MISSING", "the authorization metadata has an empty bearer token")
    return token


class _Authenticate(Around):
    """Validates the caller's token and sets :func:`current_identity` around the call."""

    def __init__(self, validator: TokenValidator, method: str) -> None:
        self._validator = validator
        self._method = method

    async def enter(self, context: Context, metadata: Metadata) -> None:
        validator = self._validator
        try:
            token = bearer_token(metadata)
            identity = validator.cached(token) or await validator.validate(token)
        except ServiceError as error:
            log.info("refused %s: %s (%s)", self._method, error.reason, error.message)
            await abort(context, error)
        request = current_request()
        if request is not None:  # the access log names the user
            request.user = identity.username
        context.set_trailing_metadata(((USERNAME_METADATA, identity.username),))
        # Not reset on exit: grpc.aio runs every call in a task of its own,
        # whose copy of the context ends with the call.
        _identity.set(identity)


class Authentication:
    """Refuses calls without a valid token (UNAUTHENTICATED with the reason).

    A concern of the method table; public methods are left alone.
    """

    def __init__(self, validator: TokenValidator) -> None:
        self._validator = validator

    @classmethod
    def from_config(cls, auth: AuthConfig, service_account: str | None = None) -> Authentication:
        """``service_account``: the health checker's account, which no token may name."""
        return cls(TokenValidator(auth, service_account=service_account))

    def around(self, method: str) -> Around | None:
        return None if is_public(method) else _Authenticate(self._validator, method)
