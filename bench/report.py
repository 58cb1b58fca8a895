"""The summary table (terminal and Markdown) and the results file.

The results file keeps every sample, so later runs can be compared with
more than the medians; the table shows median, min, max and the ratio to
the figure's baseline from the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.compare import cell
from bench.model import Figure, Status


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.001 <= abs(value) < 100_000:
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value:.3g}"


def _params(figure: Figure) -> str:
    return " ".join(f"{k}={v}" for k, v in figure.params.items() if k != "payload_bytes")


def _row(figure: Figure, record: dict[str, Any]) -> list[str]:
    """The table's cells for ``figure``; ``record`` is its entry in the results document."""
    ratio = "-" if figure.ratio is None else f"{figure.ratio:.2f}x"
    status = figure.status.value
    if figure.status != Status.OK and figure.detail:
        status += f": {figure.detail}"
    return [
        figure.scenario,
        figure.name,
        _params(figure),
        _number(figure.median),
        _number(figure.min),
        _number(figure.max),
        figure.unit,
        ratio,
        cell(record),
        status,
    ]


HEADER = [
    "scenario",
    "figure",
    "params",
    "median",
    "min",
    "max",
    "unit",
    "ratio",
    "worse by (vs previous)",
    "status",
]
_RIGHT = {3, 4, 5, 7}  # numeric columns


def _heading(doc: dict[str, Any]) -> str:
    machine = doc["machine"]
    return (
        f"hpcgate benchmarks, {doc['date']}: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, {doc['plan']['reps']} runs after "
        f"{doc['plan']['warmup']} warm-up; ratio = median / baseline median (same run)"
    )


def _disturbances(doc: dict[str, Any]) -> list[str]:
    """Scenarios during which a cluster process was restarted (by someone else)."""
    return [
        f"{', '.join(note['restarted'])} restarted during {name}: its figures are disturbed"
        for name, note in doc.get("scenario_notes", {}).items()
        if note.get("restarted")
    ]


def _regressions(doc: dict[str, Any], bullet: str = "  ") -> list[str]:
    """The figures worse than in the previous results file (see :mod:`bench.compare`)."""
    summary = doc.get("vs_previous")
    if summary is None:
        return ["", "No previous results file to compare with."]
    flagged = summary["flagged"]
    limit = f"{100 * summary['tolerance']:.0f} %"
    lines = [
        "",
        f"Compared with {summary['against']}: {len(flagged)} figure(s) worse by more than {limit}"
        + (":" if flagged else "."),
    ]
    for item in flagged:
        params = "".join(f" {k}={v}" for k, v in item["params"].items())
        worse = ", ".join(
            f"{field} {_number(item[field]['previous'])} -> {_number(item[field]['current'])}"
            for field in item["worse"]
        )
        lines.append(f"{bullet}{item['scenario']} / {item['name']}{params}: {worse}")
    return lines


def table(doc: dict[str, Any], figures: list[Figure]) -> str:
    """A plain-text table for the terminal, then the targets."""
    rows = [HEADER, *(_row(f, r) for f, r in zip(figures, doc["figures"], strict=True))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]  # status: unpadded
    lines = [_heading(doc), ""]
    for row in rows:
        cells = [
            row[i].rjust(widths[i]) if i in _RIGHT else row[i].ljust(widths[i])
            for i in range(len(widths))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines += ["", "Targets (reported, not enforced):"]
    for target in doc["targets"]:
        lines.append(f"  {target['outcome']:<13}  {target['target']}  ({_number(target['value'])})")
    lines += _regressions(doc)
    lines += [f"warning: {line}" for line in _disturbances(doc)]
    return "\n".join(lines)


def markdown(doc: dict[str, Any], figures: list[Figure]) -> str:
    """The same table in Markdown, for the README."""
    lines = [f"_{_heading(doc)}_", "", "| " + " | ".join(HEADER) + " |"]
    lines.append("|" + "|".join("---:" if i in _RIGHT else "---" for i in range(len(HEADER))) + "|")
    for figure, record in zip(figures, doc["figures"], strict=True):
        cells = [text.replace("|", "\\|") for text in _row(figure, record)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | value | outcome |", "|---|---:|---|"]
    for target in doc["targets"]:
        lines.append(f"| {target['target']} | {_number(target['value'])} | {target['outcome']} |")
    lines += ["", *_regressions(doc, bullet="- ")]
    lines += ["", *(f"**Warning:** {line}." for line in _disturbances(doc))]
    return "\n".join(lines).rstrip() + "\n"


def write(results_dir: Path, stem: str, doc: dict[str, Any], figures: list[Figure]) -> Path:
    """Write ``<stem>.json`` (everything) and ``<stem>.md`` (the table); return the JSON path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    (results_dir / f"{stem}.md").write_text(markdown(doc, figures))
    return path
