"""``hpcgate-server``: run the gRPC server from a YAML configuration file."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

import uvloop

from hpcgate.server.app import serve
from hpcgate.server.config import ConfigError, load_config
from hpcgate.server.rpc.observability import configure_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hpcgate-server", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    parser.add_argument("--listen", help="host:port to listen on (overrides server.listen)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    try:
        settings = load_config(args.config)
    except ConfigError as error:
        print(f"hpcgate-server: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # What the imports built lives as long as the process: frozen, full
    # collections no longer walk it. They come when the objects promoted since
    # the last one pass a quarter of the rest, so without this their cost per
    # request moved with the size of the import graph (httpx imported or not:
    # +9 % instructions per small ls in make bench-instructions).
    gc.collect()
    gc.freeze()
    # uvloop: the same asyncio API on libuv. grpc.aio runs on any asyncio
    # loop; on this one a call costs ~10 % less CPU (make bench).
    try:
        uvloop.run(serve(settings, args.listen))
    except ConfigError as error:  # found at start-up: a TLS file that cannot be read
        print(f"hpcgate-server: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
