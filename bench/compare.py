"""Each figure against the same figure of the previous results file: regressions flagged.

Wall times swing by +-20 % between runs of unchanged code here, so a flag
is a prompt to look (rerun, or ``make bench-instructions``), not a verdict;
it is never enforced. Two numbers of a figure are compared, and a flag
says which got worse by more than :data:`TOLERANCE`:

- ``ratio``, the figure over its baseline in the same run: comparable
  between machines and robust to a slow run, the one that matters (only
  when both runs name the same baseline);
- ``median``, the raw figure: catches a floor and its figure slowing
  together (a slower cluster or client), which the ratio hides.

"Worse" is higher for times, sizes, counts and CPU, lower for rates
(:data:`HIGHER_IS_BETTER`). A figure is matched by scenario, name and
params; one new, not OK, or without the number in either file is not
compared. The previous figures of a scenario are those of the newest
``bench/results/*.json`` of a ``make bench`` run (not ``-instructions.json``)
written before this one that ran that scenario, or of the file given with
``--against``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

TOLERANCE = 0.10
# Units whose figures are better when higher (throughputs); all others are better lower.
HIGHER_IS_BETTER = frozenset({"req/s", "events/s"})
FIELDS = ("ratio", "median")
INSTRUCTIONS_SUFFIX = "-instructions"


def previous_files(results_dir: Path, stem: str, scenarios: Iterable[str]) -> dict[str, Path]:
    """For each of ``scenarios``, the newest results file in ``results_dir`` before ``stem``
    that ran it (none for a scenario no earlier run ran).

    Per scenario, so that a run of a few scenarios in between does not hide
    the others' previous figures from the next full run.
    """
    wanted = set(scenarios)
    candidates = sorted(
        (
            path
            for path in results_dir.glob("*.json")
            if not path.stem.endswith(INSTRUCTIONS_SUFFIX) and path.stem < stem
        ),
        reverse=True,
    )
    found: dict[str, Path] = {}
    for path in candidates:
        if not wanted - set(found):
            break
        try:
            ran = read_results(path).get("plan", {}).get("scenarios", [])
        except (OSError, ValueError):
            continue  # unreadable or not a results file
        for scenario in wanted & set(ran):
            found.setdefault(scenario, path)
    return found


def merged(previous: dict[str, Path], shown: Callable[[Path], str]) -> tuple[dict[str, Any], str]:
    """One previous results document of each scenario's figures from its own file, and its name.

    The date and machine are the newest file's; the name lists every file.
    """
    docs = {path: read_results(path) for path in sorted(set(previous.values()))}
    figures = [
        figure
        for scenario, path in sorted(previous.items())
        for figure in docs[path].get("figures", [])
        if figure.get("scenario") == scenario
    ]
    newest = docs[max(docs)]
    doc = {"date": newest.get("date"), "machine": newest.get("machine"), "figures": figures}
    return doc, ", ".join(shown(path) for path in docs)


def _key(figure: dict[str, Any]) -> tuple[str, str, str]:
    return figure["scenario"], figure["name"], json.dumps(figure["params"], sort_keys=True)


def _change(previous: float, current: float, higher_is_better: bool) -> float | None:
    """How much worse ``current`` is, as a fraction of ``previous`` (negative: better).

    None when ``previous`` is zero: any increase of a zero figure (errors)
    has no finite ratio and is reported as worse when it makes it worse.
    """
    if previous == 0:
        return None
    change = (current - previous) / abs(previous)
    return -change if higher_is_better else change


def _compared(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """The ``vs_previous`` record of one figure, or None when nothing is comparable."""
    if previous.get("status") != "ok" or current.get("status") != "ok":
        return None
    higher = current.get("unit") in HIGHER_IS_BETTER
    record: dict[str, Any] = {"worse": []}
    for field in FIELDS:
        before, now = previous.get(field), current.get(field)
        if before is None or now is None:
            continue
        if field == "ratio" and previous.get("baseline") != current.get("baseline"):
            continue  # over another baseline: not the same ratio
        worse_by = _change(before, now, higher)
        record[field] = {"previous": before, "current": now, "worse_by": worse_by}
        if worse_by is None:
            regressed = now < before if higher else now > before
        else:
            regressed = worse_by > TOLERANCE
        if regressed:
            record["worse"].append(field)
    return record if len(record) > 1 else None


def compare(current: dict[str, Any], previous: dict[str, Any], against: str) -> dict[str, Any]:
    """Set ``vs_previous`` on every comparable figure of ``current``; the run's summary.

    ``current`` and ``previous`` are results documents (see ``__main__``);
    the summary names the file compared with and every flagged figure.
    """
    earlier = {_key(f): f for f in previous.get("figures", [])}
    flagged = []
    for figure in current["figures"]:
        before = earlier.get(_key(figure))
        record = None if before is None else _compared(before, figure)
        if record is None:
            continue
        figure["vs_previous"] = record
        if record["worse"]:
            flagged.append(
                {
                    "scenario": figure["scenario"],
                    "name": figure["name"],
                    "params": figure["params"],
                    "worse": record["worse"],
                    **{f: record[f] for f in record["worse"]},
                }
            )
    return {
        "against": against,
        "against_date": previous.get("date"),
        "against_machine": previous.get("machine"),
        "tolerance": TOLERANCE,
        "flagged": flagged,
    }


def read_results(path: Path) -> dict[str, Any]:
    """A results document."""
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def cell(figure: dict[str, Any]) -> str:
    """The table's "vs previous" cell: ratio and median change, and a flag when worse."""
    record = figure.get("vs_previous")
    if record is None:
        return "-"
    parts = []
    for field in FIELDS:
        if field in record:
            worse_by = record[field]["worse_by"]
            change = "n/a" if worse_by is None else f"{100 * worse_by:+.0f}%"
            parts.append(f"{field} {change}")
    text = ", ".join(parts)
    if record["worse"]:
        text += f" WORSE ({'+'.join(record['worse'])})"
    return text
