"""``make bench``: run the scenarios, write bench/results/<date>.json, print the table.

Exit status: 0 when every scenario ran and every byte checked out (figures
whose RPC is not built yet, UNIMPLEMENTED, count as "not available" and do
not fail the run); 1 when a scenario failed or returned wrong bytes.
Times are never compared with thresholds here: bench/targets.py reports
the issue's targets without enforcing them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import grpc
import httpx

from bench import ROOT
from bench.compare import compare, merged, previous_files
from bench.context import Context, Scenario
from bench.httpclients import ClientPerConnection
from bench.measure import Plan, describe
from bench.model import Figure, Status, fill_ratios
from bench.procfs import machine
from bench.remote import SMALL_COUNT, Link, create, remove
from bench.report import table, write
from bench.scenarios import (
    big_dir,
    fleet,
    load,
    memory,
    small_files,
    snakemake,
    throughput,
    transfers,
    watch,
)
from bench.stack import started
from bench.targets import evaluate

SCENARIOS: dict[str, Scenario] = {
    "small_files": small_files.run,
    "big_directory": big_dir.run,
    "throughput": throughput.run,
    "load": load.run,
    "watch_fanout": watch.run,
    "fleet": fleet.run,
    "snakemake": snakemake.run,
    "transfers": transfers.run,
}
# What a plain `make bench` runs: all but the transfers (minutes of 1 GiB
# files, and 3 GiB of disk: `--only transfers` runs them).
DEFAULT = [name for name in SCENARIOS if name != "transfers"]
RESULTS = ROOT / "bench" / "results"
# gRPC's 4 MiB default would refuse the unary Ls of 100,000 entries (~5 MB);
# hpcgate's own client allows 64 MiB.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


async def _guarded(
    name: str, scenario: Scenario, ctx: Context, notes: dict[str, Any]
) -> list[Figure]:
    """Run one scenario; an error it did not handle fails the scenario, not the run.

    ``notes`` gets the machine's load average around the scenario and any
    cluster process restarted meanwhile: both explain disturbed figures.
    """
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    await ctx.stack.cluster_restarts()  # forget restarts that happened before
    load_before, started_at = os.getloadavg()[0], time.monotonic()
    try:
        figures = await scenario(ctx)
    except Exception as error:
        figures = [Figure(name, "scenario", "", status=Status.FAILED, detail=describe(error))]
    restarted = await ctx.stack.cluster_restarts()
    notes[name] = {
        "seconds": round(time.monotonic() - started_at, 1),
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "restarted": restarted,
    }
    if restarted:
        print(f"bench: warning: {', '.join(restarted)} restarted during {name}", file=sys.stderr)
    counts = Counter(figure.status.value for figure in figures)
    print(f"bench: {name}: {dict(counts)}", file=sys.stderr, flush=True)
    return figures


async def _run(
    selected: list[str], plan: Plan, sizes: tuple[int, ...], notes: dict[str, Any]
) -> list[Figure]:
    """Start everything, create the data, run the selected scenarios, clean up."""
    async with started() as stack:
        ssh = Link(stack.cluster, "alice")
        dataset = await create(await ssh.get(), stack.home)
        try:
            async with (
                grpc.aio.insecure_channel(stack.grpc_target, options=CHANNEL_OPTIONS) as channel,
                httpx.AsyncClient(
                    base_url=stack.rest_url, headers=stack.headers(), timeout=plan.timeout
                ) as http,
                ClientPerConnection(stack.rest_url, stack.headers(), plan.timeout) as rest,
            ):
                ctx = Context(stack, plan, dataset, ssh, channel, http, rest, sizes)
                idle = await memory.rss(ctx, memory.IDLE)
                figures = list(idle)
                for name in selected:
                    figures += await _guarded(name, SCENARIOS[name], ctx, notes)
                    if name in ("small_files", "load"):
                        figures += await memory.settled(ctx, idle, f"after {name}")
                return figures
        finally:
            try:
                await remove(await ssh.get(), dataset)
            except (OSError, asyncssh.Error) as error:
                print(f"bench: could not remove {dataset.root}: {error}", file=sys.stderr)
            ssh.close()


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside."""
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated scenarios to run (of {', '.join(SCENARIOS)})",
    )
    parser.add_argument("--reps", type=int, default=5, help="measured runs per figure")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    parser.add_argument("--sizes", default="1,10,100,1000", help="small-file counts")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument(
        "--against",
        type=Path,
        help="results file to compare with (default: per scenario, the newest earlier one)",
    )
    args = parser.parse_args(argv)
    selected = [name for name in args.only.split(",") if name]
    unknown = set(selected) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    sizes = tuple(int(n) for n in args.sizes.split(","))
    if max(sizes) > SMALL_COUNT:
        parser.error(f"--sizes: at most {SMALL_COUNT} files")
    plan = Plan(warmup=args.warmup, reps=args.reps)

    now = datetime.now(UTC)
    stem = now.strftime("%Y-%m-%dT%H%M%SZ")
    if args.against is not None:
        previous = dict.fromkeys(selected, args.against)
    else:
        previous = previous_files(args.results, stem, selected)
    notes: dict[str, Any] = {}
    figures = asyncio.run(_run(selected, plan, sizes, notes))
    fill_ratios(figures)
    doc: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": {"warmup": plan.warmup, "reps": plan.reps, "scenarios": selected},
        "figures": [f.to_json() for f in figures],
        "scenario_notes": notes,
    }
    doc["targets"] = evaluate(figures)
    if previous:
        doc["vs_previous"] = compare(doc, *merged(previous, _shown))
    path = write(args.results, stem, doc, figures)
    print(table(doc, figures))
    print(f"\nresults: {_shown(path)}")
    failed = [f for f in figures if f.status == Status.FAILED]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
