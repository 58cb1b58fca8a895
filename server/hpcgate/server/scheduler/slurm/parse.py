"""Parsers of Slurm command output. Pure functions, tested on real output.

``sinfo --json`` gives nodes; ``scontrol --oneliner`` gives partitions and
reservations as ``Key=Value`` pairs (22.05's scontrol has no ``--json``);
``id`` and ``sacctmgr --parsable2`` give the user's identity and accounts.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from hpcgate.server.scheduler.cluster import (
    Account,
    Node,
    Partition,
    PosixId,
    Reservation,
    UserInfo,
)

# FirecREST's NodeState values; Slurm's base states and flags map onto them.
_BASE_STATES = {
    "IDLE": "IDLE",
    "ALLOCATED": "ALLOCATED",
    "ALLOC": "ALLOCATED",
    "MIXED": "MIXED",
    "MIX": "MIXED",
    "DOWN": "DOWN",
    "ERROR": "DOWN",
    "FUTURE": "UNKNOWN",
    "UNKNOWN": "UNKNOWN",
}
_FLAG_STATES = {
    "DRAIN": "DRAIN",
    "DRAINING": "DRAIN",
    "DRAINED": "DRAIN",
    "NOT_RESPONDING": "OFFLINE",
    "RESERVED": "RESERVED",
    "MAINTENANCE": "RESERVED",
    "COMPLETING": "COMPLETING",
    "POWERING_DOWN": "POWERING_DOWN",
    "POWER_DOWN": "POWERING_DOWN",
    "POWERED_DOWN": "POWERING_DOWN",
    "POWERING_UP": "POWERING_UP",
    "REBOOT_REQUESTED": "BUSY",
    "REBOOT_ISSUED": "BUSY",
}
# Slurm's "no value" sentinels in JSON (NO_VAL, INFINITE for 16/32-bit fields).
_NO_VALUES = {65534, 65535, 4294967294, 4294967295}


def node_states(base: str, flags: list[str]) -> list[str]:
    """FirecREST's node-state list for Slurm's base state and flags."""
    states = [_BASE_STATES.get(base.upper().rstrip("*~#!%$@^-"), "UNKNOWN")]
    for flag in flags:
        mapped = _FLAG_STATES.get(flag.upper())
        if mapped and mapped not in states:
            states.append(mapped)
    return states


def number(value: Any) -> int | None:
    """A Slurm JSON count (plain, or {"set", "number"}); None when unset or infinite."""
    if isinstance(value, dict):  # newer Slurm: {"set": true, "number": n}
        value = value.get("number") if value.get("set") else None
    if not isinstance(value, int | float) or value in _NO_VALUES or value < 0:
        return None
    return int(value)


def nodes_from_sinfo_json(text: str) -> list[Node]:
    """Nodes from ``sinfo --json`` (22.05: a top-level ``nodes`` list)."""
    return nodes_from_sinfo(json.loads(text))


def nodes_from_sinfo(data: dict[str, Any]) -> list[Node]:
    """Nodes of a nodes document (``sinfo --json``, slurmrestd's ``/slurm/vX/nodes``)."""
    nodes = []
    for raw in data.get("nodes") or []:
        load = number(raw.get("cpu_load"))
        state = raw.get("state", "unknown")
        base = state[0] if isinstance(state, list) and state else str(state)
        flags = list(raw.get("state_flags", []))
        if isinstance(state, list):
            flags += state[1:]
        nodes.append(
            Node(
                name=raw["name"],
                state=node_states(base, flags),
                cpus=number(raw.get("cpus")) or 0,
                sockets=number(raw.get("sockets")),
                cores=number(raw.get("cores")),
                threads=number(raw.get("threads")),
                cpu_load=None if load is None else load / 100.0,  # Slurm reports load x 100
                free_memory=number(raw.get("free_memory")),
                alloc_memory=number(raw.get("alloc_memory")),
                alloc_cpus=number(raw.get("alloc_cpus")),
                idle_cpus=number(raw.get("idle_cpus")),
                features=raw.get("active_features") or raw.get("features") or None,
                address=raw.get("address") or None,
                hostname=raw.get("hostname") or None,
                partitions=list(raw.get("partitions", [])),
                weight=number(raw.get("weight")),
            )
        )
    return nodes


_PAIR = re.compile(r"(\w+)=((?:\([^)]*\)|[^ ])*)")


def key_values(line: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol --oneliner`` record."""
    return {key: value for key, value in _PAIR.findall(line)}


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def partitions_from_scontrol(text: str) -> list[Partition]:
    """Partitions from ``scontrol --oneliner show partition``."""
    partitions = []
    for line in text.splitlines():
        record = key_values(line)
        if "PartitionName" not in record:
            continue
        partitions.append(
            Partition(
                name=record["PartitionName"],
                partition=record.get("State", "UNKNOWN"),
                cpus=_int_or_none(record.get("TotalCPUs")),
                total_nodes=_int_or_none(record.get("TotalNodes")),
            )
        )
    return partitions


def _epoch(text: str) -> int:
    # scontrol prints local time without a zone; the server and the cluster
    # agree on it because the command runs on the cluster's login node.
    return int(datetime.fromisoformat(text).timestamp()) if text and text[0].isdigit() else 0


def _null(text: str | None) -> str | None:
    return None if text in (None, "", "(null)") else text


def reservations_from_scontrol(text: str) -> list[Reservation]:
    """Reservations from ``scontrol --oneliner show reservation``."""
    found = []
    for line in text.splitlines():
        record = key_values(line)
        if "ReservationName" not in record:
            continue
        found.append(
            Reservation(
                name=record["ReservationName"],
                node_list=record.get("Nodes", ""),
                start_time=_epoch(record.get("StartTime", "")),
                end_time=_epoch(record.get("EndTime", "")),
                features=_null(record.get("Features")),
                state=(_null(record.get("State")) or "").lower() or None,
            )
        )
    return found


_ID = re.compile(r"(\d+)\(([^)]*)\)")


def user_info(id_output: str, accounts_output: str, default_account: str) -> UserInfo:
    """The user from ``id`` output and ``sacctmgr -nP`` association lines."""
    fields = dict(part.split("=", 1) for part in id_output.split() if "=" in part)
    user = PosixId(*_ID.findall(fields["uid"])[0])
    group = PosixId(*_ID.findall(fields["gid"])[0])
    groups = [PosixId(gid, name) for gid, name in _ID.findall(fields.get("groups", ""))]
    names = sorted({line.split("|", 1)[0] for line in accounts_output.splitlines() if line.strip()})
    accounts = [Account(name=n, is_default=n == default_account) for n in names]
    return UserInfo(user=user, group=group, groups=groups, accounts=accounts)
