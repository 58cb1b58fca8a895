"""Record FirecREST v2's real responses to the scenario: the golden record of the conformance tests.

Run FirecREST v2 from its source against the loopback cluster first
(``/work/shared/tools/firecrest-v2/run.sh start SRC PORT``, after ``make run``),
then::

    .venv/bin/python tests/conformance/record.py --base-url http://127.0.0.1:18500 \\
        --out tests/conformance/firecrest-v2-record.json \\
        --firecrest-commit "$(git -C F7T rev-parse HEAD)"

It builds the fixture tree in a fresh directory of alice's over SSH (a
certificate signed by the cluster's CA named in ``.hpcgate/dev.json``), sends
every operation as alice with the dev token, stores the normalised answers,
and removes the tree again. Made again, the record differs only where the
cluster's load decides (a node's state, IDLE or MIXED).

The S3-staged ``transfer/upload`` and ``transfer/download`` need FirecREST
configured with S3, which run.sh is not: for the record, a copy of run.sh
added under the system's ``data_operation`` a ``data_transfer`` with
``service_type: s3``, ``name: s3``, ``private_url`` and ``public_url`` both
the cluster's moto endpoint (``s3.endpoint`` in ``.hpcgate/dev.json``),
``access_key_id`` and ``secret_access_key`` "testing" (the server config's
``s3`` section), ``region: us-east-1``, ``ttl: 3600`` and
``multipart.max_part_size: 1073741824``: hpcgate's defaults of
``s3.url_expiry`` and ``s3.max_part_size``, so that both services presign
URLs of the same lifetime and split a file into as many parts. No health
probe is needed: FirecREST checks a service's health only when
``probing.services`` lists it, and run.sh lists none. FirecREST stages in a
bucket named after the user (``alice``; hpcgate's is ``hpcgate-alice``) and
its download job works in ``~alice/tmp/<uuid>`` (``multipart.tmp_folder``,
relative to the job's directory): after recording, abort the bucket's
multipart uploads (the upload jobs are cancelled, never fed), delete its
objects and the bucket, and remove that directory. On this moto, FirecREST's
download job fails at completing the multipart upload (moto answers 500);
the record holds only the replies, which come before.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import asyncssh
import httpx

# Run as a script: make tests/ importable, as pytest's pythonpath does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance import drive, scenario

from cluster_fixture import mint_user_key

USER = "alice"
SETUP = (
    "FirecREST v2 from source by /work/shared/tools/firecrest-v2/run.sh on the loopback cluster"
    " (one system, SSHStaticKeys, health probes off), with its command_execution and"
    " scheduler timeouts raised from 5 and 10 s to 30 s, which the shared machine overran,"
    " and an s3 data_transfer on the cluster's moto S3 (private_url = public_url = its"
    " endpoint, region us-east-1, ttl 3600, multipart.max_part_size 1073741824)"
)


async def record(
    base_url: str, dev: dict[str, Any], commit: str, date: str, setup: str
) -> dict[str, Any]:
    """Build the fixtures, drive FirecREST, clean up; the record as a JSON document."""
    ssh = dev["ssh"]
    key = mint_user_key(asyncssh.read_private_key(ssh["ca_key"]), USER)

    async def on_cluster(command: str) -> None:
        # A connection per command: the run takes a while, and nothing needs one held open.
        async with asyncssh.connect(
            ssh["host"],
            ssh["port"],
            username=USER,
            client_keys=[key],
            known_hosts=ssh["known_hosts"],
            agent_path=None,
            config=None,
        ) as conn:
            await conn.run(command, check=True)

    ctx = drive.Context.fresh(dev["system"], USER)
    await on_cluster(scenario.setup_script(ctx.scratch))
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            responses = await drive.run(client, ctx, dev["tokens"][USER], retries=3)
    finally:
        await on_cluster(scenario.cleanup_script([ctx.scratch, *ctx.stray_files]))
    return {
        "firecrest": {"repository": "https://github.com/eth-cscs/firecrest-v2", "commit": commit},
        "recorded": date,
        "setup": setup,
        "user": USER,
        "system": dev["system"],
        "operations": [
            {"name": op.name, "request": op.request(), "response": responses[op.name]}
            for op in scenario.OPERATIONS
        ],
    }


def dump(doc: dict[str, Any]) -> str:
    """The record as JSON with one operation a line: small, and a new record diffs by operation."""
    head = json.dumps({k: v for k, v in doc.items() if k != "operations"}, indent=1)
    ops = ",\n".join(json.dumps(op, ensure_ascii=False) for op in doc["operations"])
    return f'{head[:-2]},\n "operations": [\n{ops}\n ]\n}}\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="FirecREST v2's base URL")
    parser.add_argument("--out", required=True, type=Path, help="where to write the record")
    parser.add_argument("--firecrest-commit", required=True, help="the commit FirecREST runs from")
    parser.add_argument("--dev-json", type=Path, default=Path(".hpcgate/dev.json"))
    parser.add_argument("--setup", default=SETUP, help="how FirecREST was run, for the record")
    parser.add_argument(
        "--date", default=datetime.datetime.now(datetime.UTC).date().isoformat(), help="YYYY-MM-DD"
    )
    args = parser.parse_args()
    dev = json.loads(args.dev_json.read_text())
    doc = asyncio.run(record(args.base_url, dev, args.firecrest_commit, args.date, args.setup))
    args.out.write_text(dump(doc))
    print(f"{len(doc['operations'])} operations recorded in {args.out}")


if __name__ == "__main__":
    main()
