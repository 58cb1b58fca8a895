"""Every RPC of the contracts is a method of both clients: a new one cannot be missed.

The services and methods come from the generated descriptors of every
``hpcgate.v1`` module, so an RPC added to a ``.proto`` (and ``make proto``)
fails here until the clients carry it (a service attribute, its stub, the
channel policy's service list).
"""

from __future__ import annotations

import importlib
import pkgutil

import hpcgate.v1
from hpcgate.client import AsyncClient, Client
from hpcgate.client.channel import SERVICES


def _services() -> dict[str, list[str]]:
    """Each service of the contracts and its methods, from the descriptors."""
    found: dict[str, list[str]] = {}
    for module in pkgutil.iter_modules(hpcgate.v1.__path__):
        if module.name.endswith("_pb2"):
            pb2 = importlib.import_module(f"hpcgate.v1.{module.name}")
            for name, service in pb2.DESCRIPTOR.services_by_name.items():
                found[name] = [method.name for method in service.methods]
    return found


def test_the_contracts_have_the_four_services() -> None:
    assert set(_services()) == set(SERVICES)


def _missing(client: Client | AsyncClient) -> list[str]:
    """The RPCs of the contracts that ``client`` has no method for."""
    missing = []
    for service, methods in _services().items():
        stub = getattr(client, service.lower(), None)
        missing += [f"{service}.{m}" for m in methods if not callable(getattr(stub, m, None))]
    return missing


def test_every_rpc_is_a_method_of_the_blocking_client() -> None:
    with Client("127.0.0.1:1", "token") as client:  # the channel connects lazily
        assert _missing(client) == []


async def test_every_rpc_is_a_method_of_the_asyncio_client() -> None:
    async with AsyncClient("127.0.0.1:1", "token") as client:
        assert _missing(client) == []
