"""The ``hpcgate`` commands: one Typer command per user action, over ``hpcgate.client``.

Global options pick the profile (``--profile``, default ``$HPCGATE_PROFILE``
or ``default``), override its system (``--system``) and switch the output to
JSON (``--json``). Errors are turned into one line and an exit code by
:mod:`hpcgate.cli.__main__`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from hpcgate.cli import output, profiles
from hpcgate.client import Client, HpcgateError
from hpcgate.v1 import filesystem_pb2, scheduler_pb2, status_pb2, transfer_pb2

F, S = filesystem_pb2, scheduler_pb2
app = typer.Typer(
    name="hpcgate", help="Files and jobs on HPC clusters through hpcgate.", no_args_is_help=True
)


@dataclass
class State:
    """The global options, handed to every command."""

    profile: str
    system: str | None
    json: bool

    def client(self) -> Client:
        """A client for the chosen profile."""
        chosen = profiles.load(self.profile)
        return Client(
            chosen.target,
            chosen.token_source(),
            system=self.system or chosen.system,
            tls=chosen.tls,
            root_certificates=Path(chosen.root_certificates) if chosen.root_certificates else None,
        )


def _state(ctx: typer.Context) -> State:
    state: State = ctx.obj
    return state


@app.callback()
def main(
    ctx: typer.Context,
    profile: Annotated[
        str, typer.Option(envvar="HPCGATE_PROFILE", help="Profile (site) to use.")
    ] = "default",
    system: Annotated[str | None, typer.Option(help="System, instead of the profile's.")] = None,
    json: Annotated[bool, typer.Option("--json", help="JSON output, for scripts.")] = False,
) -> None:
    """Files and jobs on HPC clusters through hpcgate."""
    ctx.obj = State(profile, system, json)


@app.command()
def login(
    ctx: typer.Context,
    target: Annotated[str, typer.Option(help="host:port of the hpcgate server.")],
    system: Annotated[str | None, typer.Option(help="Default system of the profile.")] = None,
    token: Annotated[str | None, typer.Option(help="A bearer token.")] = None,
    token_file: Annotated[str | None, typer.Option(help="A file holding the token.")] = None,
    token_url: Annotated[str | None, typer.Option(help="OAuth2 token endpoint.")] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth2 client id.")] = None,
    client_secret: Annotated[
        str | None, typer.Option(envvar="HPCGATE_CLIENT_SECRET", help="OAuth2 client secret.")
    ] = None,
    tls: Annotated[bool, typer.Option(help="Connect over TLS.")] = False,
    ca: Annotated[str | None, typer.Option(help="CA certificates (PEM) for TLS.")] = None,
) -> None:
    """Save a profile, then check it by listing the systems."""
    state = _state(ctx)
    profile = profiles.Profile(
        target, system, tls, ca, token, token_file, token_url, client_id, client_secret
    )
    profile.token_source()  # has credentials at all
    path = profiles.save(state.profile, profile)
    systems(ctx)
    if not state.json:
        output.errors.print(f"profile {state.profile!r} saved in {path}")


@app.command()
def systems(ctx: typer.Context) -> None:
    """The systems of the site and their health."""
    state = _state(ctx)
    with state.client() as client:
        reply = client.status.ListSystems(status_pb2.ListSystemsRequest())
    if state.json:
        return output.emit_json(reply)
    rows = [
        (
            s.name,
            ", ".join(
                f"{h.service_type}:{'ok' if h.healthy else 'DOWN'}" for h in s.services_health
            ),
        )
        for s in reply.systems
    ]
    output.console.print(output.table("systems", ["name", "health"], rows))


@app.command()
def ls(
    ctx: typer.Context,
    path: str,
    all: Annotated[bool, typer.Option("-a", "--all", help="Show hidden files.")] = False,
) -> None:
    """List a directory."""
    state = _state(ctx)
    with state.client() as client:
        request = F.LsRequest(system_name=client.resolve_system(None), path=path, show_hidden=all)
        reply = client.filesystem.Ls(request)
    if state.json:
        return output.emit_json(list(reply.output))
    rows = [(f.permissions, f.user, f.group, f.size, f.name) for f in reply.output]
    output.console.print(output.table(path, ["mode", "user", "group", "size", "name"], rows))


@app.command()
def stat(ctx: typer.Context, path: str) -> None:
    """Show a file's status (mode, size, times)."""
    state = _state(ctx)
    with state.client() as client:
        reply = client.filesystem.Stat(
            F.StatRequest(system_name=client.resolve_system(None), path=path)
        )
    if state.json:
        return output.emit_json(reply.output)
    out = reply.output
    rows = [("mode", oct(out.mode)), ("size", out.size), ("uid", out.uid), ("mtime", out.mtime)]
    output.console.print(output.table(path, ["field", "value"], rows))


