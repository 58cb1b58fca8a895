"""What runs around every RPC, whatever its service: the server's cross-cutting concerns.

- :mod:`.method_table`: every method wrapped once in the concerns' hooks,
  served to grpc.aio as one generic handler;
- :mod:`.grpc_adapter`: the one module that leans on grpcio's internals;
- :mod:`.authentication`: the bearer-token hook and the caller's identity
  (the token checks themselves are in :mod:`hpcgate.server.auth`);
- :mod:`.errors`: domain errors as rich statuses, by the one table from
  error kind to gRPC code;
- :mod:`.observability`: the access log, RPC metrics and JSON logs;
- :mod:`.metrics`: the RPC counts and latencies that Prometheus scrapes.
"""
