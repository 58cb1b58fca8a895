"""The REST edge: FirecREST v2's HTTP/JSON API, transcoded into hpcgate's gRPC API.

Routes are derived at start-up from the ``google.api.http`` rules in the
service descriptors; no endpoint is known by name here.
"""

from hpcgate.edge.app import create_app

__all__ = ["create_app"]
