"""The issue's targets, evaluated against the figures of a run.

They are reported (table and results file), never enforced: the exit code
depends only on whether the scenarios ran and returned the right bytes.
A target reads one number of one figure: its ratio or its median.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bench.model import Figure, Status
from bench.remote import BIG_COUNTS
from bench.scenarios import big_dir, load, memory
from bench.scenarios.small_files import REST, REST_AIOHTTP


@dataclass(frozen=True)
class Target:
    """``figure``'s ``field`` (with these params) must compare with ``bound``."""

    label: str
    scenario: str
    figure: str
    params: dict[str, Any]
    field: Literal["ratio", "median", "max"]
    op: Literal["<=", ">="]
    bound: float


TARGETS = (
    Target(
        "1,000 files over gRPC (DownloadStream): <= 1.3x SFTP floor",
        "small_files",
        "gRPC DownloadStream (1 RPC/file)",
        {"n": 1000},
        "ratio",
        "<=",
        1.3,
    ),
    Target(
        "1,000 files over gRPC (Download): <= 1.3x SFTP floor",
        "small_files",
        "gRPC Download (1 RPC/file)",
        {"n": 1000},
        "ratio",
        "<=",
        1.3,
    ),
    Target(
        "1,000 files over REST: <= 2x SFTP floor",
        "small_files",
        REST,
        {"n": 1000},
        "ratio",
        "<=",
        2.0,
    ),
    Target(
        "1,000 files over REST (aiohttp): <= 1.0x SFTP floor",
        "small_files",
        REST_AIOHTTP,
        {"n": 1000},
        "ratio",
        "<=",
        1.0,
    ),
    Target(
        "1,000 files over REST (httpx): <= 1.5x SFTP floor",
        "small_files",
        REST,
        {"n": 1000},
        "ratio",
        "<=",
        1.5,
    ),
    *(
        Target(
            f"One small download over REST ({client}): <= 2x SFTP floor",
            "small_files",
            figure,
            {"n": 1},
            "ratio",
            "<=",
            2.0,
        )
        for client, figure in (("aiohttp", REST_AIOHTTP), ("httpx", REST))
    ),
    Target(
        "Bulk retrieval of 1,000 files: <= 0.1 s",
        "small_files",
        "gRPC BulkDownload (1 call)",
        {"n": 1000},
        "median",
        "<=",
        0.1,
    ),
    *(
        Target(
            f"ls of {n:,} entries over {how}: <= 1.2x the faster floor",
            "big_directory",
            figure,
            {"entries": n},
            "ratio",
            "<=",
            1.2,
        )
        for n in BIG_COUNTS
        for how, figure in (("gRPC", "gRPC Ls"), ("REST", "REST ls"))
    ),
    *(
        Target(
            f"ls of {n:,} entries over REST: server + edge CPU <= 17 us per entry",
            "big_directory",
            big_dir.cpu_figure("REST ls", big_dir.REST_PROCESSES),
            {"entries": n},
            "median",
            "<=",
            17,
        )
        for n in BIG_COUNTS
    ),
    *(
        Target(
            f"ListSystems over gRPC, concurrency {c}: >= 70 % of the echo floor",
            "throughput",
            "gRPC ListSystems",
            {"concurrency": c},
            "ratio",
            ">=",
            0.7,
        )
        for c in (1, 64)
    ),
    Target(
        f"Load, {load.STATUS}: server + edge CPU <= 0.35 ms per request",
        "load",
        f"{load.STATUS}: {load.CPU}",
        {},
        "median",
        "<=",
        0.35,
    ),
    Target(
        f"Load, {load.STATUS}: >= 3,000 req/s",
        "load",
        f"{load.STATUS}: throughput",
        {},
        "median",
        ">=",
        3000,
    ),
    Target(
        f"Load, {load.STATUS}: p99 <= 300 ms",
        "load",
        f"{load.STATUS}: p99 latency",
        {},
        "median",
        "<=",
        300,
    ),
    Target(
        "Server + edge idle: <= 150 MiB RSS",
        "memory",
        f"{memory.BOTH}, {memory.IDLE}",
        {},
        "median",
        "<=",
        150,
    ),
    *(
        Target(
            f"Server + edge RSS {when}: <= 1.1x idle",
            "memory",
            f"{memory.BOTH}, {when}, up to {memory.SETTLE_TIME:.0f} s later",
            {},
            "ratio",
            "<=",
            memory.SETTLED,
        )
        for when in ("after small_files", "after load")
    ),
    *(
        Target(
            f"Load, {target}: zero errors",
            "load",
            f"{target}: errors (non-2xx + socket)",
            {},
            "max",
            "<=",
            0,
        )
        for target in ("GET /status/systems", "GET ops/ls (10 entries)")
    ),
)

_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


def _find(target: Target, figures: list[Figure]) -> Figure | None:
    for figure in figures:
        if (figure.scenario, figure.name) != (target.scenario, target.figure):
            continue
        if all(figure.params.get(k) == v for k, v in target.params.items()):
            return figure
    return None


def evaluate(figures: list[Figure]) -> list[dict[str, Any]]:
    """Each target with the value found and "met", "missed" or "not available"."""
    report = []
    for target in TARGETS:
        figure = _find(target, figures)
        value = None
        if figure is not None and figure.status == Status.OK:
            value = getattr(figure, target.field)
        if value is None:
            outcome = "not available"
        else:
            outcome = "met" if _OPS[target.op](value, target.bound) else "missed"
        report.append({"target": target.label, "value": value, "outcome": outcome})
    return report
