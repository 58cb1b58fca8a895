"""Headers on every response: FirecREST's ``F7T-*`` meta headers and a careful API's own.

FirecREST v2 sends, on every response, ``F7T-Timestamp`` (``time.time()``
at the start of the request, as a decimal string) and ``F7T-AppVersion``
(its API version; pyfirecrest picks features by it), plus
``F7T-AuthUsername`` when the caller was authenticated. hpcgate sends the
FirecREST API level it implements as ``F7T-AppVersion`` and its own version
as ``X-Hpcgate-Version``. The username is the server's to know: handlers put
what the server reported into the scope (:func:`set_username`). Every
response also gets ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store`` (replies hold users' data and change).

They are added outside Starlette's error middleware, by the edge's one ASGI
wrapper (:class:`hpcgate.edge.observe.Observed`), so that 404, 405 and 500
answers carry them too (``BaseHTTPMiddleware`` would also cost a task per
request).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from urllib.parse import quote

from starlette.types import Scope

# The FirecREST v2 API level hpcgate implements. The OpenAPI document it
# follows is 2.5.6's, but hpcgate also serves the job-list filters `name`
# and `time_window` of later FirecREST (master), which pyfirecrest enables
# only from 2.6.0 on: with "2.5.6" its job_info(time_window=...) refuses to
# run. 2.6.0 is the highest level pyfirecrest's feature checks know.
FIRECREST_API_VERSION = "2.6.0"
_USERNAME = "hpcgate.username"


def hpcgate_version() -> str:
    """The installed hpcgate distribution's version."""
    try:
        return metadata.version("hpcgate")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def set_username(scope: Scope, username: str) -> None:
    """Name the authenticated caller of the request (``F7T-AuthUsername``)."""
    if username:
        scope[_USERNAME] = username


def username_of(scope: Scope) -> str | None:
    """The authenticated caller of the request, if the server has named one."""
    username: str | None = scope.get(_USERNAME)
    return username


def attachment(filename: str) -> str:
    """A ``Content-Disposition: attachment`` value for ``filename``, safely quoted.

    RFC 6266: a plain ``filename="..."`` when the name is printable ASCII
    without quote or backslash, else an ASCII stand-in plus ``filename*``
    with the UTF-8 name percent-encoded (RFC 8187), which every browser and
    HTTP client reads.
    """
    safe = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    if safe == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(filename, safe='')}"


class ResponseHeaders:
    """The meta and safety headers of every HTTP response.

    Added by :class:`hpcgate.edge.observe.Observed`, the one ASGI wrapper
    around the whole application (a wrapper of its own cost a coroutine per
    message sent).
    """

    def __init__(self) -> None:
        self._fixed = [
            (b"f7t-appversion", FIRECREST_API_VERSION.encode()),
            (b"x-hpcgate-version", hpcgate_version().encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
        ]

    def of(
        self, scope: Scope, headers: Iterable[tuple[bytes, bytes]], timestamp: float
    ) -> list[tuple[bytes, bytes]]:
        """The headers of the response that ``scope``'s request gets: ``headers`` and ours.

        ``timestamp`` is when the request began (``time.time()``, ``F7T-Timestamp``).
        """
        result = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
        result += self._fixed
        result.append((b"f7t-timestamp", str(timestamp).encode()))
        username = scope.get(_USERNAME)
        if username:
            result.append((b"f7t-authusername", username.encode()))
        return result
