"""How the CLI shows results: Rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from hpcgate.v1 import scheduler_pb2

console = Console()
errors = Console(stderr=True)


def as_data(value: Message | Sequence[Message] | dict[str, Any]) -> Any:
    """Messages as the JSON the REST edge would give (proto field names)."""
    if isinstance(value, Message):
        return MessageToDict(value, preserving_proto_field_name=True)
    if isinstance(value, dict):
        return value
    return [as_data(item) for item in value]


def emit_json(value: Message | Sequence[Message] | dict[str, Any]) -> None:
    """Print ``value`` as one JSON document on stdout."""
    print(json.dumps(as_data(value), indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A Rich table of ``rows``."""
    out = Table(title=title)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(str(cell) for cell in row))
    return out


def state_name(state: int) -> str:
    """``JOB_STATE_RUNNING`` as ``RUNNING``."""
    return scheduler_pb2.JobState.Name(state).removeprefix("JOB_STATE_")  # type: ignore[arg-type]


def transfer_progress() -> Progress:
    """A progress bar showing bytes, rate and time remaining."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
    )
