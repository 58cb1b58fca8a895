"""The per-user SSH pool against the loopback cluster's real sshd.

Logins use certificates minted by the pool from the cluster's user CA. Limits
and fairness are asserted on the pool's own counters, never on timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import asyncssh
import pytest
from prometheus_client import REGISTRY

from hpcgate.server.config import parse_config
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.ssh import PoolManager, SSHPool, UserStats, deadline_after

if TYPE_CHECKING:
    from cluster_fixture import Cluster

pytestmark = pytest.mark.asyncio

PWNED = Path("/tmp/pwned-pool")
_names = itertools.count()


class MakePool(Protocol):
    """Builds an SSHPool on the cluster with the given limits (see the fixture)."""

    def __call__(
        self,
        *,
        max_connections: int = 4,
        max_channels: int = 10,
        max_sftp_requests: int = 64,
        idle: float = 60.0,
        known_hosts_entry: str | None = None,
        port: int | None = None,
        proxy_jump: str | None = None,
    ) -> SSHPool: ...


@contextlib.contextmanager
def unused_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


@pytest.fixture
async def make_pool(cluster: Cluster) -> AsyncIterator[MakePool]:
    """Pools on the cluster's sshd (each under its own system name), closed afterwards."""
    managers: list[PoolManager] = []

    def make(
        *,
        max_connections: int = 4,
        max_channels: int = 10,
        max_sftp_requests: int = 64,
        idle: float = 60.0,
        known_hosts_entry: str | None = None,
        port: int | None = None,
        proxy_jump: str | None = None,
    ) -> SSHPool:
        ssh: dict[str, Any] = {
            "host": cluster.ssh.host,
            "port": port or cluster.ssh.port,
            "proxy_jump": proxy_jump,
            "timeouts": {"connect": 10, "login": 10, "command": 30, "idle": idle},
            "pool": {
                "max_connections": max_connections,
                "max_channels": max_channels,
                "max_sftp_requests": max_sftp_requests,
            },
        }
        if known_hosts_entry is None:
            ssh["known_hosts"] = cluster.ssh.known_hosts
        else:
            ssh["known_hosts_entry"] = known_hosts_entry
        name = f"pooltest{next(_names)}"
        settings = parse_config(
            {
                "credentials": {"ca_key": {"file": cluster.ssh.ca_key}},
                "systems": [{"name": name, "ssh": ssh}],
            }
        )
        manager = PoolManager(settings)
        managers.append(manager)
        return manager.pool(name)

    yield make
    for manager in managers:
        await manager.close()