@app.command()
def cat(ctx: typer.Context, path: str) -> None:
    """Print a (small) file."""
    state = _state(ctx)
    with state.client() as client:
        reply = client.filesystem.View(
            F.ViewRequest(system_name=client.resolve_system(None), path=path)
        )
    if state.json:
        return output.emit_json(reply)
    print(reply.output, end="")


@app.command()
def head(
    ctx: typer.Context,
    path: str,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines to show.")] = 10,
) -> None:
    """Print the first lines of a file."""
    state = _state(ctx)
    with state.client() as client:
        request = F.HeadRequest(system_name=client.resolve_system(None), path=path, lines=lines)
        reply = client.filesystem.Head(request)
    if state.json:
        return output.emit_json(reply)
    print(reply.output.content, end="")


@app.command()
def tail(
    ctx: typer.Context,
    path: str,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines to show.")] = 10,
) -> None:
    """Print the last lines of a file."""
    state = _state(ctx)
    with state.client() as client:
        request = F.TailRequest(system_name=client.resolve_system(None), path=path, lines=lines)
        reply = client.filesystem.Tail(request)
    if state.json:
        return output.emit_json(reply)
    print(reply.output.content, end="")


@app.command()
def put(ctx: typer.Context, local: Path, remote: str) -> None:
    """Upload a file, with a progress bar."""
    state = _state(ctx)
    with state.client() as client, output.transfer_progress() as bar:
        task = bar.add_task(f"put {local.name}", total=local.stat().st_size)
        reply = client.upload(
            local, remote, progress=lambda done, _: bar.update(task, completed=done)
        )
    if state.json:
        output.emit_json(reply)


