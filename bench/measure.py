"""Warm-up, repetitions, and turning errors into a figure's status.

Every figure is measured the same way: ``warmup`` runs that are thrown away
(they open connections, fill caches, mint certificates), then ``reps`` runs
that are kept. A run is a coroutine returning its sample(s); it does its own
timing so that setup and the content checks stay outside the timed part.

Errors decide the status: an RPC answering UNIMPLEMENTED (HTTP 501 through
the edge) means the feature is not built yet and the figure is "not
available"; anything else (wrong bytes included) fails the figure, and a
failed figure makes ``make bench`` exit non-zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import httpx

from bench.model import Figure, NotAvailableError, Status

Run = Callable[[], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class Plan:
    """How many runs each figure gets, and how long one run may take."""

    warmup: int = 1
    reps: int = 5
    timeout: float = 300.0


@contextmanager
def unimplemented_is_not_available() -> Iterator[None]:
    """Turn a gRPC UNIMPLEMENTED status into :class:`NotAvailableError`."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise NotAvailableError(f"UNIMPLEMENTED: {error.details()}") from error
        raise


def check_http(response: httpx.Response) -> None:
    """Raise unless ``response`` is a 2xx; a 501 (UNIMPLEMENTED) is :class:`NotAvailableError`."""
    if response.status_code == 501:
        raise NotAvailableError(f"HTTP 501: {response.text[:200]}")
    if not response.is_success:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code}: {response.text[:300]}"
        )


class Stopwatch:
    """Elapsed wall time since creation (``time.perf_counter``)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start


def describe(error: BaseException) -> str:
    """A one-line description of ``error`` for the results file."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"gRPC {error.code().name}: {error.details()}"
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"


async def measure_many(figures: dict[str, Figure], plan: Plan, run: Run) -> None:
    """Run ``run`` (warm-up, then reps); append each returned value to its figure.

    ``run`` returns one value per key of ``figures``. On an error every
    figure gets the status it implies, and the figures keep no samples.
    """
    try:
        for _ in range(plan.warmup):
            await asyncio.wait_for(run(), plan.timeout)
        for _ in range(plan.reps):
            values = await asyncio.wait_for(run(), plan.timeout)
            for key, figure in figures.items():
                figure.samples.append(values[key])
    except NotAvailableError as error:
        _set(figures, Status.NOT_AVAILABLE, str(error))
    except Exception as error:
        _set(figures, Status.FAILED, describe(error))


async def measure(figure: Figure, plan: Plan, run: Callable[[], Awaitable[float]]) -> Figure:
    """Measure one figure whose run returns a single sample."""

    async def one() -> dict[str, float]:
        return {"value": await run()}

    await measure_many({"value": figure}, plan, one)
    return figure


def _set(figures: dict[str, Figure], status: Status, detail: str) -> None:
    for figure in figures.values():
        figure.samples.clear()
        figure.status, figure.detail = status, detail
