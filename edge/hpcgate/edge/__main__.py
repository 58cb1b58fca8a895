"""``hpcgate-edge``: serve the REST edge in front of an hpcgate gRPC server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hpcgate.edge.accesslog import AccessLog
from hpcgate.edge.app import HEARTBEAT_SECONDS, create_app
from hpcgate.edge.body import BodyLimits
from hpcgate.edge.metrics import serve_metrics
from hpcgate.edge.serve import EdgeServer, ServeOptions, edge_config, settle_collector
from hpcgate.edge.upstream import UpstreamTLS


def main(argv: list[str] | None = None) -> None:
    defaults, serving = BodyLimits(), ServeOptions()
    parser = argparse.ArgumentParser(prog="hpcgate-edge", description=__doc__)
    parser.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="gRPC server(s): host:port, a comma-separated list, or a resolver target such as"
        " dns:///servers.example.org:50051 (calls are balanced round robin)",
    )
    parser.add_argument("--server-ca", type=Path, help="TLS to the servers, trusting this CA (PEM)")
    parser.add_argument(
        "--client-cert", type=Path, help="with --server-ca: the edge's certificate (mutual TLS)"
    )
    parser.add_argument("--client-key", type=Path, help="with --client-cert: its private key")
    parser.add_argument("--host", default=serving.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=serving.port, help="port to listen on")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of unary calls, in seconds"
    )
    parser.add_argument(
        "--max-upload",
        type=int,
        default=defaults.upload,
        help="largest multipart upload body the edge reads, in bytes",
    )
    parser.add_argument(
        "--max-json", type=int, default=defaults.json, help="largest JSON body, in bytes"
    )
    parser.add_argument(
        "--body-idle-timeout",
        type=float,
        default=defaults.idle,
        help="longest pause within a request body, in seconds",
    )
    parser.add_argument(
        "--body-min-rate",
        type=float,
        default=defaults.min_rate,
        help="slowest average rate of a request body, in bytes per second",
    )
    parser.add_argument(
        "--body-grace",
        type=float,
        default=defaults.grace,
        help="seconds before --body-min-rate applies",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=serving.header_timeout,
        help="time a client has to send a request's headers, in seconds",
    )
    parser.add_argument(
        "--sse-heartbeat",
        type=float,
        default=float(os.environ.get("HPCGATE_EDGE_SSE_HEARTBEAT", HEARTBEAT_SECONDS)),
        help="seconds of silence after which an SSE stream gets a ': keepalive' comment"
        " (0: none; default $HPCGATE_EDGE_SSE_HEARTBEAT or %(default)s)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=os.environ.get("HPCGATE_EDGE_METRICS_LISTEN") or None,
        help="host:port to serve Prometheus metrics on, off the REST port"
        " (default $HPCGATE_EDGE_METRICS_LISTEN, else none)",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="write no JSON access-log line per request (on stderr otherwise)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=serving.shutdown_grace,
        help="on SIGTERM, seconds that in-flight requests get to finish",
    )
    args = parser.parse_args(argv)
    limits = BodyLimits(
        json=args.max_json,
        upload=args.max_upload,
        idle=args.body_idle_timeout,
        min_rate=args.body_min_rate,
        grace=args.body_grace,
    )
    mutual = (args.client_cert, args.client_key)
    if any(mutual) and not (args.server_ca and all(mutual)):
        parser.error("--client-cert and --client-key go together, with --server-ca")
    tls = UpstreamTLS(args.server_ca, args.client_cert, args.client_key) if args.server_ca else None
    if args.sse_heartbeat < 0:
        parser.error("--sse-heartbeat must not be negative")
    access_log = None if args.no_access_log else AccessLog()
    app = create_app(
        args.server,
        timeout=args.timeout,
        limits=limits,
        tls=tls,
        heartbeat=args.sse_heartbeat,
        access_log=access_log,
    )
    if args.metrics_listen:
        serve_metrics(args.metrics_listen)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        header_timeout=args.header_timeout,
        shutdown_grace=args.shutdown_grace,
    )
    server = EdgeServer(edge_config(app, options), on_shutdown=app.edge.drain)
    settle_collector()
    server.run()


if __name__ == "__main__":
    main()
