"""The Filesystem ``ops`` RPCs on the loopback cluster, over gRPC and over REST.

Files are arranged and checked through the users' own SSH logins; every
test works in a fresh directory under /home/alice and removes it afterwards.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncssh
import grpc
import httpx
import pytest
from google.protobuf import message
from google.rpc import error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2

from cluster_fixture import Cluster
from conftest import LiveService, start_service
from devkeys import DevIssuer
from hpcgate.server.config import parse_config
from hpcgate.v1 import filesystem_pb2 as fs_pb2
from hpcgate.v1 import filesystem_pb2_grpc, options_pb2
from localsite import SYSTEM, local_config

pytestmark = pytest.mark.asyncio

PWNED = "/tmp/pwned"
# Names that break naive command lines, shell quoting or line-based parsing.
ADVERSARIAL = [
    "with space",
    "single'quote",
    'double"quote',
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "new\nline",
    "-leading-dash",
    "*",
    "non-ascii-é-ü-€-日本",
    "x" * 255,
    "é" * 127 + "x",  # 255 bytes too
]


# -- plumbing ------------------------------------------------------------------------


@dataclass
class Fs:
    """The Filesystem service of one running hpcgate, over both transports."""

    live: LiveService
    http: httpx.AsyncClient
    stub: filesystem_pb2_grpc.FilesystemStub

    async def rest(
        self,
        method: str,
        op: str,
        *,
        user: str = "alice",
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One FirecREST ops call through the edge."""
        return await self.http.request(
            method,
            f"/filesystem/{SYSTEM}/ops/{op}",
            params=params,
            json=json,
            headers=self.live.headers(user),
        )

    async def rpc(self, name: str, request: message.Message, user: str = "alice") -> Any:
        """One gRPC call of ``name`` with ``request``."""
        call = getattr(self.stub, name)
        return await call(request, metadata=self.live.metadata(user), timeout=60)

    async def ls(self, path: str, **params: Any) -> list[dict[str, Any]]:
        reply = await self.rest("GET", "ls", params={"path": path, **params})
        assert reply.status_code == 200, reply.text
        output: list[dict[str, Any]] = reply.json()["output"]
        return output


def _fs(live: LiveService, http: httpx.AsyncClient) -> Fs:
    return Fs(live, http, filesystem_pb2_grpc.FilesystemStub(live.channel))


@pytest.fixture(scope="module")
async def fs(live: LiveService) -> AsyncIterator[Fs]:
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=120) as http:
        yield _fs(live, http)


