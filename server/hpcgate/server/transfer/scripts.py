"""The batch scripts of transfer jobs: fixed bash bodies below quoted variables.

A script is ``#!/bin/bash``, the system's directives, then one assignment
per variable (every value through :func:`shlex.quote`, arrays element by
element), then ``scripts/common.sh`` and the operation's body. The bodies
are static files: no request value is ever pasted into code, so a path or
a URL can hold any character. Command lines are argv arrays built here and
run as ``"${command[@]}"``.

Before a job acts it checks, in ``common.sh``'s ``confine``, that each of
its paths leads (links followed, where the operation follows them) under
one of the system's ``roots``, as the server checked when it was submitted:
a link may have appeared since.
"""

from __future__ import annotations

import functools
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from importlib import resources

from hpcgate.server.filesystem.parse import tar_compression
from hpcgate.server.transferconfig import StreamerMethodConfig, WormholeMethodConfig

Value = str | int | Sequence[str]

# What each operation's log says when (and only when) it succeeded. The
# words are FirecREST's, which pyfirecrest looks for.
SUCCESS = {
    "cp": "Files were successfully copied.",
    "mv": "Files were successfully moved.",
    "rm": "Files were successfully removed.",
    "compress": "Files were successfully compressed.",
    "extract": "Files were successfully extracted.",
}

# What a download's job logs just before it completes its multipart upload.
# While S3 completes it (seconds, for a large object) neither the open upload
# nor the object is listed: the server reads this line as "being completed",
# not as "gone" (``transfer/progress.py``).
COMPLETING = "completing the multipart upload"
# How a job's failure line starts (``fail`` in ``scripts/common.sh``): the job
# has given up and is ending; its own exit aborts what it staged.
FAILED = "FAILED: "


@functools.cache
def _body(name: str) -> str:
    return (resources.files(__package__) / "scripts" / name).read_text()


def render(
    operation: str, directives: Sequence[str], variables: Mapping[str, Value], body: str
) -> str:
    """The script of an ``operation`` job: directives, quoted variables, common code, body."""
    lines = ["#!/bin/bash", *directives, f"# hpcgate {operation} job, written by the server"]
    assigned = {"operation": operation, **variables}
    for name, value in assigned.items():
        if isinstance(value, str | int):
            lines.append(f"{name}={shlex.quote(str(value))}")
        else:
            lines.append(f"{name}=(")
            lines.extend(f"  {shlex.quote(item)}" for item in value)
            lines.append(")")
    return "\n".join(lines) + "\n" + _body("common.sh") + _body(body)


def leads(path: str) -> str:
    """A ``confined`` item: where ``path`` leads, every link followed, must be inside."""
    return "F" + path


def entry(path: str) -> str:
    """A ``confined`` item: the entry ``path`` itself (its directory resolved) must be inside."""
    return "E" + path


def command(
    operation: str,
    directives: Sequence[str],
    argv: Sequence[str],
    *,
    roots: Sequence[str],
    confined: Sequence[str],
    tree: str = "",
    members_of: Sequence[str] = (),
) -> str:
    """A job running ``argv`` that reports :data:`SUCCESS` for ``operation`` when it exits 0.

    First it checks the ``confined`` items (:func:`leads`, :func:`entry`)
    against ``roots``, with ``tree`` every place under it (links followed),
    and with ``members_of`` (archive, target, tar options) the archive's
    members, as ``common.sh``'s ``check_archive`` does.
    """
    variables: dict[str, Value] = {
        "command": argv,
        "success": SUCCESS[operation],
        "roots": roots,
        "confined": confined,
        "tree": tree,
        "members_of": members_of,
    }
    return render(operation, directives, variables, "command.sh")


def cp(
    directives: Sequence[str], source: str, target: str, dereference: bool, *, roots: Sequence[str]
) -> str:
    """``cp -r`` (``-L`` with ``dereference``: follow every symbolic link)."""
    follow = ["-L"] if dereference else []
    argv = ["cp", "-r", *follow, "--", source, target]
    confined = [leads(source), leads(target)]
    tree = source if dereference else ""
    return command("cp", directives, argv, roots=roots, confined=confined, tree=tree)


def mv(directives: Sequence[str], source: str, target: str, *, roots: Sequence[str]) -> str:
    argv = ["mv", "--", source, target]
    return command("mv", directives, argv, roots=roots, confined=[entry(source), leads(target)])


def rm(directives: Sequence[str], path: str, *, roots: Sequence[str]) -> str:
    return command("rm", directives, ["rm", "-r", "--", path], roots=roots, confined=[entry(path)])


