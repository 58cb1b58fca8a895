"""Where a client's bearer token comes from, handed to gRPC as call credentials.

Three sources: a static token, a token file re-read when it changes (a
sidecar refreshes it), and OAuth2 client credentials fetched from a token
endpoint and refreshed ``leeway`` seconds before they expire. gRPC asks the
source before each call (``metadata_call_credentials``), so a long-running
program never sends an expired token.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Protocol

import grpc


class TokenSource(Protocol):
    """Anything that returns the bearer token to send now."""

    def token(self) -> str:
        """The current access token (refreshed if needed)."""
        ...


class StaticToken:
    """A token given once: for scripts and tests."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        """The token, unchanged."""
        return self._token


class TokenFile:
    """A token kept in a file by someone else; re-read whenever its mtime changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The file's content, stripped; read again only after the file changed."""
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._token = self.path.read_text().strip()
                self._stamp = stamp
            return self._token


class ClientCredentials:
    """OAuth2 client credentials grant; the token is renewed before it expires."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        leeway: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.leeway = leeway
        self.timeout = timeout
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0
        self.fetches = 0  # how many tokens were fetched (observability, tests)

    def token(self) -> str:
        """A token valid for at least ``leeway`` more seconds (fetched if needed)."""
        with self._lock:
            if time.monotonic() >= self._expires - self.leeway:
                self._fetch()
            return self._token

    def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        request = urllib.request.Request(
            self.token_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        basic = urllib.parse.quote(self.client_id) + ":" + urllib.parse.quote(self._secret)
        request.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            body = json.load(answer)
        self._token = str(body["access_token"])
        # Without expires_in, assume a short life: refreshed on the next minute.
        self._expires = started + float(body.get("expires_in", 60))
        self.fetches += 1


class _Plugin(grpc.AuthMetadataPlugin):
    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            token = self._source.token()
        except Exception as error:  # reported to the call as UNAVAILABLE by gRPC
            callback((), error)
            return
        callback((("authorization", f"Bearer {token}"),), None)


def call_credentials(source: TokenSource) -> grpc.CallCredentials:
    """gRPC call credentials that ask ``source`` for the token before every call."""
    return grpc.metadata_call_credentials(_Plugin(source), name="hpcgate")
