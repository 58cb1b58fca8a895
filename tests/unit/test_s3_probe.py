"""The S3 health probe's own call (:class:`BucketLister`) when the store does not answer it.

A store that refuses the keys is a plain HTTP server of the test's own that
answers as S3 does: the cluster's S3 server (moto) accepts any keys, so it
cannot show that fault itself (``tests/integration/test_s3_probe_store.py``
lists the real store's buckets).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import EndpointConnectionError

from conftest import free_port
from hpcgate.server.config import S3Config, Secret
from hpcgate.server.transfer.s3 import BucketLister, S3ProbeError

REFUSAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
    b"<Message>The AWS Access Key Id you provided does not exist.</Message></Error>"
)


def _config(
    endpoint: str, access_key: str = "probe-key", secret_key: str = "probe-secret"
) -> S3Config:
    return S3Config(
        endpoint=endpoint,
        access_key=Secret(value=access_key),
        secret_key=Secret(value=secret_key),
    )


@pytest.fixture
def refusing_store() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(REFUSAL)))
            self.end_headers()
            self.wfile.write(REFUSAL)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_store_that_refuses_the_keys_is_a_failure_naming_its_code(
    refusing_store: tuple[str, list[dict[str, str]]],
) -> None:
    endpoint, seen = refusing_store
    with pytest.raises(S3ProbeError, match=r"HTTP 403 \(InvalidAccessKeyId\)"):
        BucketLister(_config(endpoint), endpoint).list_buckets()
    (request,) = seen
    assert request[":path"] == "/"
    # Signed as S3 wants it: SigV4 with the configured key and region, the payload's hash.
    assert request["authorization"].startswith("AWS4-HMAC-SHA256 Credential=probe-key/")
    assert "/us-east-1/s3/aws4_request" in request["authorization"]
    assert request["x-amz-content-sha256"]
    assert "probe-secret" not in repr(request)


def test_an_unreachable_store_is_a_connection_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointConnectionError):
        BucketLister(_config(endpoint), endpoint, timeout=2).list_buckets()