async def wait_until(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll ``predicate`` (bounded) until it holds."""
    end = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def user_stats(pool: SSHPool, user: str) -> UserStats:
    return pool.stats().users.get(user, UserStats())


def gauge(name: str, pool: SSHPool) -> float | None:
    return REGISTRY.get_sample_value(name, {"system": pool.name})


async def expect_error(awaitable: Awaitable[object], code: ErrorKind, reason: str) -> str:
    """Await ``awaitable``; it must raise ServiceError(code, reason). Returns the message."""
    with pytest.raises(ServiceError) as caught:
        await awaitable
    assert (caught.value.code, caught.value.reason) == (code, reason), caught.value.message
    return caught.value.message


# ------------------------------------------------------------------ identity


async def test_each_user_logs_in_as_themselves(make_pool: MakePool) -> None:
    pool = make_pool()
    alice, bob = await asyncio.gather(
        pool.run("alice", ["id", "-un"]), pool.run("bob", ["id", "-un"])
    )
    assert (alice.exit_status, alice.stdout) == (0, b"alice\n")
    assert (bob.exit_status, bob.stdout) == (0, b"bob\n")
    assert set(pool.stats().users) == {"alice", "bob"}
    assert gauge("hpcgate_ssh_connections", pool) == 2
    assert gauge("hpcgate_ssh_connections_opened_total", pool) == 2


async def test_wrong_host_key_is_refused(make_pool: MakePool, cluster: Cluster) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    entry = f"[{cluster.ssh.host}]:{cluster.ssh.port} {other}"
    pool = make_pool(known_hosts_entry=entry)
    message = await expect_error(
        pool.run("alice", ["true"]), ErrorKind.UNAVAILABLE, "SSH_HOST_KEY_MISMATCH"
    )
    assert "host key mismatch" in message
    assert pool.stats().total == UserStats()  # failed waiters leave nothing behind


async def test_login_and_connect_failures_are_mapped(make_pool: MakePool) -> None:
    pool = make_pool()
    # Valid certificate, but no such account on the cluster.
    await expect_error(
        pool.run("nosuchuser", ["true"]), ErrorKind.PERMISSION_DENIED, "SSH_AUTH_FAILED"
    )
    await expect_error(
        pool.run("-oProxyCommand=x", ["true"]),
        ErrorKind.PERMISSION_DENIED,
        "SSH_INVALID_USERNAME",
    )
    await expect_error(
        pool.run("alice", ["true"], deadline=deadline_after(-1)),
        ErrorKind.DEADLINE_EXCEEDED,
        "SSH_POOL_TIMEOUT",
    )
    assert pool.stats().users == {}  # failures leave no per-user state behind
    with unused_port() as port:
        closed = make_pool(port=port)
        await expect_error(closed.run("alice", ["true"]), ErrorKind.UNAVAILABLE, "SSH_UNREACHABLE")


async def test_proxy_jump(make_pool: MakePool, cluster: Cluster) -> None:
    # The cluster's sshd doubles as its own jump host (it allows TCP forwarding).
    pool = make_pool(proxy_jump=f"{cluster.ssh.host}:{cluster.ssh.port}")
    result = await pool.run("alice", ["id", "-un"])
    assert (result.exit_status, result.stdout) == (0, b"alice\n")
    assert user_stats(pool, "alice").connections == 1


# ------------------------------------------------------------------ limits


async def test_many_concurrent_commands_stay_within_k_connections(make_pool: MakePool) -> None:
    pool = make_pool(max_connections=4, max_channels=10)
    peak_in_use = 0

    async def monitor() -> None:
        nonlocal peak_in_use
        while True:
            stats = user_stats(pool, "alice")
            assert stats.connections + stats.connecting <= 4
            peak_in_use = max(peak_in_use, stats.channels_in_use)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(monitor())
    results = await asyncio.gather(
        *(pool.run("alice", ["cat", "/etc/hostname"]) for _ in range(300))
    )
    watcher.cancel()
    assert {(r.exit_status, r.stderr) for r in results} == {(0, b"")}
    assert len({r.stdout for r in results}) == 1
    stats = user_stats(pool, "alice")
    assert stats.peak_connections == 4  # the burst needed all of K, and never more
    assert peak_in_use == 40
    assert (stats.channels_in_use, stats.waiters) == (0, 0)


async def test_sftp_and_exec_share_a_connection_within_max_sessions(
    make_pool: MakePool, cluster: Cluster
) -> None:
    # S = MaxSessions: the open SFTP channel must count, or sshd refuses channels.
    pool = make_pool(max_connections=1, max_channels=cluster.ssh.max_sessions)
    home = cluster.users["alice"]["home"]

    async def stat_home() -> int:
        async with pool.sftp("alice") as sftp:
            attrs = await sftp.stat(home)
            assert attrs.permissions is not None
            return attrs.permissions

    outcomes = await asyncio.gather(
        *(stat_home() for _ in range(40)),
        *(pool.run("alice", ["true"]) for _ in range(40)),
    )
    assert len(outcomes) == 80
    stats = user_stats(pool, "alice")
    assert (stats.peak_connections, stats.channels_in_use) == (1, 0)


async def test_sftp_requests_share_one_channel_beyond_max_channels(
    make_pool: MakePool, cluster: Cluster
) -> None:
    # S = 2 channels: the SFTP channel and one exec. SFTP requests are not
    # channels: up to R of them are in flight on the one SFTP channel.
    pool = make_pool(max_connections=1, max_channels=2, max_sftp_requests=32)
    home = cluster.users["alice"]["home"]
    peak = 0

    async def monitor() -> None:
        nonlocal peak
        while True:
            peak = max(peak, user_stats(pool, "alice").channels_in_use)
            await asyncio.sleep(0)

    async def stat_home() -> None:
        async with pool.sftp("alice") as sftp:
            assert (await sftp.stat(home)).permissions is not None

    watcher = asyncio.create_task(monitor())
    await asyncio.gather(
        *(stat_home() for _ in range(200)), *(pool.run("alice", ["true"]) for _ in range(20))
    )
    watcher.cancel()
    assert 32 <= peak <= 33  # R SFTP requests, and at most the one exec beside them
    stats = user_stats(pool, "alice")
    assert (stats.peak_connections, stats.channels_in_use) == (1, 0)


async def test_sftp_load_opens_a_connection_per_r_queued_requests(
    make_pool: MakePool, cluster: Cluster
) -> None:
    # 100 queued SFTP requests need ceil(100 / R) = 2 connections, not K = 4.
    pool = make_pool(max_connections=4, max_channels=10, max_sftp_requests=64)
    home = cluster.users["alice"]["home"]

    async def stat_home() -> None:
        async with pool.sftp("alice") as sftp:
            await sftp.stat(home)

    requests = asyncio.gather(*(stat_home() for _ in range(100)))
    # One turn of the loop queues every request, and the pool sizes its logins
    # then. (Whether the second login ends before the first connection has
    # served all 100 depends on the machine's load, so the peak may be 1.)
    await asyncio.sleep(0)
    queued = user_stats(pool, "alice")
    await requests
    assert (queued.waiters, queued.connecting) == (100, 2)
    assert user_stats(pool, "alice").peak_connections <= 2


async def test_an_idle_sftp_channel_yields_to_commands(make_pool: MakePool) -> None:
    # K = S = 1: the SFTP channel left open must not block the next command.
    pool = make_pool(max_connections=1, max_channels=1)
    async with pool.sftp("alice") as sftp:
        assert await sftp.exists(".")
    result = await pool.run("alice", ["true"], deadline=deadline_after(5))
    assert result.exit_status == 0
    async with pool.sftp("alice") as sftp:  # and SFTP reopens afterwards
        assert await sftp.exists(".")


async def test_one_users_backlog_does_not_delay_another(make_pool: MakePool) -> None:
    pool = make_pool(max_connections=4, max_channels=10)
    await pool.run("bob", ["true"])  # bob has an idle connection
    alice = [asyncio.create_task(pool.run("alice", ["sleep", "0.2"])) for _ in range(500)]
    await wait_until(lambda: user_stats(pool, "alice").waiters > 400, "alice has a backlog")

    # Warm: bob's request takes a slot at once, without queueing.
    async with pool.session("bob") as conn:
        bob, alice_now = user_stats(pool, "bob"), user_stats(pool, "alice")
        assert (bob.waiters, bob.channels_in_use) == (0, 1)
        assert alice_now.waiters > 300
        assert (await conn.run("id -un", check=True)).stdout == "bob\n"

    # Cold: a user without connections opens their own while alice's queue stays deep.
    async with pool.session("hpcgate-svc") as conn:
        assert user_stats(pool, "alice").waiters > 200
        assert (await conn.run("id -un", check=True)).stdout == "hpcgate-svc\n"

    results = await asyncio.gather(*alice)
    assert all(r.exit_status == 0 for r in results)
    assert user_stats(pool, "alice").peak_connections == 4


# ------------------------------------------------------------------ lifecycle


async def test_idle_connections_are_closed(make_pool: MakePool) -> None:
    pool = make_pool(max_connections=3, max_channels=5, idle=1.0)
    await asyncio.gather(*(pool.run("alice", ["sleep", "0.3"]) for _ in range(15)))
    assert user_stats(pool, "alice").peak_connections == 3
    await wait_until(lambda: pool.stats().total.connections == 0, "idle connections close", 5)
    assert "alice" not in pool.stats().users  # the user's empty pool is forgotten too
    assert gauge("hpcgate_ssh_connections", pool) == 0
    assert (await pool.run("alice", ["true"])).exit_status == 0  # and a new one opens


def kill_server_side(cluster: Cluster, conn: asyncssh.SSHClientConnection) -> None:
    """SIGKILL the sshd processes serving ``conn`` (found by its client port)."""
    client_port = conn.get_extra_info("sockname")[1]
    listing = subprocess.run(
        ["ss", "-tnpH", f"( sport = :{cluster.ssh.port} and dport = :{client_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pids = sorted(set(re.findall(r"pid=(\d+)", listing)))
    assert pids, f"no sshd serves port {client_port}: {listing!r}"
    subprocess.run(["kill", "-KILL", *pids], check=True)


async def test_dead_connection_is_replaced(make_pool: MakePool, cluster: Cluster) -> None:
    pool = make_pool(max_connections=1, max_channels=10)
    async with pool.session("alice") as first:
        pass
    in_flight = asyncio.create_task(pool.run("alice", ["sleep", "30"]))
    await wait_until(lambda: user_stats(pool, "alice").channels_in_use == 1, "sleep runs")
    kill_server_side(cluster, first)

    await expect_error(in_flight, ErrorKind.UNAVAILABLE, "SSH_CONNECTION_LOST")
    result = await pool.run("alice", ["id", "-un"])
    assert (result.exit_status, result.stdout) == (0, b"alice\n")
    async with pool.session("alice") as second:
        assert second is not first
    assert user_stats(pool, "alice").connections == 1
    assert gauge("hpcgate_ssh_connections_lost_total", pool) == 1


# ------------------------------------------------------------------ commands


async def test_arguments_are_quoted_exactly(make_pool: MakePool) -> None:
    await asyncio.to_thread(PWNED.unlink, missing_ok=True)
    pool = make_pool()
    args = [
        "two words",
        "it's",
        '"double"',
        f"$(touch {PWNED})",
        f"`touch {PWNED}`",
        f"; touch {PWNED}",
        "line1\nline2",
        "*",
        "$HOME",
        "-n",
        "",
        "back\\slash",
    ]
    result = await pool.run("alice", ["printf", "%s\\n", *args])
    assert result.exit_status == 0, result.stderr
    assert result.stdout == "".join(f"{a}\n" for a in args).encode()
    assert not await asyncio.to_thread(PWNED.exists)

    payload = bytes(range(256)) * 64
    echoed = await pool.run("alice", ["cat"], stdin=payload)
    assert echoed.stdout == payload
    status = await pool.run("alice", ["sh", "-c", "echo oops >&2; exit 3"])
    assert (status.exit_status, status.stderr) == (3, b"oops\n")


# A sleep duration no other test (or test run) uses, so its processes can be counted.
SLEEPER = f"31.{os.getpid():07d}"


def remote_sleepers() -> int:
    """How many of alice's ``sleep SLEEPER`` processes run on the cluster."""
    found = subprocess.run(
        ["pgrep", "-u", "alice", "-f", f"^sleep {SLEEPER}$"], capture_output=True, text=True
    )
    return len(found.stdout.split())


async def test_deadline_while_queued_and_command_timeout(make_pool: MakePool) -> None:
    pool = make_pool(max_connections=1, max_channels=1)
    holder = asyncio.create_task(pool.run("alice", ["sleep", SLEEPER]))
    await wait_until(lambda: remote_sleepers() == 1, "sleep runs on the cluster")

    await expect_error(
        pool.run("alice", ["true"], deadline=deadline_after(0.3)),
        ErrorKind.DEADLINE_EXCEEDED,
        "SSH_POOL_TIMEOUT",
    )
    assert user_stats(pool, "alice").waiters == 0

    holder.cancel()  # cancelling closes the channel and frees the slot
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert user_stats(pool, "alice").channels_in_use == 0
    assert remote_sleepers() == 0  # ... and stops the command on the cluster

    await expect_error(
        pool.run("alice", ["sleep", SLEEPER], timeout=0.5),
        ErrorKind.DEADLINE_EXCEEDED,
        "COMMAND_TIMEOUT",
    )
    await expect_error(
        pool.run("alice", ["sleep", SLEEPER], deadline=deadline_after(0.5)),
        ErrorKind.DEADLINE_EXCEEDED,
        "COMMAND_TIMEOUT",
    )
    assert remote_sleepers() == 0
    assert (await pool.run("alice", ["true"])).exit_status == 0


async def test_a_stdout_sink_takes_the_output_while_the_command_runs(make_pool: MakePool) -> None:
    pool = make_pool(max_connections=1, max_channels=1)
    arrived: list[tuple[float, bytes]] = []

    async def sink(chunk: bytes) -> None:
        arrived.append((time.monotonic(), chunk))

    # 4 MiB of stdout beside 1 MiB of stderr (left unread, stderr would stall
    # the channel), then a pause before the last line.
    script = "head -c 4194304 /dev/zero; head -c 1048576 /dev/zero >&2; sleep 1; echo end"
    result = await pool.run("alice", ["sh", "-c", script], stdout_sink=sink)
    ended = time.monotonic()
    assert (result.exit_status, result.stdout, len(result.stderr)) == (0, b"", 1 << 20)
    assert b"".join(chunk for _, chunk in arrived) == bytes(4 << 20) + b"end\n"
    assert max(len(chunk) for _, chunk in arrived) <= 1 << 16
    assert ended - arrived[0][0] >= 0.9  # the first chunk came before the pause, not after

    async def failing(chunk: bytes) -> None:
        raise ValueError("the sink refuses")

    with pytest.raises(ValueError, match="refuses"):
        await pool.run("alice", ["sh", "-c", f"echo x; exec sleep {SLEEPER}"], stdout_sink=failing)
    await wait_until(lambda: remote_sleepers() == 0, "the abandoned command is stopped")
    await expect_error(
        pool.run("alice", ["sleep", SLEEPER], timeout=0.5, stdout_sink=sink),
        ErrorKind.DEADLINE_EXCEEDED,
        "COMMAND_TIMEOUT",
    )
    assert user_stats(pool, "alice").channels_in_use == 0


async def test_close_fails_waiters_and_refuses_new_requests(make_pool: MakePool) -> None:
    pool = make_pool(max_connections=1, max_channels=1)
    holder = asyncio.create_task(pool.run("alice", ["sleep", "30"]))
    await wait_until(lambda: user_stats(pool, "alice").channels_in_use == 1, "sleep runs")
    queued = asyncio.create_task(pool.run("alice", ["true"]))
    await wait_until(lambda: user_stats(pool, "alice").waiters == 1, "a request queues")

    await pool.close()
    await expect_error(queued, ErrorKind.UNAVAILABLE, "SSH_POOL_CLOSED")
    await expect_error(holder, ErrorKind.UNAVAILABLE, "SSH_CONNECTION_LOST")
    await expect_error(pool.run("alice", ["true"]), ErrorKind.UNAVAILABLE, "SSH_POOL_CLOSED")
    assert gauge("hpcgate_ssh_connections", pool) == 0
    assert gauge("hpcgate_ssh_waiters", pool) == 0