@pytest.fixture(scope="module")
async def alice(cluster: Cluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """alice's own SSH login, to arrange and inspect files behind the service's back."""
    async with cluster.connect("alice") as conn:
        yield conn


async def sh(conn: asyncssh.SSHClientConnection, *argv: str, check: bool = True) -> str:
    """Run argv (quoted) on the cluster; its stdout."""
    result = await conn.run(shlex.join(argv), check=check)
    return str(result.stdout)


async def script(conn: asyncssh.SSHClientConnection, text: str, *args: str) -> str:
    """Run a fixed shell script with positional arguments; its stdout."""
    return await sh(conn, "sh", "-c", text, "sh", *args)


async def exists(conn: asyncssh.SSHClientConnection, path: str) -> bool:
    result = await conn.run(shlex.join(["test", "-e", path]) + " || test -L " + shlex.quote(path))
    return result.exit_status == 0


@pytest.fixture
async def workdir(alice: asyncssh.SSHClientConnection) -> AsyncIterator[str]:
    """A fresh directory of alice's, removed with everything in it afterwards."""
    path = f"/home/alice/hpcgate-ops-{uuid.uuid4().hex[:10]}"
    await sh(alice, "mkdir", "--", path)
    try:
        yield path
    finally:
        await sh(alice, "chmod", "-R", "u+rwX", "--", path, check=False)
        await sh(alice, "rm", "-rf", "--", path)


async def put(conn: asyncssh.SSHClientConnection, path: str, data: bytes) -> None:
    """Write a file as the connection's user, over SFTP (any name works)."""
    async with conn.start_sftp_client() as sftp, sftp.open(path, "wb") as handle:
        await handle.write(data)


def iso(seconds: float) -> str:
    """lastModified as the edge writes a Timestamp."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """Fields named by the BadRequest detail of a failed call."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            status = rpc_status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return []


def assert_error(
    reply: httpx.Response, status: int, words: str, error_type: str = "error"
) -> dict[str, Any]:
    """A FirecREST error body with ``status`` whose message has ``words``."""
    assert reply.status_code == status, reply.text
    body: dict[str, Any] = reply.json()
    assert body["errorType"] == error_type
    assert words in body["message"]
    return body


async def rpc_error(fs: Fs, name: str, request: message.Message, user: str = "alice") -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fs.rpc(name, request, user)
    return caught.value


# -- ls --------------------------------------------------------------------------------


async def test_ls_entries_have_firecrest_fields(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    await put(alice, f"{workdir}/f.txt", b"hello\n" * 10)
    await script(
        alice,
        'cd -- "$1" && chmod 640 f.txt && touch -d @1700000000 f.txt && mkdir sub'
        " && touch sub/inner .hidden && ln -s f.txt link && ln -s /nowhere broken",
        workdir,
    )
    uid, gid = (await sh(alice, "id", "-u")).strip(), (await sh(alice, "id", "-g")).strip()
    group = (await sh(alice, "id", "-gn")).strip()

    entries = await fs.ls(workdir)
    assert [e["name"] for e in entries] == ["broken", "f.txt", "link", "sub"]
    files = by_name(entries)
    assert files["f.txt"] == {
        "name": "f.txt",
        "type": "-",
        "user": "alice",
        "group": group,
        "permissions": "rw-r-----",
        "lastModified": "2023-11-14T22:13:20Z",
        "size": "60",  # a string, as in FirecREST
        "linkTarget": None,  # always sent, null for a file that is no link
    }
    assert files["link"]["type"] == "l" and files["link"]["linkTarget"] == "f.txt"
    assert files["broken"]["linkTarget"] == "/nowhere"
    assert files["sub"]["type"] == "d" and files["sub"]["linkTarget"] is None

    hidden = by_name(await fs.ls(workdir, showHidden="true"))
    assert ".hidden" in hidden and "." not in hidden and ".." not in hidden

    numeric = by_name(await fs.ls(workdir, numericUid="true"))
    assert (numeric["f.txt"]["user"], numeric["f.txt"]["group"]) == (uid, gid)

    recursive = [e["name"] for e in await fs.ls(workdir, recursive="true")]
    assert recursive == ["broken", "f.txt", "link", "sub", "sub/inner"]

    followed = by_name(await fs.ls(workdir, dereference="true"))
    assert followed["link"]["type"] == "-" and followed["link"]["size"] == "60"
    assert followed["link"]["linkTarget"] is None
    assert followed["broken"]["type"] == "l"  # nothing to follow: listed as itself

    # gRPC gives the same listing.
    reply = await fs.rpc("Ls", fs_pb2.LsRequest(system_name=SYSTEM, path=workdir))
    assert [f.name for f in reply.output] == ["broken", "f.txt", "link", "sub"]
    assert reply.output[1].last_modified.seconds == 1700000000
    assert reply.output[2].link_target == "f.txt"
    assert not reply.output[3].HasField("link_target")


async def test_ls_of_a_file_a_link_and_a_missing_path(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    await script(alice, 'cd -- "$1" && mkdir d && touch d/x f && ln -s d dl && ln -s f fl', workdir)
    assert [e["name"] for e in await fs.ls(f"{workdir}/f")] == [f"{workdir}/f"]
    # A link to a directory is listed as the directory; a link to a file as the link.
    assert [e["name"] for e in await fs.ls(f"{workdir}/dl")] == ["x"]
    (link,) = await fs.ls(f"{workdir}/fl")
    assert (link["name"], link["type"], link["linkTarget"]) == (f"{workdir}/fl", "l", "f")
    reply = await fs.rest("GET", "ls", params={"path": f"{workdir}/missing"})
    assert_error(reply, 404, "No such file or directory")
    error = await rpc_error(fs, "Ls", fs_pb2.LsRequest(system_name=SYSTEM, path=f"{workdir}/nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_recursive_dereferenced_ls_stops_at_link_loops(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    await script(
        alice,
        'cd -- "$1" && mkdir -p a/b && touch a/b/f && ln -s .. a/b/up && ln -s . a/self',
        workdir,
    )
    names = [e["name"] for e in await fs.ls(workdir, recursive="true", dereference="true")]
    assert names == ["a", "a/b", "a/self", "a/b/f", "a/b/up"]
    plain = [e["name"] for e in await fs.ls(workdir, recursive="true")]
    assert plain == ["a", "a/b", "a/self", "a/b/f", "a/b/up"]


async def test_ls_of_5000_entries(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    big = f"{workdir}/big"
    await script(
        alice,
        'mkdir -- "$1" && cd -- "$1" && seq 1 4950 | awk \'BEGIN { s = sprintf("%97s", "") }'
        ' { f = sprintf("f%05d", $1); printf "%s", substr(s, 1, $1 % 97) > f; close(f) }\''
        " && seq -f d%05g 1 50 | xargs mkdir && chmod 600 f0000* && chmod 751 d0001*",
        big,
    )
    found = await sh(
        alice, "find", big, "-mindepth", "1", "-printf", r"%f\t%y\t%s\t%m\t%u\t%g\t%T@\n"
    )
    expected = {}
    for line in found.splitlines():
        name, kind, size, mode, user, group, mtime = line.split("\t")
        expected[name] = {
            "name": name,
            "type": {"f": "-", "d": "d"}[kind],
            "user": user,
            "group": group,
            "permissions": stat.filemode(int(mode, 8))[1:],
            "lastModified": iso(float(mtime)),
            "size": size,
            "linkTarget": None,
        }
    assert len(expected) == 5000

    started = time.perf_counter()
    entries = await fs.ls(big)
    rest_seconds = time.perf_counter() - started
    assert len(entries) == 5000
    assert [e["name"] for e in entries] == sorted(expected)
    assert by_name(entries) == expected

    started = time.perf_counter()
    reply = await fs.rpc("Ls", fs_pb2.LsRequest(system_name=SYSTEM, path=big))
    grpc_seconds = time.perf_counter() - started
    assert len(reply.output) == 5000
    print(
        f"ls of 5,000 entries: REST {rest_seconds * 1000:.0f} ms, gRPC {grpc_seconds * 1000:.0f} ms"
    )


# -- reading ---------------------------------------------------------------------------

LINES = b"".join(b"line %d\n" % i for i in range(1, 21))


async def test_head_and_tail(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    path = f"{workdir}/lines.txt"
    await put(alice, path, LINES)
    cases: list[tuple[str, dict[str, Any], bytes, str, int, int]] = [
        ("head", {}, b"".join(LINES.splitlines(True)[:10]), "lines", 0, 10),
        ("head", {"lines": 3}, b"line 1\nline 2\nline 3\n", "lines", 0, 3),
        ("head", {"bytes": 9}, b"line 1\nli", "bytes", 0, 9),
        ("head", {"lines": 18, "skipTrailing": "true"}, b"line 1\nline 2\n", "lines", 0, -18),
        ("head", {"bytes": 150, "skipTrailing": "true"}, LINES[:-150], "bytes", 0, -150),
        ("tail", {}, b"".join(LINES.splitlines(True)[10:]), "lines", -10, -1),
        ("tail", {"lines": 2}, b"line 19\nline 20\n", "lines", -2, -1),
        ("tail", {"bytes": 4}, b" 20\n", "bytes", -4, -1),
        # As `tail --lines=+18` / `--bytes=+150`: from line 18 or byte 150 on (1-based).
        ("tail", {"lines": 18, "skipHeading": "true"}, LINES[-24:], "lines", 18, -1),
        ("tail", {"bytes": 150, "skipHeading": "true"}, LINES[149:], "bytes", 150, -1),
    ]
    for op, params, content, unit, start, end in cases:
        reply = await fs.rest("GET", op, params={"path": path, **params})
        assert reply.status_code == 200, reply.text
        assert reply.json()["output"] == {
            "content": content.decode(),
            "contentType": unit,
            "startPosition": start,
            "endPosition": end,
        }, (op, params)

    head = await fs.rpc("Head", fs_pb2.HeadRequest(system_name=SYSTEM, path=path, lines=1))
    assert head.output.content == "line 1\n"
    tail = await fs.rpc("Tail", fs_pb2.TailRequest(system_name=SYSTEM, path=path, bytes=3))
    assert tail.output.content == "20\n"

    both = await fs.rest("GET", "head", params={"path": path, "bytes": 1, "lines": 1})
    assert_error(both, 400, "Only one of `bytes` or `lines` can be specified.")
    assert_error(await fs.rest("GET", "tail", params={"path": workdir}), 400, "Is a directory")
    missing = await fs.rest("GET", "head", params={"path": f"{workdir}/nope"})
    assert_error(missing, 404, "No such file or directory")


async def test_view(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    path = f"{workdir}/lines.txt"
    await put(alice, path, LINES)
    whole = await fs.rest("GET", "view", params={"path": path})
    assert whole.status_code == 200 and whole.json() == {"output": LINES.decode()}
    part = await fs.rest("GET", "view", params={"path": path, "offset": 7, "size": 6})
    assert part.json() == {"output": "line 2"}
    past = await fs.rest("GET", "view", params={"path": path, "offset": 10_000})
    assert past.json() == {"output": ""}
    reply = await fs.rpc("View", fs_pb2.ViewRequest(system_name=SYSTEM, path=path, size=4))
    assert reply.output == "line"

    limit = fs.live.settings.systems[0].data_operation.max_ops_file_size
    for params, field in (
        ({"size": limit + 1}, "size"),
        ({"size": 0}, "size"),
        ({"offset": -1}, "offset"),
    ):
        body = assert_error(
            await fs.rest("GET", "view", params={"path": path, **params}), 400, field
        )
        assert body["data"]["fieldViolations"][0]["field"] == field


async def test_checksum_file_type_and_stat(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    path = f"{workdir}/data.txt"
    data = b"some text\n" * 100
    await put(alice, path, data)
    await sh(alice, "ln", "-s", "data.txt", f"{workdir}/link")

    reply = await fs.rest("GET", "checksum", params={"path": path})
    assert reply.json() == {
        "output": {"algorithm": "SHA256", "checksum": hashlib.sha256(data).hexdigest()}
    }
    assert_error(await fs.rest("GET", "checksum", params={"path": workdir}), 400, "Is a directory")
    missing = await fs.rest("GET", "checksum", params={"path": f"{workdir}/nope"})
    assert_error(missing, 404, "No such file or directory")

    kinds = {
        path: "ASCII text",
        workdir: "directory",
        f"{workdir}/link": "symbolic link to data.txt",
    }
    for target, kind in kinds.items():
        reply = await fs.rest("GET", "file", params={"path": target})
        assert reply.json() == {"output": kind}
    missing = await fs.rest("GET", "file", params={"path": f"{workdir}/nope"})
    assert_error(missing, 404, "No such file or directory")

    fields = ("mode", "ino", "dev", "nlink", "uid", "gid", "size", "atime", "mtime", "ctime")
    for target, follow in ((f"{workdir}/link", False), (f"{workdir}/link", True), (workdir, False)):
        options = ["-L"] if follow else []
        raw = await sh(alice, "stat", *options, "-c", "%f %i %d %h %u %g %s %X %Y %Z", "--", target)
        values = [int(v, 16) if i == 0 else int(v) for i, v in enumerate(raw.split())]
        params = {"path": target, "dereference": str(follow).lower()}
        reply = await fs.rest("GET", "stat", params=params)
        got = reply.json()["output"]
        got.pop("atime"), values.pop(7)  # reading the file may update atime
        assert got == dict(zip([f for f in fields if f != "atime"], values, strict=True))
    linked = await fs.rpc(
        "Stat", fs_pb2.StatRequest(system_name=SYSTEM, path=f"{workdir}/link", dereference=True)
    )
    assert stat.S_ISREG(linked.output.mode) and linked.output.size == len(data)
    missing = await fs.rest("GET", "stat", params={"path": f"{workdir}/nope"})
    assert_error(missing, 404, "No such file or directory")


# -- changing ---------------------------------------------------------------------------


async def test_chmod(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    path = f"{workdir}/f"
    await put(alice, path, b"x")
    reply = await fs.rest("PUT", "chmod", json={"path": path, "mode": "751"})
    assert reply.status_code == 200, reply.text
    entry = reply.json()["output"]
    assert (entry["name"], entry["permissions"], entry["user"]) == (path, "rwxr-x--x", "alice")
    assert (await sh(alice, "stat", "-c", "%a", "--", path)).strip() == "751"

    # The proto's JSON name (sourcePath) works as well as FirecREST's "path".
    reply = await fs.rest("PUT", "chmod", json={"sourcePath": path, "mode": "0600"})
    assert reply.json()["output"]["permissions"] == "rw-------"
    grpc_reply = await fs.rpc(
        "Chmod", fs_pb2.ChmodRequest(system_name=SYSTEM, path=path, mode="4700")
    )
    assert grpc_reply.output.permissions == "rws------"

    for mode in ("u+x", "888", "77777", ""):
        # No mode at all is the edge's request validation (mode is REQUIRED), as FirecREST's.
        body = assert_error(
            await fs.rest("PUT", "chmod", json={"path": path, "mode": mode}),
            400,
            "mode",
            "validation" if mode == "" else "error",
        )
        assert body["data"]["fieldViolations"][0]["field"] == "mode"
    assert (await sh(alice, "stat", "-c", "%a", "--", path)).strip() == "4700"
    missing = await fs.rest("PUT", "chmod", json={"path": f"{workdir}/nope", "mode": "700"})
    assert_error(missing, 404, "No such file or directory")


async def test_chown_is_decided_by_the_cluster(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    path = f"{workdir}/f"
    await put(alice, path, b"x")
    reply = await fs.rest("PUT", "chown", json={"path": path, "owner": "", "group": "hpcproj"})
    assert reply.status_code == 200, reply.text
    assert (reply.json()["output"]["user"], reply.json()["output"]["group"]) == ("alice", "hpcproj")
    assert (await sh(alice, "stat", "-c", "%U:%G", "--", path)).strip() == "alice:hpcproj"

    denied = await fs.rest("PUT", "chown", json={"path": path, "owner": "bob", "group": ""})
    assert_error(denied, 403, "Operation not permitted")
    error = await rpc_error(
        fs, "Chown", fs_pb2.ChownRequest(system_name=SYSTEM, path=path, owner="bob")
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    unknown = await fs.rest("PUT", "chown", json={"path": path, "owner": "", "group": "nosuchgrp"})
    assert_error(unknown, 400, "invalid group")
    assert_error(await fs.rest("PUT", "chown", json={"path": path}), 400, "owner")
    assert (await sh(alice, "stat", "-c", "%U:%G", "--", path)).strip() == "alice:hpcproj"


async def test_mkdir(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    made = await fs.rest("POST", "mkdir", json={"sourcePath": f"{workdir}/new"})
    assert made.status_code == 201, made.text
    entry = made.json()["output"]
    assert (entry["name"], entry["type"], entry["user"]) == (f"{workdir}/new", "d", "alice")

    again = await fs.rest("POST", "mkdir", json={"sourcePath": f"{workdir}/new"})
    assert_error(again, 400, "File exists")
    error = await rpc_error(
        fs, "Mkdir", fs_pb2.MkdirRequest(system_name=SYSTEM, path=f"{workdir}/new")
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    deep = f"{workdir}/a/b/c"
    orphan = await fs.rest("POST", "mkdir", json={"sourcePath": deep})
    assert_error(orphan, 404, "No such file or directory")
    nested = await fs.rest("POST", "mkdir", json={"sourcePath": deep, "parent": True})
    assert nested.status_code == 201, nested.text
    assert await exists(alice, deep)
    # mkdir -p of an existing directory is fine, of an existing file is not.
    same = await fs.rpc("Mkdir", fs_pb2.MkdirRequest(system_name=SYSTEM, path=deep, parent=True))
    assert same.output.type == "d"
    await put(alice, f"{workdir}/file", b"")
    over_file = await fs.rest(
        "POST", "mkdir", json={"sourcePath": f"{workdir}/file", "parent": True}
    )
    assert_error(over_file, 400, "File exists")
    under_file = await fs.rest("POST", "mkdir", json={"sourcePath": f"{workdir}/file/sub"})
    assert_error(under_file, 400, "Not a directory")


async def test_symlink(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    link = f"{workdir}/link"
    target = f"{workdir}/does-not-exist-yet"
    made = await fs.rest("POST", "symlink", json={"sourcePath": target, "linkPath": link})
    assert made.status_code == 201, made.text
    entry = made.json()["output"]
    assert (entry["name"], entry["type"], entry["linkTarget"]) == (link, "l", target)
    assert (await sh(alice, "readlink", "--", link)).strip() == target

    again = await fs.rest("POST", "symlink", json={"sourcePath": workdir, "linkPath": link})
    assert_error(again, 400, "File exists")
    error = await rpc_error(
        fs, "Symlink", fs_pb2.SymlinkRequest(system_name=SYSTEM, path=workdir, link_path=link)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    orphan = await fs.rest(
        "POST", "symlink", json={"sourcePath": workdir, "linkPath": f"{workdir}/no/link"}
    )
    assert_error(orphan, 404, "No such file or directory")


async def test_rm(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    await script(
        alice,
        'cd -- "$1" && touch f && ln -s f l && mkdir -p t/u && touch t/u/x && chmod 500 t/u',
        workdir,
    )
    for name in ("l", "f"):
        reply = await fs.rest("DELETE", "rm", params={"path": f"{workdir}/{name}"})
        assert reply.status_code == 204, reply.text
        assert not await exists(alice, f"{workdir}/{name}")
    # A tree with a directory alice cannot write: rm -r says so, and its file stays.
    denied = await fs.rest("DELETE", "rm", params={"path": f"{workdir}/t"})
    assert_error(denied, 403, "Permission denied")
    assert await exists(alice, f"{workdir}/t/u/x")
    await sh(alice, "chmod", "700", "--", f"{workdir}/t/u")
    await fs.rpc("Rm", fs_pb2.RmRequest(system_name=SYSTEM, path=f"{workdir}/t"))
    assert not await exists(alice, f"{workdir}/t")

    missing = await fs.rest("DELETE", "rm", params={"path": f"{workdir}/t"})
    assert_error(missing, 404, "No such file or directory")
    root = await fs.rest("DELETE", "rm", params={"path": "/home"})
    assert_error(root, 400, "filesystem root")


async def test_bob_cannot_read_or_delete_alices_private_file(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    path = f"{workdir}/secret"
    await put(alice, path, b"alice's secret\n")
    await sh(alice, "chmod", "600", "--", path)
    reads: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", op, {"path": path}) for op in ("view", "head", "tail", "checksum", "stat", "ls")
    ]
    changes: list[tuple[str, str, dict[str, Any]]] = [
        ("DELETE", "rm", {"path": path}),
        ("PUT", "chmod", {"path": path, "mode": "777"}),
    ]
    for method, op, args in reads + changes:
        query, body = (args, None) if method in ("GET", "DELETE") else (None, args)
        reply = await fs.rest(method, op, user="bob", params=query, json=body)
        assert_error(reply, 403, "Permission denied")
    error = await rpc_error(fs, "Rm", fs_pb2.RmRequest(system_name=SYSTEM, path=path), user="bob")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await sh(alice, "cat", "--", path)) == "alice's secret\n"
    assert (await sh(alice, "stat", "-c", "%a", "--", path)).strip() == "600"


# -- archives ---------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "bzip2", "xz"])
async def test_compress_and_extract(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str, compression: str
) -> None:
    await script(
        alice,
        'cd -- "$1" && mkdir -p src/sub out && echo one > src/a.txt && echo two > src/sub/b.dat'
        " && ln -s a.txt src/link",
        workdir,
    )
    archive = f"{workdir}/archive.tar"
    request = {"sourcePath": f"{workdir}/src", "targetPath": archive, "compression": compression}
    reply = await fs.rest("POST", "compress", json=request)
    assert reply.status_code == 204, reply.text
    extract = {"sourcePath": archive, "targetPath": f"{workdir}/out", "compression": compression}
    reply = await fs.rest("POST", "extract", json=extract)
    assert reply.status_code == 204, reply.text
    listed = by_name(await fs.ls(f"{workdir}/out", recursive="true"))
    assert sorted(listed) == ["src", "src/a.txt", "src/link", "src/sub", "src/sub/b.dat"]
    assert listed["src/link"]["linkTarget"] == "a.txt"
    assert await sh(alice, "cat", "--", f"{workdir}/out/src/sub/b.dat") == "two\n"


async def test_compress_with_pattern_and_dereference(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    await script(
        alice,
        'cd -- "$1" && mkdir -p src/sub out other && echo 1 > src/a.txt && echo 2 > src/b.dat'
        " && echo 3 > src/sub/c.txt && echo 4 > other/d.txt && ln -s ../other/d.txt src/e.txt",
        workdir,
    )
    archive = f"{workdir}/some.tar.gz"
    request = {
        "source_path": f"{workdir}/src",
        "target_path": archive,
        "match_pattern": r".*\.txt",
        "dereference": True,
    }
    assert (await fs.rest("POST", "compress", json=request)).status_code == 204
    await fs.rpc(
        "Extract",
        fs_pb2.ExtractRequest(
            system_name=SYSTEM, source_path=archive, target_path=f"{workdir}/out"
        ),
    )
    listed = by_name(await fs.ls(f"{workdir}/out", recursive="true"))
    assert sorted(listed) == ["src", "src/a.txt", "src/e.txt", "src/sub", "src/sub/c.txt"]
    assert listed["src/e.txt"]["type"] == "-"  # the link's target was archived
    assert "other" not in await sh(alice, "tar", "-tzf", archive)


async def test_archive_errors(fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    missing = {"sourcePath": f"{workdir}/nope", "targetPath": f"{workdir}/x.tgz"}
    assert_error(await fs.rest("POST", "compress", json=missing), 404, "No such file or directory")
    assert not await exists(alice, f"{workdir}/x.tgz")
    bad = {"sourcePath": workdir, "targetPath": f"{workdir}/x.zip", "compression": "zip"}
    body = assert_error(await fs.rest("POST", "compress", json=bad), 400, "compression")
    assert body["data"]["fieldViolations"][0]["field"] == "compression"
    await put(alice, f"{workdir}/not-an-archive", b"plain text\n")
    await sh(alice, "tar", "-czf", f"{workdir}/real.tgz", "-C", workdir, "--", "not-an-archive")
    into_missing = {"sourcePath": f"{workdir}/real.tgz", "targetPath": f"{workdir}/none"}
    reply = await fs.rest("POST", "extract", json=into_missing)
    assert_error(reply, 404, "No such file or directory")
    garbage = {"sourcePath": f"{workdir}/not-an-archive", "targetPath": workdir}
    assert_error(await fs.rest("POST", "extract", json=garbage), 400, "not in gzip format")


# -- the path policy --------------------------------------------------------------------


BAD_PATHS = [
    "relative/path",
    "/tmp/hpcgate-ops-outside",
    "/home/../tmp/hpcgate-ops-outside",
    "/home/alice/\x00x",
]


async def test_bad_paths_are_refused_naming_the_field(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    good = f"{workdir}/f"
    await put(alice, good, b"keep me\n")
    victim = f"/tmp/hpcgate-ops-victim-{uuid.uuid4().hex[:8]}"
    await put(alice, victim, b"outside\n")
    try:
        for bad in [*BAD_PATHS, victim]:
            calls: list[tuple[str, str, dict[str, Any], str]] = [
                *(
                    ("GET", op, {"path": bad}, "path")
                    for op in ("ls", "head", "tail", "view", "checksum", "file", "stat")
                ),
                ("DELETE", "rm", {"path": bad}, "path"),
                ("PUT", "chmod", {"sourcePath": bad, "mode": "777"}, "sourcePath"),
                ("PUT", "chown", {"sourcePath": bad, "group": "hpcproj"}, "sourcePath"),
                ("POST", "mkdir", {"sourcePath": bad}, "sourcePath"),
                ("POST", "symlink", {"sourcePath": bad, "linkPath": f"{workdir}/l"}, "sourcePath"),
                ("POST", "symlink", {"sourcePath": good, "linkPath": bad}, "linkPath"),
                (
                    "POST",
                    "compress",
                    {"sourcePath": bad, "targetPath": f"{workdir}/a.tgz"},
                    "sourcePath",
                ),
                ("POST", "compress", {"sourcePath": good, "targetPath": bad}, "targetPath"),
                ("POST", "extract", {"sourcePath": bad, "targetPath": workdir}, "sourcePath"),
                ("POST", "extract", {"sourcePath": good, "targetPath": bad}, "targetPath"),
            ]
            for method, op, args, field in calls:
                query, body = (args, None) if method in ("GET", "DELETE") else (None, args)
                reply = await fs.rest(method, op, params=query, json=body)
                error = assert_error(reply, 400, f"{field}: ")
                assert error["data"]["fieldViolations"][0]["field"] == field, (op, bad)
        for bad in BAD_PATHS:
            error = await rpc_error(fs, "Rm", fs_pb2.RmRequest(system_name=SYSTEM, path=bad))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert violations(error) == ["path"]
            error = await rpc_error(
                fs, "Symlink", fs_pb2.SymlinkRequest(system_name=SYSTEM, path=good, link_path=bad)
            )
            assert violations(error) == ["linkPath"]
        # Nothing changed on the cluster.
        assert await sh(alice, "cat", "--", victim) == "outside\n"
        assert (await sh(alice, "stat", "-c", "%a", "--", victim)).strip() == "644"
        assert not await exists(alice, "/tmp/hpcgate-ops-outside")
        assert await sh(alice, "ls", "-A", "--", workdir) == "f\n"
    finally:
        await sh(alice, "rm", "-f", "--", victim)


# -- adversarial names ------------------------------------------------------------------


def files_in(entries: list[dict[str, Any]]) -> list[str]:
    """Names of the regular files of a (recursive) listing."""
    return sorted(e["name"] for e in entries if e["type"] == "-")


async def make_parents(fs: Fs, root: str, name: str) -> None:
    """``mkdir -p`` through the API for names that hold a "/" (``$(touch /tmp/pwned)``)."""
    parent = posixpath.dirname(name)
    if parent:
        reply = await fs.rest(
            "POST", "mkdir", json={"sourcePath": f"{root}/{parent}", "parent": True}
        )
        assert reply.status_code == 201, reply.text


async def test_adversarial_names_round_trip(
    fs: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    files, links, out, unpacked = (f"{workdir}/{d}" for d in ("files", "links", "out", "unpacked"))
    for directory in (files, links, out, unpacked):
        assert (await fs.rest("POST", "mkdir", json={"sourcePath": directory})).status_code == 201
    contents = {name: f"content of {name!r}\n".encode() for name in ADVERSARIAL}
    for name, data in contents.items():
        await make_parents(fs, files, name)
        await put(alice, f"{files}/{name}", data)

    # ls shows every name exactly, over REST and gRPC.
    assert files_in(await fs.ls(files, recursive="true")) == sorted(ADVERSARIAL)
    request = fs_pb2.LsRequest(system_name=SYSTEM, path=files, recursive=True)
    reply = await fs.rpc("Ls", request)
    assert sorted(f.name for f in reply.output if f.type == "-") == sorted(ADVERSARIAL)

    for i, (name, data) in enumerate(contents.items()):
        path = f"{files}/{name}"
        await make_parents(fs, links, name)
        if i % 2 == 0:
            st = await fs.rpc("Stat", fs_pb2.StatRequest(system_name=SYSTEM, path=path))
            size = st.output.size
            checksum_request = fs_pb2.ChecksumRequest(system_name=SYSTEM, path=path)
            digest = (await fs.rpc("Checksum", checksum_request)).output.checksum
            chmod_request = fs_pb2.ChmodRequest(system_name=SYSTEM, path=path, mode="600")
            permissions = (await fs.rpc("Chmod", chmod_request)).output.permissions
            link_request = fs_pb2.SymlinkRequest(
                system_name=SYSTEM, path=path, link_path=f"{links}/{name}"
            )
            target = (await fs.rpc("Symlink", link_request)).output.link_target
            text = (await fs.rpc("View", fs_pb2.ViewRequest(system_name=SYSTEM, path=path))).output
        else:
            size = (await fs.rest("GET", "stat", params={"path": path})).json()["output"]["size"]
            checksum = await fs.rest("GET", "checksum", params={"path": path})
            digest = checksum.json()["output"]["checksum"]
            chmod = await fs.rest("PUT", "chmod", json={"path": path, "mode": "600"})
            permissions = chmod.json()["output"]["permissions"]
            link = await fs.rest(
                "POST", "symlink", json={"sourcePath": path, "linkPath": f"{links}/{name}"}
            )
            target = link.json()["output"]["linkTarget"]
            text = (await fs.rest("GET", "view", params={"path": path})).json()["output"]
        assert size == len(data), name
        assert digest == hashlib.sha256(data).hexdigest(), name
        assert permissions == "rw-------", name
        assert target == path, name
        assert text == data.decode(), name

    listed = await fs.ls(links, recursive="true")
    assert {e["name"]: e["linkTarget"] for e in listed if e["type"] == "l"} == {
        name: f"{files}/{name}" for name in ADVERSARIAL
    }

    # Directories with these names through mkdir, the files through a tar round trip.
    for name in ADVERSARIAL:
        made = await fs.rest("POST", "mkdir", json={"sourcePath": f"{out}/{name}", "parent": True})
        assert made.status_code == 201, (name, made.text)
        assert (await fs.ls(f"{out}/{name}")) == []
    archive = f"{workdir}/names.tar.gz"
    compressed = await fs.rest(
        "POST", "compress", json={"sourcePath": files, "targetPath": archive}
    )
    assert compressed.status_code == 204, compressed.text
    await fs.rpc(
        "Extract",
        fs_pb2.ExtractRequest(system_name=SYSTEM, source_path=archive, target_path=unpacked),
    )
    assert files_in(await fs.ls(f"{unpacked}/files", recursive="true")) == sorted(ADVERSARIAL)
    for name, data in contents.items():
        reply = await fs.rest("GET", "checksum", params={"path": f"{unpacked}/files/{name}"})
        assert reply.json()["output"]["checksum"] == hashlib.sha256(data).hexdigest(), name

    # Small upload and download (the streams helper's RPCs) of the same names. Upload
    # over gRPC: a multipart filename cannot carry '"' or a newline verbatim (HTML5
    # form encoding turns them into %22 and %0A).
    uploaded = f"{workdir}/uploaded"
    assert (await fs.rest("POST", "mkdir", json={"sourcePath": uploaded})).status_code == 201
    for name, data in contents.items():
        await make_parents(fs, uploaded, name)
        directory, base = posixpath.split(f"{uploaded}/{name}")
        upload = fs_pb2.UploadRequest(
            system_name=SYSTEM,
            path=directory,
            file=options_pb2.UploadedFile(filename=base, content=data),
        )
        await fs.rpc("Upload", upload)
        download = await fs.rest("GET", "download", params={"path": f"{uploaded}/{name}"})
        assert (download.status_code, download.content) == (200, data), name
        fetch = fs_pb2.DownloadRequest(system_name=SYSTEM, path=f"{uploaded}/{name}")
        assert (await fs.rpc("Download", fetch)).data == data, name
    assert files_in(await fs.ls(uploaded, recursive="true")) == sorted(ADVERSARIAL)

    # rm removes exactly the named file (or directory); the others stay until their turn.
    for i, name in enumerate(ADVERSARIAL):
        for root in (files, out):
            if i % 2:
                removed = await fs.rest("DELETE", "rm", params={"path": f"{root}/{name}"})
                assert removed.status_code == 204, (name, removed.text)
            else:
                await fs.rpc("Rm", fs_pb2.RmRequest(system_name=SYSTEM, path=f"{root}/{name}"))
        remaining = files_in(await fs.ls(files, recursive="true"))
        assert remaining == sorted(ADVERSARIAL[i + 1 :]), name
        assert not await exists(alice, f"{out}/{name}")
    assert not await exists(alice, PWNED)


# -- limits: remote timeout and size --------------------------------------------------------


@pytest.fixture(scope="module")
async def strict(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fs]:
    """A second service on the cluster with a 2 s command timeout and a 1,000-byte limit."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("strict") / "jwks.json"
    issuer.write_jwks(jwks)
    config = local_config(cluster.raw, jwks)
    system = config["systems"][0]
    system["ssh"]["timeouts"] = {"command": 2}
    system["data_operation"] = {"max_ops_file_size": 1000}
    system["probing"] = {"interval": 60, "timeout": 5}
    async for service in start_service(parse_config(config)):
        live = LiveService(**vars(service), issuer=issuer, system=SYSTEM)
        async with httpx.AsyncClient(base_url=live.rest_url, timeout=60) as http:
            yield _fs(live, http)


async def test_remote_timeout_is_408(
    strict: Fs, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    huge = f"{workdir}/sparse"
    await sh(alice, "truncate", "-s", "64G", "--", huge)  # sha256sum needs far more than 2 s
    started = time.monotonic()
    reply = await strict.rest("GET", "checksum", params={"path": huge})
    assert_error(reply, 408, "sha256sum")
    assert time.monotonic() - started < 30
    error = await rpc_error(
        strict, "Checksum", fs_pb2.ChecksumRequest(system_name=SYSTEM, path=huge)
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_size_limit(strict: Fs, alice: asyncssh.SSHClientConnection, workdir: str) -> None:
    path = f"{workdir}/big.txt"
    await put(alice, path, b"0123456789" * 300)
    view = await strict.rest("GET", "view", params={"path": path})
    assert_error(view, 413, "more than the limit of 1000")  # as FirecREST, never cut silently
    view = await strict.rest("GET", "view", params={"path": path, "size": 1000})
    assert view.json() == {"output": "0123456789" * 100}  # maxOpsFileSize bytes at most
    too_much = await strict.rest("GET", "view", params={"path": path, "size": 1001})
    assert_error(too_much, 400, "size")
    head = await strict.rest("GET", "head", params={"path": path, "bytes": 2000})
    assert_error(head, 413, "more than the limit of 1000")
    tail = await strict.rest("GET", "tail", params={"path": path, "lines": 1})
    assert_error(tail, 413, "more than the limit of 1000")