@app.command()
def get(
    ctx: typer.Context,
    remote: Annotated[list[str], typer.Argument(help="Remote file(s); with --many, several.")],
    local: Annotated[
        Path, typer.Option("-o", "--output", help="Local file or directory.")
    ] = Path(),
    many: Annotated[bool, typer.Option("--many", help="Many files in one bulk call.")] = False,
) -> None:
    """Download a file (or, with --many, many files into a directory), with progress."""
    state = _state(ctx)
    with state.client() as client, output.transfer_progress() as bar:
        if many:
            local.mkdir(parents=True, exist_ok=True)
            task = bar.add_task(f"get {len(remote)} files", total=None)
            result = client.download_many(
                remote, local, progress=lambda done, _: bar.update(task, completed=done)
            )
            if result.errors:
                first = next(iter(result.errors.items()))
                raise HpcgateError(
                    f"{len(result.errors)} files failed, first {first[0]}: {first[1]}"
                )
            if state.json:
                output.emit_json({"files": [str(path) for path in result.files]})
            return
        if len(remote) != 1:
            raise typer.BadParameter("one remote file, or --many", param_hint="remote")
        target = local / Path(remote[0]).name if local.is_dir() else local
        task = bar.add_task(f"get {Path(remote[0]).name}", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        path = client.download(remote[0], target, progress=advance)
    if state.json:
        output.emit_json({"path": str(path)})


@app.command()
def submit(
    ctx: typer.Context,
    script: Annotated[Path, typer.Argument(help="Local batch script.")],
    workdir: Annotated[str, typer.Option(help="Working directory on the system.")],
    name: Annotated[str | None, typer.Option(help="Job name.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to end.")] = False,
) -> None:
    """Submit a batch script; prints the job id."""
    state = _state(ctx)
    fields = {"name": name} if name else {}
    with state.client() as client:
        job = client.submit(script.read_text(), working_directory=workdir, **fields)
        final = job.wait() if wait else None
    if state.json:
        body: dict[str, object] = {"job_id": job.job_id}
        if final is not None:
            body["state"] = output.state_name(final.status.normalized_state)
        return output.emit_json(body)
    print(job.job_id)
    if final is not None:
        print(output.state_name(final.status.normalized_state))


@app.command()
def jobs(ctx: typer.Context) -> None:
    """The caller's jobs."""
    state = _state(ctx)
    with state.client() as client:
        reply = client.scheduler.ListJobs(
            S.ListJobsRequest(system_name=client.resolve_system(None))
        )
    if state.json:
        return output.emit_json(list(reply.jobs))
    rows = [_job_row(job) for job in reply.jobs]
    output.console.print(output.table("jobs", ["id", "name", "state"], rows))


def _job_row(job: scheduler_pb2.JobModel) -> tuple[int, str, str]:
    return job.job_id, job.name, output.state_name(job.status.normalized_state)


@app.command()
def watch(
    ctx: typer.Context,
    job_ids: Annotated[list[int], typer.Argument(help="Jobs to watch, until all end.")],
) -> None:
    """A live table of job states, updated from the WatchJobs stream."""
    state = _state(ctx)
    rows: dict[int, scheduler_pb2.JobModel] = {}
    with state.client() as client, Live(console=output.console, auto_refresh=False) as live:
        handles = [client.job(job_id) for job_id in job_ids]
        # One stream per job (each reconnects on its own); threads keep them concurrent.
        lock = threading.Lock()

        def follow(index: int) -> None:
            for event in handles[index].watch():
                with lock:
                    rows[event.job.job_id] = event.job
                    shown = [_job_row(rows[i]) for i in job_ids if i in rows]
                    live.update(output.table("jobs", ["id", "name", "state"], shown), refresh=True)
                    if state.json:
                        output.emit_json(event)

        with ThreadPoolExecutor(max_workers=len(handles)) as pool:
            list(pool.map(follow, range(len(handles))))


@app.command()
def cancel(ctx: typer.Context, job_id: int) -> None:
    """Cancel a job."""
    with _state(ctx).client() as client:
        client.job(job_id).cancel()


@app.command()
def rm(ctx: typer.Context, path: str) -> None:
    """Remove a file or a directory tree."""
    with _state(ctx).client() as client:
        client.filesystem.Rm(F.RmRequest(system_name=client.resolve_system(None), path=path))


@app.command()
def mkdir(
    ctx: typer.Context,
    path: str,
    parents: Annotated[bool, typer.Option("-p", "--parents", help="Make parents too.")] = False,
) -> None:
    """Make a directory."""
    with _state(ctx).client() as client:
        request = F.MkdirRequest(system_name=client.resolve_system(None), path=path, parent=parents)
        client.filesystem.Mkdir(request)


def _transfer(ctx: typer.Context, verb: str, source: str, target: str) -> None:
    state = _state(ctx)
    with state.client() as client:
        system = client.resolve_system(None)
        paths: dict[str, Any] = {
            "system_name": system,
            "source_path": source,
            "target_path": target,
        }
        if verb == "mv":
            started = client.transfer.Mv(transfer_pb2.TransferMvRequest(**paths)).transfer_job
        else:
            started = client.transfer.Cp(transfer_pb2.TransferCpRequest(**paths)).transfer_job
        job = client.job(started.job_id)
        final = job.wait()
    if state.json:
        return output.emit_json(final)
    if final.status.normalized_state != S.JOB_STATE_COMPLETED:
        raise HpcgateError(f"{verb} job {job.job_id} ended {final.status.state}")


@app.command()
def mv(ctx: typer.Context, source: str, target: str) -> None:
    """Move or rename (a transfer job on the system); waits for it."""
    _transfer(ctx, "mv", source, target)


@app.command()
def cp(ctx: typer.Context, source: str, target: str) -> None:
    """Copy (a transfer job on the system); waits for it."""
    _transfer(ctx, "cp", source, target)
