"""Generated Protobuf and gRPC stubs of the hpcgate v1 API (`make proto`).

Everything in this package except this file and `hpcgate.binpb` is written by
grpcio-tools and mypy-protobuf; edit the `.proto` files under `proto/` instead.
`DESCRIPTOR_SET` is the compiled descriptor set with source comments, which
the REST edge reads for its OpenAPI descriptions.
"""

from pathlib import Path

DESCRIPTOR_SET = Path(__file__).with_name("hpcgate.binpb")