def extract(
    directives: Sequence[str], source: str, target: str, compression: str, *, roots: Sequence[str]
) -> str:
    """``tar -x`` of ``source`` into the directory ``target``."""
    flags = tar_compression(compression)
    argv = ["tar", "-x", *flags, "-f", source, "-C", target]
    confined = [leads(source), leads(target)]
    members = [source, target, *flags]
    return command("extract", directives, argv, roots=roots, confined=confined, members_of=members)


def compress(
    directives: Sequence[str],
    source: str,
    target: str,
    *,
    match_pattern: str | None,
    dereference: bool,
    compression: str,
    roots: Sequence[str],
) -> str:
    """``tar -c`` of ``source`` into ``target``, members named from source's parent.

    As the Filesystem service's compress: with ``match_pattern`` only the
    regular files whose path matches it (``find -regex``) are archived.
    """
    options = [*tar_compression(compression), *(["--dereference"] if dereference else [])]
    parent, base = posixpath.split(source)
    find = ["find", *(["-L"] if dereference else []), source, "-type", "f"]
    if match_pattern:
        find += ["-regex", match_pattern, "-printf", "%P\\0"]
    variables: dict[str, Value] = {
        "source": source,
        "target": target,
        "parent": parent or "/",
        "base": base,
        "tar_options": options,
        "pattern": match_pattern or "",
        "find_command": find if match_pattern else [],
        "success": SUCCESS["compress"],
        "roots": roots,
        "confined": [entry(source), leads(target)],
        "tree": source if dereference else "",
    }
    return render("compress", directives, variables, "compress.sh")


def ingress(
    directives: Sequence[str],
    *,
    target: str,
    size: int,
    part_size: int,
    parts: int,
    give_up_at: int,
    head_url: str,
    get_url: str,
    abort_url: str,
    parts_url: str,
) -> str:
    """The upload job: wait for the client's upload, fetch, verify, rename onto ``target``."""
    variables: dict[str, Value] = {
        "target": target,
        "size": size,
        "part_size": part_size,
        "parts": parts,
        "give_up_at": give_up_at,
        "head_url": head_url,
        "get_url": get_url,
        "abort_url": abort_url,
        "parts_url": parts_url,
    }
    return render("upload", directives, variables, "ingress.sh")


def egress(
    directives: Sequence[str],
    *,
    source: str,
    size: int,
    part_size: int,
    part_urls: Sequence[str],
    complete_url: str,
    abort_url: str,
    delete_url: str,
) -> str:
    """The download job: stage ``source`` in the bucket part by part, verified."""
    variables: dict[str, Value] = {
        "source": source,
        "size": size,
        "part_size": part_size,
        "parts": len(part_urls),
        "part_urls": part_urls,
        "complete_url": complete_url,
        "abort_url": abort_url,
        "delete_url": delete_url,
        "completing": COMPLETING,
    }
    return render("download", directives, variables, "egress.sh")


def streamer(
    directives: Sequence[str],
    *,
    direction: str,
    path: str,
    size: int,
    secret: str,
    method: StreamerMethodConfig,
) -> str:
    """A streamer job: ``receive`` (an upload to ``path``) or ``send`` (a download of it)."""
    first, last = method.port_range
    variables: dict[str, Value] = {
        "direction": direction,
        "path": path,
        "size": size,
        "secret": secret,
        "host": method.host,
        "ports": f"{first} {last}",
        "public_ips": method.public_ips,
        "wait_timeout": method.wait_timeout,
        "inbound_limit": method.inbound_transfer_limit,
        "python": method.python or "",
        "package": method.package,
        "pypi_index_url": method.pypi_index_url or "",
        "job": _body("streamer_job.py"),
    }
    operation = "upload" if direction == "receive" else "download"
    return render(operation, directives, variables, "streamer.sh")


def wormhole(
    directives: Sequence[str],
    *,
    direction: str,
    path: str,
    code: str,
    method: WormholeMethodConfig,
) -> str:
    """A wormhole job: ``receive`` (an upload to ``path``) or ``send`` (a download of it).

    The code is on the job's ``wormhole`` command line, as in FirecREST's
    job: the wormhole CLI takes it no other way.
    """
    variables: dict[str, Value] = {
        "direction": direction,
        "path": path,
        "code": code,
        "relay_url": method.relay_url or "",
        "transit_helper": method.transit_helper or "",
        "transfer_timeout": method.transfer_timeout,
        "command": method.command or "",
        "package": method.package,
        "pypi_index_url": method.pypi_index_url or "",
    }
    operation = "upload" if direction == "receive" else "download"
    return render(operation, directives, variables, "wormhole.sh")
