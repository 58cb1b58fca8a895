"""The token signing keys: a JWKS read from a file, a URL or the issuer's discovery, cached.

Validation must not wait on I/O, so the key set is kept in memory and parsed
keys are cached. It is fetched again only when needed:

* a token names a key id the cache does not know (the issuer rotated its
  keys): a refetch, at most once per ``refresh_interval``, so that a flood of
  tokens with made-up key ids cannot hammer the issuer; concurrent misses
  share that one fetch;
* the cached set is older than ``max_age``: a refetch in the background
  (requests go on with the cached keys), so withdrawn keys stop being trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt

from hpcgate.server.config import AuthConfig

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[bytes]]

# A JWKS is a few kilobytes; refuse anything absurdly large.
MAX_JWKS_BYTES = 1024 * 1024
FETCH_TIMEOUT = 10.0
# While no key set was ever loaded, a failed fetch is retried this soon at the
# latest (instead of a long refresh interval) so that an issuer that was down
# at start-up does not lock everyone out for minutes.
RETRY_EMPTY_AFTER = 5.0


class JwksError(Exception):
    """The key set cannot be fetched or is not a usable JWKS."""


class KeySet:
    """One fetched JWKS: signing keys by key id, parsed lazily per algorithm."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise JwksError("the JWKS has no 'keys' list")
        self._by_kid: dict[str | None, dict[str, Any]] = {}
        for jwk in keys:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue  # encryption keys and junk entries are not for us
            try:
                jwt.PyJWK(jwk)  # skip keys pyjwt cannot use (unknown kty or curve)
            except jwt.PyJWTError as error:
                log.warning("ignoring JWKS key %r: %s", jwk.get("kid"), error)
                continue
            self._by_kid.setdefault(jwk.get("kid"), jwk)
        if not self._by_kid:
            raise JwksError("the JWKS has no usable signing key")
        self._parsed: dict[tuple[str | None, str], jwt.PyJWK] = {}

    @classmethod
    def parse(cls, data: bytes) -> KeySet:
        """The key set in the JSON text ``data``."""
        try:
            jwks = json.loads(data)
        except ValueError as error:
            raise JwksError(f"the JWKS is not JSON: {error}") from None
        if not isinstance(jwks, dict):
            raise JwksError("the JWKS is not a JSON object")
        return cls(jwks)

    @property
    def kids(self) -> frozenset[str | None]:
        return frozenset(self._by_kid)

    def get(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key ``kid`` bound to algorithm ``alg``; None if there is no such key.

        A token without ``kid`` may use the set's only key. Raises
        :class:`jwt.InvalidAlgorithmError` or :class:`jwt.InvalidKeyError`
        when the key is not one for ``alg`` (the JWK pins another ``alg``, or
        its type does not fit, say an RSA key for ES256).
        """
        if kid is None and len(self._by_kid) == 1:
            kid = next(iter(self._by_kid))
        jwk = self._by_kid.get(kid)
        if jwk is None:
            return None
        cached = self._parsed.get((kid, alg))
        if cached is not None:
            return cached
        pinned = jwk.get("alg")
        if pinned is not None and pinned != alg:
            raise jwt.InvalidAlgorithmError(f"key {kid!r} is for {pinned}, not {alg}")
        # The caller has checked ``alg`` against the allow-list, so this cache
        # holds at most (keys x allowed algorithms) entries.
        key = jwt.PyJWK(jwk, algorithm=alg)
        self._parsed[(kid, alg)] = key
        return key


def read_jwks_file(path: Path) -> bytes:
    """The bytes of the JWKS file (a module function so tests can count reads)."""
    with path.open("rb") as file:
        data = file.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"{path} is larger than {MAX_JWKS_BYTES} bytes")
    return data


def file_fetcher(path: Path) -> Fetch:
    """Fetch from a local file (read in a thread: the event loop never blocks)."""

    async def fetch() -> bytes:
        try:
            return await asyncio.to_thread(read_jwks_file, path)
        except OSError as error:
            raise JwksError(f"cannot read {path}: {error.strerror}") from None

    return fetch


async def _get(url: str, timeout_s: float) -> bytes:
    """The body of an HTTP GET of ``url`` (at most MAX_JWKS_BYTES); JwksError if none."""
    # Imported here: httpx's package imports its command line (click, rich,
    # pygments: ~7 MiB resident), and a server whose keys are a file never fetches.
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
            response = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as error:
        raise JwksError(f"cannot fetch {url}: {error}") from None
    if response.status_code != 200:
        raise JwksError(f"cannot fetch {url}: HTTP {response.status_code}")
    if len(response.content) > MAX_JWKS_BYTES:
        raise JwksError(f"{url} sent more than {MAX_JWKS_BYTES} bytes")
    return response.content


def url_fetcher(url: str, timeout: float = FETCH_TIMEOUT) -> Fetch:
    """Fetch with an HTTP GET (a client per fetch: fetches are rare)."""

    async def fetch() -> bytes:
        return await _get(url, timeout)

    return fetch


def discovery_url(issuer: str) -> str:
    """Where OpenID Connect Discovery 1.0 puts ``issuer``'s provider metadata."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def jwks_uri_of(metadata: bytes, issuer: str) -> str:
    """The ``jwks_uri`` of a discovery document, which must be ``issuer``'s own."""
    try:
        document = json.loads(metadata)
    except ValueError as error:
        raise JwksError(f"the discovery document is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise JwksError("the discovery document is not a JSON object")
    # Discovery 1.0 section 4.3: the issuer in the document must be the one
    # asked for exactly; otherwise another provider's keys would be trusted.
    if document.get("issuer") != issuer:
        raise JwksError(f"the discovery document names issuer {document.get('issuer')!r}")
    uri = document.get("jwks_uri")
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise JwksError("the discovery document has no http(s) 'jwks_uri'")
    return uri


def discovery_fetcher(issuer: str, timeout: float = FETCH_TIMEOUT) -> Fetch:
    """Fetch the JWKS that ``issuer``'s discovery document names.

    The document is read again on every fetch (fetches are rare), so a
    provider that moves its ``jwks_uri`` is followed without a restart.
    """
    url = discovery_url(issuer)

    async def fetch() -> bytes:
        return await _get(jwks_uri_of(await _get(url, timeout), issuer), timeout)

    return fetch


class JwksSource:
    """The cached key set of one issuer, refetched as the module docstring says."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        refresh_interval: float,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "JWKS",
    ) -> None:
        self._fetch = fetch
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._clock = clock
        self._name = name
        self._keys: KeySet | None = None
        self._loaded_at = 0.0  # when the cached set was fetched
        self._attempted_at: float | None = None  # when the last fetch started
        self._attempts = 0  # fetches started, so waiters can tell one happened
        self._last_error = "not fetched yet"
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, auth: AuthConfig) -> JwksSource:
        if auth.jwks_file is not None:
            fetch, name = file_fetcher(auth.jwks_file), str(auth.jwks_file)
        elif auth.jwks_url is not None:
            fetch, name = url_fetcher(auth.jwks_url), auth.jwks_url
        else:
            assert auth.issuer is not None  # the config gives a key source or an issuer
            fetch, name = discovery_fetcher(auth.issuer), discovery_url(auth.issuer)
        return cls(
            fetch,
            refresh_interval=auth.jwks_refresh_interval,
            max_age=auth.jwks_max_age,
            name=name,
        )

    @property
    def current(self) -> KeySet | None:
        """The key set in use; a refresh replaces the object, never changes it."""
        return self._keys

    async def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for a token's ``kid`` and ``alg``; None when the issuer has no such key.

        Raises :class:`JwksError` when no key set could ever be loaded, and
        what :meth:`KeySet.get` raises when the key does not fit ``alg``.
        """
        keys = self._keys
        if keys is not None:
            self.refresh_if_stale()
            key = keys.get(kid, alg)
            if key is not None:
                return key  # the hot path: no I/O, no lock
        await self._refresh(self._attempts)
        if self._keys is None:
            raise JwksError(f"no signing keys from {self._name}: {self._last_error}")
        return self._keys.get(kid, alg)

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        wait = self._refresh_interval
        if self._keys is None:
            wait = min(wait, RETRY_EMPTY_AFTER)
        return self._clock() - self._attempted_at >= wait

    async def _refresh(self, seen_attempts: int) -> None:
        """Fetch once, unless rate-limited or another caller fetched meanwhile."""
        async with self._lock:
            # Whoever waited on the lock while another caller fetched uses that
            # fetch's outcome instead of starting its own.
            if self._attempts != seen_attempts or not self._may_fetch():
                return
            self._attempts += 1
            self._attempted_at = self._clock()
            try:
                keys = KeySet.parse(await self._fetch())
            except JwksError as error:
                self._last_error = str(error)
                log.error("cannot load signing keys from %s: %s", self._name, error)
                return
            self._keys, self._loaded_at = keys, self._attempted_at
            log.info("loaded %d signing keys from %s", len(keys.kids), self._name)

    def refresh_if_stale(self) -> None:
        """Start a background refetch when the key set is older than ``max_age``."""
        if self._background is not None or self._clock() - self._loaded_at < self._max_age:
            return
        if not self._may_fetch():
            return  # a refresh failed recently; keep the cached keys until the next try
        task = asyncio.get_running_loop().create_task(self._refresh(self._attempts))
        self._background = task

        def done(_: asyncio.Task[None]) -> None:
            self._background = None

        task.add_done_callback(done)
