"""The servicer context type shared by every servicer and by the method table's concerns."""

from typing import Any

import grpc

# mypy-protobuf types the context per RPC; servicers only use the untyped
# parts (metadata, abort), so one alias serves them all.
Context = grpc.aio.ServicerContext[Any, Any]
