"""What a scenario produces: figures with their samples, status and ratio.

A figure is one measured quantity (for example "1,000 files over gRPC") with
one sample per repetition. The harness never compares a figure with a fixed
time: it only records it, its spread, and its ratio to a baseline measured
in the same run, because only that ratio is comparable between machines.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Outcome of one figure; only ``FAILED`` makes ``make bench`` exit non-zero."""

    OK = "ok"
    NOT_AVAILABLE = "not available"  # the RPC answered UNIMPLEMENTED (not built yet)
    FAILED = "failed"


class NotAvailableError(Exception):
    """The service does not implement what a figure needs yet."""


class WrongBytesError(Exception):
    """A download (or listing) returned content different from what was created."""


@dataclass
class Figure:
    """One measured quantity of a scenario, with one sample per repetition."""

    scenario: str
    name: str
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)
    status: Status = Status.OK
    detail: str = ""
    # Name of the figure (same scenario and params) this one is divided by.
    baseline: str | None = None
    ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def min(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None

    def key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """Identifies the figure's conditions, so baselines pair with like figures."""
        return self.scenario, tuple(sorted(self.params.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "params": self.params,
            "unit": self.unit,
            "status": self.status.value,
            "detail": self.detail,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "samples": self.samples,
            "baseline": self.baseline,
            "ratio": self.ratio,
            **({"extra": self.extra} if self.extra else {}),
        }


def fill_ratios(figures: list[Figure]) -> None:
    """Set each figure's ratio: its median over its baseline's median, same conditions."""
    by_key = {(f.key(), f.name): f for f in figures}
    for figure in figures:
        if figure.baseline is None or figure.median is None:
            continue
        base = by_key.get((figure.key(), figure.baseline))
        if base is not None and base.median:
            figure.ratio = figure.median / base.median
