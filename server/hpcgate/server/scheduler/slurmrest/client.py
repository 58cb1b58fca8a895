"""Requests to slurmrestd as a user, with version detection and failures classified by cause.

Who asks is said per request (``X-SLURM-USER-NAME`` / ``X-SLURM-USER-TOKEN``),
so one connection pool serves every user. The OpenAPI version is found by
trying the newest supported first (``/slurm/vX/ping``); tested here against
Debian 12's slurmrestd (22.05, v0.0.38) only.

Failures, by cause:
- slurmrestd not answering: UNAVAILABLE, reason ``SLURMRESTD_UNAVAILABLE``;
- slurmrestd up but slurmctld not answering it: UNAVAILABLE,
  ``SCHEDULER_UNAVAILABLE`` (as the CLI plug-in says);
- token refused: UNAUTHENTICATED;
- anything else Slurm reports: the entries of its JSON ``errors`` array.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import httpx

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.tally import note_request

# Gives a user's token, at once or awaited (a token command runs a process).
TokenSource = Callable[[str], str | Awaitable[str]]

# Newest first: the first that answers is used.
SUPPORTED_VERSIONS = ("v0.0.40", "v0.0.39", "v0.0.38")
# Slurm's error numbers meaning slurmctld did not answer slurmrestd
# (SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT, SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR ...).
_CTLD_DOWN = {5004, 1007, 1008, 1009, 1010, 1011}


def _daemon_down(message: str) -> ServiceError:
    return ServiceError(
        ErrorKind.UNAVAILABLE,
        f"slurmrestd is not answering: {message}",
        "SLURMRESTD_UNAVAILABLE",
        metadata={"service": "scheduler", "daemon": "slurmrestd"},
    )


def slurm_errors(body: Any) -> list[dict[str, Any]]:
    """The entries of a Slurm JSON answer's ``errors`` array (none if absent)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors or [] if isinstance(e, dict)]


def error_numbers(body: Any) -> set[Any]:
    """Slurm's error numbers in an answer (22.05 names them error_number or error_code)."""
    return {e.get("error_number", e.get("error_code")) for e in slurm_errors(body)}


def error_text(body: Any) -> str:
    """What the errors of a Slurm JSON answer say, joined."""
    return "; ".join(str(e.get("error") or e.get("description") or e) for e in slurm_errors(body))


def classify(status: int, body: Any) -> ServiceError | None:
    """The error an answer of slurmrestd stands for; None if it is a success."""
    numbers = error_numbers(body)
    text = error_text(body)
    if numbers & _CTLD_DOWN:
        return ServiceError(
            ErrorKind.UNAVAILABLE,
            f"slurmctld is not answering slurmrestd: {text}",
            "SCHEDULER_UNAVAILABLE",
            metadata={"service": "scheduler", "daemon": "slurmctld"},
        )
    if status in (401, 403):
        return ServiceError(ErrorKind.UNAUTHENTICATED, text or "token refused", "SLURM_TOKEN")
    if status >= 400 or slurm_errors(body):
        return ServiceError(
            ErrorKind.INTERNAL if status >= 500 else ErrorKind.FAILED_PRECONDITION,
            f"slurmrestd: HTTP {status}: {text or 'no detail'}",
            "SCHEDULER_ERROR",
        )
    return None


class SlurmRestClient:
    """One slurmrestd, reached as any user whose token ``token_for`` gives."""

    def __init__(
        self,
        url: str,
        token_for: TokenSource,
        timeout: float,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout)
        self._token_for = token_for
        self._versions = tuple(versions)
        self.version: str | None = None
        # Requests sent, per user (the watch tests count one per poll per user).
        self.sent: Counter[str] = Counter()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, user: str, body: Any = None) -> httpx.Response:
        token = self._token_for(user)
        if inspect.isawaitable(token):
            token = await token
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}
        self.sent[user] += 1
        note_request()
        try:
            return await self._http.request(method, path, headers=headers, json=body)
        except httpx.TransportError as e:
            raise _daemon_down(f"{type(e).__name__}: {e}") from e

    async def detect_version(self, user: str) -> str:
        """The newest supported OpenAPI version this slurmrestd serves (learnt once)."""
        if self.version is not None:
            return self.version
        for version in self._versions:
            r = await self._send("GET", f"/slurm/{version}/ping", user)
            if r.status_code != 404:
                self.version = version
                return version
        raise ServiceError(
            ErrorKind.FAILED_PRECONDITION,
            f"slurmrestd serves none of {', '.join(self._versions)}",
            "SCHEDULER_VERSION",
        )

    async def request(
        self,
        method: str,
        path: str,
        user: str,
        body: Any = None,
        *,
        api: str = "slurm",
        params: dict[str, str] | None = None,
        absent: Collection[int] = (),
    ) -> Any:
        """``path`` under ``/<api>/<version>/`` as ``user``; the JSON answer, or its error.

        ``api`` is ``slurm`` (slurmctld) or ``slurmdb`` (accounting). An answer
        whose errors are all among ``absent`` (Slurm's numbers for "no such
        thing") is None instead of an error.
        """
        status, data = await self.answer(method, path, user, body, api=api, params=params)
        numbers = error_numbers(data)
        if absent and numbers and numbers <= set(absent):
            return None
        error = classify(status, data)
        if error is not None:
            raise error
        return data

    async def answer(
        self,
        method: str,
        path: str,
        user: str,
        body: Any = None,
        *,
        api: str = "slurm",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The HTTP status and JSON answer (None if not JSON), unjudged: see :meth:`request`."""
        version = await self.detect_version(user)
        r = await self._send(method, f"/{api}/{version}/{path}" + _query(params), user, body)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, None


def _query(params: dict[str, str] | None) -> str:
    """``?k=v&...`` (encoded), or nothing."""
    return "?" + str(httpx.QueryParams(params)) if params else ""
