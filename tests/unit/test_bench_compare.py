"""``make bench`` against the previous results file: which figures are flagged worse, and where.

Two synthetic results files (written as ``make bench`` writes them) stand
for the previous run and this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.compare import compare, merged, previous_files, read_results
from bench.model import Figure, fill_ratios
from bench.report import markdown, table

MACHINE = {"nproc": 2, "cpu_model": "test CPU", "python": "3.11"}


def _figures(ls: float, ls_floor: float, calls: float, errors: float) -> list[Figure]:
    figures = [
        Figure("big_directory", "SFTP readdir floor", "s", {"entries": 5300}, [ls_floor] * 3),
        Figure(
            "big_directory",
            "REST ls",
            "s",
            {"entries": 5300},
            [ls] * 3,
            baseline="SFTP readdir floor",
        ),
        Figure("throughput", "gRPC echo", "req/s", {"concurrency": 1}, [1000.0] * 3),
        Figure(
            "throughput",
            "gRPC ListSystems",
            "req/s",
            {"concurrency": 1},
            [calls] * 3,
            baseline="gRPC echo",
        ),
        Figure("load", "GET /status/systems: errors", "count", {}, [errors] * 3),
        Figure("small_files", "SFTP floor", "s", {"n": 10}, [0.01] * 3),
    ]
    fill_ratios(figures)
    return figures


def _doc(date: str, figures: list[Figure]) -> dict[str, Any]:
    return {
        "date": date,
        "machine": MACHINE,
        "plan": {"warmup": 1, "reps": 3, "scenarios": []},
        "figures": [f.to_json() for f in figures],
        "targets": [],
    }


def _write(folder: Path, stem: str, doc: dict[str, Any]) -> Path:
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(doc))
    return path


def test_picks_each_scenarios_newest_earlier_bench_file(tmp_path: Path) -> None:
    def ran(*scenarios: str) -> dict[str, Any]:
        figures = [Figure(s, "f", "s", {}, [float(len(s))]).to_json() for s in scenarios]
        return {"plan": {"scenarios": list(scenarios)}, "figures": figures}

    _write(tmp_path, "2026-12-01T100000Z", ran("small_files", "big_directory", "load"))
    _write(tmp_path, "2026-12-02T100000Z", ran("big_directory"))
    _write(tmp_path, "2026-12-02T103000Z", ran("load"))
    _write(tmp_path, "2026-12-02T110000Z-instructions", ran("big_directory"))
    _write(tmp_path, "2026-12-03T100000Z", ran("big_directory"))
    (tmp_path / "2026-12-02T113000Z.json").write_text("not json")
    now = "2026-12-02T120000Z"
    found = previous_files(tmp_path, now, ["big_directory", "small_files", "watch_fanout"])
    assert found == {
        "big_directory": tmp_path / "2026-12-02T100000Z.json",
        "small_files": tmp_path / "2026-12-01T100000Z.json",
    }
    assert previous_files(tmp_path, "2026-12-01T000000Z", ["big_directory"]) == {}

    # Each scenario's figures come from its own file; the name lists both files.
    doc, name = merged(found, lambda path: path.name)
    assert name == "2026-12-01T100000Z.json, 2026-12-02T100000Z.json"
    assert [(f["scenario"], f["samples"]) for f in doc["figures"]] == [
        ("big_directory", [13.0]),
        ("small_files", [11.0]),
    ]


def test_flags_figures_worse_by_more_than_ten_percent(tmp_path: Path) -> None:
    before = _write(tmp_path, "2026-12-01T100000Z", _doc("before", _figures(0.2, 0.1, 900, 0)))
    # ls: median 0.2 -> 0.21 (+5 %), but its floor got faster: ratio 2.0 -> 2.33 (+17 %).
    # ListSystems: 900 -> 700 req/s, worse (lower) by 22 %, in median and ratio.
    # errors: 0 -> 3, worse with no finite ratio. The SFTP floor is new (not in before).
    figures = _figures(0.21, 0.09, 700, 3)
    now = _doc("now", figures)
    now["figures"].append(Figure("small_files", "new", "s", {}, [1.0]).to_json())
    figures.append(Figure("small_files", "new", "s", {}, [1.0]))
    previous = read_results(before)
    previous["figures"] = [f for f in previous["figures"] if f["scenario"] != "small_files"]

    summary = compare(now, previous, "before.json")

    flagged = {(f["name"], tuple(f["worse"])) for f in summary["flagged"]}
    assert flagged == {
        ("REST ls", ("ratio",)),
        ("gRPC ListSystems", ("ratio", "median")),
        ("GET /status/systems: errors", ("median",)),
    }
    by_name = {f["name"]: f for f in now["figures"]}
    ls = by_name["REST ls"]["vs_previous"]
    assert round(ls["median"]["worse_by"], 3) == 0.05
    assert round(ls["ratio"]["worse_by"], 3) == 0.167
    assert by_name["SFTP readdir floor"]["vs_previous"]["worse"] == []  # 0.1 -> 0.09: better
    assert by_name["GET /status/systems: errors"]["vs_previous"]["median"]["worse_by"] is None
    assert "vs_previous" not in by_name["SFTP floor"]  # not in the previous file
    assert "vs_previous" not in by_name["new"]
    # A ratio over another baseline than before is not compared.
    rebased = json.loads(json.dumps(previous))
    for figure in rebased["figures"]:
        if figure["name"] == "REST ls":
            figure["baseline"] = "ls -l exec floor"
    again = _doc("again", _figures(0.21, 0.09, 700, 3))
    compare(again, rebased, "rebased.json")
    record = next(f for f in again["figures"] if f["name"] == "REST ls")["vs_previous"]
    assert "ratio" not in record and record["worse"] == []

    now["vs_previous"] = summary
    text, md = table(now, figures), markdown(now, figures)
    for rendered in (text, md):
        assert "Compared with before.json: 3 figure(s) worse by more than 10 %" in rendered
        assert "ratio +17%, median +5% WORSE (ratio)" in rendered
        assert "big_directory / REST ls entries=5300: ratio 2 -> 2.333" in rendered
    assert "| median -10% |" in md  # the floor (no ratio), better: not flagged
    assert "load / GET /status/systems: errors: median 0 -> 3" in md


def test_unchanged_run_flags_nothing(tmp_path: Path) -> None:
    figures = _figures(0.2, 0.1, 900, 0)
    doc = _doc("now", figures)
    summary = compare(doc, _doc("before", _figures(0.215, 0.1, 850, 0)), "before.json")
    assert summary["flagged"] == []  # +7.5 % and -5.6 %: within the tolerance
    doc["vs_previous"] = summary
    assert "0 figure(s) worse" in table(doc, figures)
