"""``hpcgate-edge``: serve the REST edge in front of an hpcgate gRPC server."""

from __future__ import annotations

import argparse

import uvicorn

from hpcgate.edge.app import create_app
from hpcgate.edge.transcode import MAX_FORM_BODY


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hpcgate-edge", description=__doc__)
    parser.add_argument("--server", default="127.0.0.1:50051", help="gRPC server, host:port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of unary calls, in seconds"
    )
    parser.add_argument(
        "--max-upload",
        type=int,
        default=MAX_FORM_BODY,
        help="largest multipart upload body the edge reads, in bytes",
    )
    args = parser.parse_args(argv)
    app = create_app(args.server, timeout=args.timeout, max_form_body=args.max_upload)
    # httptools (C) parses HTTP/1.1 at a fraction of h11's CPU per request;
    # uvloop runs the loop (the server's too; the tests run on it).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )


if __name__ == "__main__":
    main()
