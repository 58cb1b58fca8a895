#!/usr/bin/env python3
"""Loopback HPC cluster for hpcgate's tests and `make run`.

Starts, as root on a Debian 12 machine, real parts on loopback:

* OpenSSH ``sshd`` trusting a user CA (certificates only), with SFTP;
* users ``alice`` and ``bob`` (group ``hpcproj``) and the service account
  ``hpcgate-svc``, with homes and ``/scratch/<user>``;
* single-node Slurm from Debian's packages: munged, MariaDB, slurmdbd,
  slurmctld and slurmd, with partitions, a reservation and accounts;
* an S3 server (moto) with path-style addressing;
* a venv with firecrest-streamer (PyPI) that the streamer transfer jobs of
  every user run, under ``<state-dir>/streamer/venv``;
* a magic-wormhole mailbox server and transit relay on loopback, and the
  ``wormhole`` command the wormhole transfer jobs (and clients) run, all
  from PyPI in one venv under ``<state-dir>/wormhole/venv``.

Subcommands: ``start`` (idempotent; prints one JSON document on stdout),
``stop`` (kills exactly the processes ``start`` recorded), ``status``,
``info`` (prints the same JSON document) and ``private-data on|off`` (turns
Slurm's ``PrivateData=jobs`` on or off in the running slurmctld and
slurmdbd).  Logs go to stderr and to ``<state-dir>/logs/``.  Everything
lives under one state directory (default ``<repo>/.hpcgate/cluster``;
``HPCGATE_CLUSTER_DIR`` or ``--state-dir`` override it).

Standard library only: this runs before the project's venv has anything.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The S3 server the cluster runs: moto's, with one thread-safety fix.
MOTO_S3 = Path(__file__).resolve().with_name("moto_s3.py")
DEFAULT_STATE_DIR = REPO / ".hpcgate" / "cluster"

CLUSTER_NAME = "hpcgate"
NODE_NAME = "hpc1"
USERS = ("alice", "bob")
SERVICE_ACCOUNT = "hpcgate-svc"
PROJECT_GROUP = "hpcproj"
# account -> members; the first account listed for a user is its default.
ACCOUNTS: dict[str, tuple[str, ...]] = {
    "proj1": ("alice", "bob", SERVICE_ACCOUNT),
    "proj2": ("alice",),
}
PARTITIONS = (
    {
        "name": "normal",
        "default": True,
        "hidden": False,
        "max_time": "7-00:00:00",
        "default_time": "01:00:00",
    },
    {
        "name": "debug",
        "default": False,
        "hidden": False,
        "max_time": "00:30:00",
        "default_time": "00:10:00",
    },
    {
        "name": "hidden",
        "default": False,
        "hidden": True,
        "max_time": "1-00:00:00",
        "default_time": "01:00:00",
    },
)
# A reservation far in the future: visible to `scontrol show reservation`
# but never blocking jobs (partition time limits keep jobs clear of it).
RESERVATION_NAME = "maint"
RESERVATION = {
    "name": RESERVATION_NAME,
    "users": "alice",
    "start": "now+365days",
    "duration": "02:00:00",
}
SSH_MAX_SESSIONS = 10
# What `private-data on` hides from regular users, in slurmctld (squeue,
# scontrol) and in slurmdbd (sacct): other users' jobs.
PRIVATE_DATA = "jobs"
S3_REGION = "us-east-1"
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"

APT_PACKAGES = (
    "openssh-server",
    "openssh-client",
    "munge",
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "slurm-client",
    "mariadb-server",
    "mariadb-client",
    # Transfer jobs move bytes between S3 and the filesystem with curl.
    "curl",
    # The load balancer of deploy/nginx, tested in front of the edges and servers.
    "nginx",
    # The shared coordination of a fleet of replicas (the fleet tests start their own).
    "redis-server",
    # Slurm's REST API (the slurm-rest scheduler plug-in) and the JWTs it authenticates with.
    "slurmrestd",
    "slurm-wlm-jwt-plugin",
    # A Python every user can run: the Snakemake jobs' environment (dev/jobpython.py)
    # and the venv of the streamer transfer jobs.
    "python3-venv",
)
REQUIRED_FILES = (
    "/usr/bin/python3",
    "/usr/lib/python3.11/ensurepip/__init__.py",
    "/usr/sbin/sshd",
    "/usr/bin/ssh-keygen",
    "/usr/lib/openssh/sftp-server",
    "/usr/sbin/munged",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
    "/usr/sbin/slurmdbd",
    "/usr/bin/sbatch",
    "/usr/bin/sacct",
    "/usr/bin/sacctmgr",
    "/usr/bin/scontrol",
    "/usr/sbin/mariadbd",
    "/usr/bin/curl",  # transfer jobs move bytes to and from S3 with it
    "/usr/bin/mariadb",
    "/usr/sbin/nginx",
    "/usr/bin/mariadb-install-db",
    "/usr/bin/redis-server",
    "/usr/sbin/slurmrestd",
    "/usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so",
)
# slurmrestd refuses to run as root or as SlurmUser: it runs as this system user.
SLURMRESTD_USER = "slurmrest"
# The OpenAPI version of Debian 12's slurmrestd (Slurm 22.05).
SLURMRESTD_API = "v0.0.38"
# The streamer transfer method's server (PyPI), preinstalled for every
# user's jobs in a venv under the state directory, and the loopback ports
# its jobs listen on (below Linux's ephemeral range, so that no outgoing
# connection holds one).
STREAMER_PACKAGE = "firecrest-streamer==0.0.21"
STREAMER_PORTS = (30100, 30119)
# The wormhole transfer method: its client (``wormhole``), mailbox server
# (rendezvous) and transit relay, from PyPI, in one venv every user can run.
WORMHOLE_PACKAGES = (
    "magic-wormhole==0.24.0",
    "magic-wormhole-mailbox-server==0.8.0",
    "magic-wormhole-transit-relay==0.5.0",
)
PORT_NAMES = (
    "ssh",
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "mysql",
    "s3",
    "slurmrestd",
    "wormhole_mailbox",
    "wormhole_relay",
)
# Start order; stop goes through STOP_WAVES.
COMPONENTS = (
    "sshd",
    "s3",
    "munged",
    "mariadbd",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "slurmrestd",
    "wormhole-mailbox",
    "wormhole-relay",
)
STOP_WAVES = (
    ("slurmrestd", "slurmd", "wormhole-mailbox", "wormhole-relay"),
    ("slurmctld",),
    ("slurmdbd", "sshd", "s3"),
    ("mariadbd",),
    ("munged",),
)

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[cluster +{time.monotonic() - T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


class ClusterError(Exception):
    pass


def tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"    (no log at {path})"
    return "\n".join("    | " + line for line in data)


def _config_value(text: str, key: str) -> str | None:
    """The value of ``key`` in ``Key = value`` lines (scontrol's, sacctmgr's config dumps)."""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def run(
    argv: list[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    input: str | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, input=input
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"command timed out after {timeout}s: {' '.join(argv)}") from e
    if check and r.returncode != 0:
        raise ClusterError(
            f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}{r.stderr}"
        )
    if not quiet and r.returncode != 0:
        log(f"({r.returncode}) {' '.join(argv)}: {(r.stderr or r.stdout).strip()}")
    return r


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def rec_alive(rec: dict[str, Any] | None) -> bool:
    if not rec:
        return False
    st = proc_stat(int(rec["pid"]))
    return st is not None and st[0] not in ("Z", "X") and st[1] == rec["start"]


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def tcp_banner(port: int, nbytes: int = 4, timeout: float = 1.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.recv(nbytes) if nbytes else b""


def tcp_request(port: int, request: bytes, timeout: float = 1.0) -> bytes:
    """The first bytes of the answer to ``request`` on a loopback port."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        return s.recv(64)


def write_file(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` atomically (readers never see half a file); no-op if unchanged."""
    with contextlib.suppress(OSError):
        if path.read_text() == text and path.stat().st_mode & 0o777 == mode:
            return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def unix_connect(path: Path, nbytes: int = 0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        s.connect(str(path))
        return s.recv(nbytes) if nbytes else b""


# --------------------------------------------------------------------------
# machine setup (packages, users)
# --------------------------------------------------------------------------


def ensure_packages() -> float:
    """Install missing Debian packages; returns seconds spent (0 if none)."""
    missing = [f for f in REQUIRED_FILES if not os.path.exists(f)]
    if not missing:
        return 0.0
    t = time.monotonic()
    log(f"installing Debian packages (missing: {', '.join(missing)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():  # keep packages' maintainer scripts from starting daemons
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        cand = run(["apt-cache", "policy", *APT_PACKAGES], check=False, env=env, quiet=True).stdout
        if "Candidate: (none)" in cand or cand.count("Candidate:") < len(APT_PACKAGES):
            log("apt-get update")
            subprocess.run(
                ["apt-get", "update"], stdout=sys.stderr, stderr=sys.stderr, env=env, check=True
            )
        cmd = [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            *APT_PACKAGES,
        ]
        if subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env=env).returncode != 0:
            log("apt-get install failed; running apt-get update and retrying")
            subprocess.run(
                ["apt-get", "update"], stdout=sys.stderr, stderr=sys.stderr, env=env, check=True
            )
            subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env=env, check=True)
    except subprocess.CalledProcessError as e:
        raise ClusterError(f"installing packages failed: {e}") from e
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    still = [f for f in REQUIRED_FILES if not os.path.exists(f)]
    if still:
        raise ClusterError(f"after apt-get install these are still missing: {', '.join(still)}")
    secs = time.monotonic() - t
    log(f"packages installed in {secs:.1f}s")
    return secs


def ensure_moto() -> float:
    import importlib.util

    if (
        importlib.util.find_spec("moto") is not None
        and importlib.util.find_spec("flask") is not None
    ):
        return 0.0
    t = time.monotonic()
    log(f"pip install 'moto[server]' into {sys.executable}")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "moto[server]"],
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    if r.returncode != 0:
        raise ClusterError(f"pip install 'moto[server]' failed for {sys.executable}")
    importlib.invalidate_caches()
    return time.monotonic() - t


def ensure_streamer(venv: Path) -> float:
    """A venv at ``venv`` with firecrest-streamer, readable by every user; seconds spent."""
    return ensure_venv(venv, (STREAMER_PACKAGE,))


def ensure_wormhole(venv: Path) -> float:
    """A venv at ``venv`` with magic-wormhole and its two servers; seconds spent."""
    return ensure_venv(venv, WORMHOLE_PACKAGES)


def ensure_venv(venv: Path, packages: tuple[str, ...]) -> float:
    """A venv at ``venv`` with ``packages``, readable by every user; seconds spent.

    Made again only when the packages (or the Python) differ from its marker's.
    """
    # Debian's: the Python running this may live where users cannot read (pyenv under /root).
    python = "/usr/bin/python3"
    marker, made = venv / "hpcgate-package", f"{' '.join(packages)} {python}"
    if marker.exists() and marker.read_text().strip() == made:
        return 0.0
    t = time.monotonic()
    log(f"pip install {' '.join(packages)} into {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    venv.parent.chmod(0o755)
    for argv in (
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", *packages],
    ):
        if subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr).returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed")
    # Every user's job runs it: world-readable, directories traversable.
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    write_file(marker, made + "\n", 0o644)
    return time.monotonic() - t


def shadow_locked(user: str) -> bool:
    for line in Path("/etc/shadow").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return parts[1].startswith("!")
    return False


def ensure_user(name: str, groups: tuple[str, ...]) -> pwd.struct_passwd:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        log(f"creating user {name}")
        argv = ["useradd", "-m", "-d", f"/home/{name}", "-s", "/bin/bash", "-U"]
        if groups:
            argv += ["-G", ",".join(groups)]
        run([*argv, name])
        pw = pwd.getpwnam(name)
    else:
        have = {g.gr_name for g in grp.getgrall() if name in g.gr_mem}
        if set(groups) - have:
            run(["usermod", "-aG", ",".join(groups), name])
    # With UsePAM no, sshd refuses accounts whose password is locked ('!').
    if shadow_locked(name):
        run(["usermod", "-p", "*", name])
    home = Path(pw.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True)
        shutil.copytree("/etc/skel", home, dirs_exist_ok=True)
        for p in [home, *home.rglob("*")]:
            os.lchown(p, pw.pw_uid, pw.pw_gid)
    home.chmod(0o750)
    return pw


def ensure_users() -> None:
    try:
        grp.getgrnam(PROJECT_GROUP)
    except KeyError:
        run(["groupadd", PROJECT_GROUP])
    scratch = Path("/scratch")
    scratch.mkdir(exist_ok=True)
    scratch.chmod(0o755)
    for u in USERS:
        pw = ensure_user(u, (PROJECT_GROUP,))
        d = scratch / u
        d.mkdir(exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o750)
    ensure_user(SERVICE_ACCOUNT, ())
    try:
        pwd.getpwnam(SLURMRESTD_USER)
    except KeyError:
        log(f"creating system user {SLURMRESTD_USER}")
        run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SLURMRESTD_USER])


# --------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------


class Cluster:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.state_file = state_dir / "state.json"
        self.logs = state_dir / "logs"
        self.ssh_dir = state_dir / "ssh"
        self.munge_dir = state_dir / "munge"
        self.mysql_dir = state_dir / "mysql"
        self.slurm_dir = state_dir / "slurm"
        self.slurm_conf = self.slurm_dir / "slurm.conf"
        self.slurmdbd_conf = self.slurm_dir / "slurmdbd.conf"
        # The HS256 key slurmctld and slurmdbd check JWTs with (auth/jwt).
        self.jwt_key = self.slurm_dir / "jwt_hs256.key"
        # The venv of the streamer transfer jobs (ensure_streamer).
        self.streamer_venv = state_dir / "streamer" / "venv"
        # The venv of the wormhole command and servers (ensure_wormhole).
        self.wormhole_venv = state_dir / "wormhole" / "venv"
        self.munge_socket = self.munge_dir / "munge.socket.2"
        self.mysql_socket = self.mysql_dir / "mysqld.sock"
        self.state: dict[str, Any] = {}
        self.popen: dict[str, subprocess.Popen[bytes]] = {}

    # ---- state -----------------------------------------------------------
    def load(self) -> None:
        try:
            self.state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            self.state = {}
        self.state.setdefault("procs", {})

    def save(self) -> None:
        write_file(self.state_file, json.dumps(self.state, indent=2, sort_keys=True) + "\n", 0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def ports(self) -> dict[str, int]:
        ports: dict[str, int] = self.state["ports"]
        return ports

    def alive(self, name: str) -> bool:
        p = self.popen.get(name)
        if p is not None:
            return p.poll() is None
        return rec_alive(self.state["procs"].get(name))

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def slurm_env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.slurm_conf))

    def slurm(
        self, *argv: str, check: bool = False, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return run(list(argv), check=check, timeout=timeout, env=self.slurm_env(), quiet=True)

    # ---- layout, keys, configs --------------------------------------------
    def prepare_dirs(self) -> None:
        munge = pwd.getpwnam("munge")
        mysql = pwd.getpwnam("mysql")
        for d in (
            self.dir,
            self.logs,
            self.ssh_dir,
            self.slurm_dir,
            self.slurm_dir / "ctld",
            self.slurm_dir / "spool",
        ):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        for d, pw in ((self.munge_dir, munge), (self.mysql_dir, mysql)):
            d.mkdir(exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(0o755)
        # Daemons that drop privileges write their own logs.
        for name, pw in (("munged", munge), ("mariadbd", mysql)):
            p = self.log_path(name)
            p.touch(exist_ok=True)
            os.chown(p, pw.pw_uid, pw.pw_gid)
            p.chmod(0o640)

    def choose_ports(self, running: bool = False) -> None:
        """A loopback port per name; kept from the state when free, or in use by a running cluster.

        running: parts of the cluster run, so their ports are taken by them
        and stay; only names without a port yet (a component added since) get one.
        A running component that recorded its port keeps it even if the ports
        lost its name (an older cluster.py, which does not know it, saved them).
        """
        old = self.state.get("ports", {})
        for rec in self.state["procs"].values():
            if rec.get("port_name") and rec_alive(rec):
                old = {rec["port_name"]: rec["port"], **old}
        ports: dict[str, int] = {}
        rng = random.Random()
        for name in PORT_NAMES:
            p = old.get(name)
            if running and p:
                ports[name] = p
                continue
            if not (p and p not in ports.values() and port_free(p)):
                for _ in range(1000):
                    p = rng.randint(20000, 32000)  # below Linux's ephemeral range
                    if p not in ports.values() and port_free(p):
                        break
                else:
                    raise ClusterError("no free TCP port found in 20000-32000")
            ports[name] = p
        self.state["ports"] = ports

    def ensure_keys(self) -> None:
        for name, comment in (
            ("ssh_host_ed25519_key", "hpcgate-cluster-host"),
            ("user_ca", "hpcgate-user-ca"),
        ):
            key = self.ssh_dir / name
            if not key.exists() or not (self.ssh_dir / f"{name}.pub").exists():
                key.unlink(missing_ok=True)
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
            key.chmod(0o600)
            (self.ssh_dir / f"{name}.pub").chmod(0o644)
        munge = pwd.getpwnam("munge")
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        self.state.setdefault("db_password", secrets.token_hex(16))
        if not self.jwt_key.exists():
            self.jwt_key.write_bytes(secrets.token_bytes(32))
        # Readable by SlurmUser (root) only: whoever reads it can mint anyone's token.
        os.chown(self.jwt_key, 0, 0)
        self.jwt_key.chmod(0o600)

    def node_resources(self) -> tuple[int, int]:
        real = os.cpu_count() or 1
        cpus = int(os.environ.get("HPCGATE_CLUSTER_CPUS", max(real, 8)))
        mem_kb = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        return cpus, max(1024, mem_kb // 1024 - 1024)

    def write_configs(self) -> None:
        port = self.ports
        host_pub = (self.ssh_dir / "ssh_host_ed25519_key.pub").read_text().split()
        known = self.ssh_dir / "known_hosts"
        write_file(known, f"[127.0.0.1]:{port['ssh']} {host_pub[0]} {host_pub[1]}\n", 0o644)
        sshd_conf = f"""\
# generated by dev/cluster/cluster.py -- edits are overwritten on start
Port {port["ssh"]}
ListenAddress 127.0.0.1
HostKey {self.ssh_dir}/ssh_host_ed25519_key
PidFile {self.ssh_dir}/sshd.pid
TrustedUserCAKeys {self.ssh_dir}/user_ca.pub
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
UseDNS no
MaxSessions {SSH_MAX_SESSIONS}
MaxStartups 200:30:300
MaxAuthTries 6
LoginGraceTime 30
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
SetEnv SLURM_CONF={self.slurm_conf}
"""
        write_file(self.ssh_dir / "sshd_config", sshd_conf, 0o644)

        cpus, mem = self.node_resources()
        auth = f"socket={self.munge_socket}"
        host = socket.gethostname().split(".")[0]
        parts = []
        for p in PARTITIONS:
            parts.append(
                f"PartitionName={p['name']} Nodes={NODE_NAME} State=UP MaxTime={p['max_time']} "
                f"DefaultTime={p['default_time']}"
                + (" Default=YES" if p["default"] else "")
                + (" Hidden=YES" if p["hidden"] else "")
            )
        slurm_conf = (
            f"""\
# generated by dev/cluster/cluster.py -- edits are overwritten on start
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={port["slurmctld"]}
SlurmdPort={port["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo={auth}
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={self.jwt_key}
CredType=cred/munge
StateSaveLocation={self.slurm_dir}/ctld
SlurmdSpoolDir={self.slurm_dir}/spool
SlurmctldPidFile={self.slurm_dir}/slurmctld.pid
SlurmdPidFile={self.slurm_dir}/slurmd.pid
SlurmctldLogFile={self.log_path("slurmctld")}
SlurmdLogFile={self.log_path("slurmd")}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={port["slurmdbd"]}
AccountingStorageEnforce=associations
# Messages to slurmdbd authenticate with the munge socket named here, not AuthInfo's.
AccountingStoragePass={self.munge_socket}
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
# {os.cpu_count()} real CPUs; CPUs are overcommitted (config_overrides) so
# several 1-CPU test jobs run at once. HPCGATE_CLUSTER_CPUS overrides.
NodeName={NODE_NAME} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem}
"""
            + "\n".join(parts)
            + "\n"
            + self.private_data_lines()
        )
        write_file(self.slurm_conf, slurm_conf, 0o644)

        dbd_conf = f"""\
# generated by dev/cluster/cluster.py -- edits are overwritten on start
AuthType=auth/munge
AuthInfo={auth}
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={self.jwt_key}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={port["slurmdbd"]}
SlurmUser=root
DebugLevel=info
LogFile={self.log_path("slurmdbd")}
PidFile={self.slurm_dir}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={port["mysql"]}
StorageUser=slurm
StoragePass={self.state["db_password"]}
StorageLoc=slurm_acct_db
""" + self.private_data_lines()
        write_file(self.slurmdbd_conf, dbd_conf, 0o600)  # holds the DB password

    def private_data_lines(self) -> str:
        """The PrivateData line of both Slurm configs while `private-data on` holds."""
        if not self.state.get("private_data"):
            return ""
        return f"# set by `cluster.py private-data on`\nPrivateData={PRIVATE_DATA}\n"

    # ---- launching and waiting -------------------------------------------
    def launch(
        self,
        name: str,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        own_log: bool = False,
        port_name: str | None = None,
    ) -> None:
        """Start a daemon in the foreground, in its own session, output to its log.

        own_log: the daemon writes its log file itself (and echoes it to
        stderr), so its stdout/stderr go to ``<name>.out`` instead.
        port_name: the port (of PORT_NAMES) it listens on, kept in its record.
        """
        logf = self.log_path(name)
        with open(logf.with_suffix(".out") if own_log else logf, "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"\n=== {stamp} cluster.py starts: {' '.join(argv)}\n".encode())
            out.flush()
            kw: dict[str, Any] = {}
            if user:
                pw = pwd.getpwnam(user)
                kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            p = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(self.dir),
                env=env,
                **kw,
            )
        st = proc_stat(p.pid)
        self.popen[name] = p
        self.state["procs"][name] = {
            "pid": p.pid,
            "start": st[1] if st else 0,
            "argv": argv,
            "log": str(logf),
        }
        if port_name:
            self.state["procs"][name].update(port_name=port_name, port=self.ports[port_name])
        self.save()
        log(f"started {name} (pid {p.pid})")

    def log_hint(self, name: str) -> str:
        logf = self.log_path(name)
        text = f"see {logf}\n{tail(logf)}"
        out = logf.with_suffix(".out")
        if out.exists() and out.stat().st_size:
            text += f"\n  and its stdout/stderr, {out}:\n{tail(out, 10)}"
        return text

    def wait_for(
        self, name: str, what: str, check: Callable[[], tuple[bool, str]], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        detail = ""
        while True:
            try:
                ok, detail = check()
            except Exception as e:
                ok, detail = False, f"{type(e).__name__}: {e}"
            if ok:
                return
            if not self.alive(name):
                p = self.popen.get(name)
                code = f" with code {p.returncode}" if p is not None else ""
                raise ClusterError(f"{name} exited{code} before {what}; {self.log_hint(name)}")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{name}: {what} not reached within {timeout:.0f}s (last check: {detail}); "
                    + self.log_hint(name)
                )
            time.sleep(0.2)

    # ---- checks ----------------------------------------------------------
    def check_sshd(self) -> tuple[bool, str]:
        b = tcp_banner(self.ports["ssh"])
        return b.startswith(b"SSH-"), f"banner {b!r}"

    def check_s3(self) -> tuple[bool, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['s3']}/", timeout=2) as r:
            return r.status == 200, f"HTTP {r.status}"

    def check_munge(self) -> tuple[bool, str]:
        unix_connect(self.munge_socket)
        return True, "socket answers"

    def check_mysql(self) -> tuple[bool, str]:
        b = unix_connect(self.mysql_socket, 16)
        return len(b) > 4, f"handshake {b!r}"

    def check_slurmdbd(self) -> tuple[bool, str]:
        r = self.slurm("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster")
        return r.returncode == 0, (r.stderr or r.stdout).strip()

    def check_slurmctld(self) -> tuple[bool, str]:
        r = self.slurm("scontrol", "ping")
        return r.returncode == 0 and "UP" in r.stdout, (r.stdout + r.stderr).strip()

    def check_private_data(self, want: str) -> tuple[bool, str]:
        """Whether slurmctld and slurmdbd both run with ``PrivateData`` = ``want``."""
        ctld = self.slurm("scontrol", "show", "config")
        # sacctmgr prints slurm.conf's view first, then what slurmdbd itself runs with.
        dbd = self.slurm("sacctmgr", "show", "configuration")
        dbd_part = dbd.stdout.partition("SlurmDBD configuration:")[2]
        seen = [_config_value(ctld.stdout, "PrivateData"), _config_value(dbd_part, "PrivateData")]
        return seen == [want, want], f"slurmctld, slurmdbd PrivateData: {seen}"

    def check_slurmrestd(self) -> tuple[bool, str]:
        """slurmrestd answers HTTP (without a token it answers 401: that is an answer)."""
        url = f"http://127.0.0.1:{self.ports['slurmrestd']}/slurm/{SLURMRESTD_API}/ping"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return True, f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            return True, f"HTTP {e.code}"

    def check_slurmd(self) -> tuple[bool, str]:
        r = self.slurm("sinfo", "-h", "-N", "-n", NODE_NAME, "-o", "%T")
        states = set(r.stdout.split())
        if r.returncode != 0:
            return False, r.stderr.strip()
        if states & {"drained", "draining", "down", "down*", "drained*"} and not getattr(
            self, "_resumed", False
        ):
            self._resumed = True
            self.slurm("scontrol", "update", f"nodename={NODE_NAME}", "state=resume")
        ok = bool(states) and states <= {
            "idle",
            "mixed",
            "allocated",
            "completing",
            "idle+",
            "mixed+",
            "planned",
        }
        return ok, f"node state {' '.join(sorted(states)) or '?'}"

    # ---- components ------------------------------------------------------
    def start_sshd(self) -> None:
        cfg = self.ssh_dir / "sshd_config"
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        r = run(["/usr/sbin/sshd", "-t", "-f", str(cfg)], check=False, quiet=True)
        if r.returncode != 0:
            raise ClusterError(f"sshd rejects {cfg}: {r.stderr.strip()}")
        self.launch("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)])

    def start_s3(self) -> None:
        self.pip_seconds = getattr(self, "pip_seconds", 0.0) + ensure_moto()
        self.launch(
            "s3",
            # moto's server, with ETags hashed under each key's lock (see moto_s3.py).
            [sys.executable, str(MOTO_S3), "-H", "127.0.0.1", "-p", str(self.ports["s3"])],
        )

    def start_slurmrestd(self) -> None:
        """slurmrestd on loopback, passing each request's JWT on to slurmctld (rest_auth/jwt).

        SLURM_JWT=daemon: it holds no token of its own; each request's
        X-SLURM-USER-NAME / X-SLURM-USER-TOKEN say who asks.
        """
        self.launch(
            "slurmrestd",
            [
                "/usr/sbin/slurmrestd",
                "-a",
                "rest_auth/jwt",
                f"127.0.0.1:{self.ports['slurmrestd']}",
            ],
            user=SLURMRESTD_USER,
            env=dict(self.slurm_env(), SLURM_JWT="daemon"),
        )

    def start_wormhole(self, need: Callable[[str], bool]) -> None:
        """The wormhole mailbox server and transit relay, on loopback (the ones ``need`` says).

        Both are Twisted plugins, run by the venv's ``twist`` in the foreground.
        The mailbox's channels (nameplates, mailboxes) are in a SQLite file
        beside the venv, made anew at each start: none outlives its server.
        """
        twist = str(self.wormhole_venv / "bin" / "twist")
        if need("wormhole-mailbox"):
            port = self.ports["wormhole_mailbox"]
            channels = self.wormhole_venv.parent / "channels.sqlite"
            channels.unlink(missing_ok=True)
            self.launch(
                "wormhole-mailbox",
                [
                    twist,
                    "wormhole-mailbox",
                    f"--port=tcp:{port}:interface=127.0.0.1",
                    f"--channel-db={channels}",
                ],
                port_name="wormhole_mailbox",
            )
        if need("wormhole-relay"):
            port = self.ports["wormhole_relay"]
            self.launch(
                "wormhole-relay",
                [twist, "transitrelay", f"--port=tcp:{port}:interface=127.0.0.1"],
                port_name="wormhole_relay",
            )

    def check_wormhole_mailbox(self) -> tuple[bool, str]:
        """The mailbox answers HTTP (a websocket server: a plain GET gets an error page)."""
        b = tcp_request(self.ports["wormhole_mailbox"], b"GET /v1 HTTP/1.0\r\n\r\n")
        return b.startswith(b"HTTP/"), f"answer {b[:20]!r}"

    def check_wormhole_relay(self) -> tuple[bool, str]:
        """The relay accepts TCP connections."""
        with socket.create_connection(("127.0.0.1", self.ports["wormhole_relay"]), timeout=1):
            return True, "connected"

    def start_munged(self) -> None:
        self.launch(
            "munged",
            [
                "/usr/sbin/munged",
                "-F",
                "--num-threads=10",
                f"--key-file={self.munge_dir}/munge.key",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.munge_dir}/munged.pid",
                f"--seed-file={self.munge_dir}/munged.seed",
                f"--log-file={self.log_path('munged')}",
            ],
            user="munge",
        )

    def start_mariadbd(self) -> None:
        data = self.mysql_dir / "data"
        mysql = pwd.getpwnam("mysql")
        if not (data / "mysql").is_dir():
            log("initialising MariaDB data directory")
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir()
            os.chown(data, mysql.pw_uid, mysql.pw_gid)
            data.chmod(0o700)
            r = run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={data}",
                    "--user=mysql",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    "--basedir=/usr",
                ],
                check=False,
                timeout=180,
                quiet=True,
            )
            self.log_path("mariadb-install-db").write_text(r.stdout + r.stderr)
            if r.returncode != 0:
                shutil.rmtree(data, ignore_errors=True)
                raise ClusterError(
                    f"mariadb-install-db failed; see {self.log_path('mariadb-install-db')}\n"
                    f"{tail(self.log_path('mariadb-install-db'))}"
                )
        self.launch(
            "mariadbd",
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={self.mysql_socket}",
                f"--port={self.ports['mysql']}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.mysql_dir}/mariadbd.pid",
                f"--log-error={self.log_path('mariadbd')}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=256M",
                "--innodb-lock-wait-timeout=900",
                "--innodb-log-file-size=64M",
                "--max-connections=300",
            ],
        )

    def mysql_grants(self) -> None:
        pw = self.state["db_password"]
        sql = "CREATE DATABASE IF NOT EXISTS slurm_acct_db;\n"
        for h in ("127.0.0.1", "localhost"):
            sql += (
                f"CREATE USER IF NOT EXISTS 'slurm'@'{h}' IDENTIFIED BY '{pw}';\n"
                f"ALTER USER 'slurm'@'{h}' IDENTIFIED BY '{pw}';\n"
                f"GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'{h}';\n"
            )
        run(["mariadb", "--no-defaults", f"--socket={self.mysql_socket}", "-uroot"], input=sql)

    def ensure_accounting(self) -> None:
        r = self.slurm("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster", check=True)
        if CLUSTER_NAME not in r.stdout.split():
            log(f"registering cluster {CLUSTER_NAME} in slurmdbd")
            self.slurm("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME, check=True)
        r = self.slurm(
            "sacctmgr",
            "-n",
            "-P",
            "show",
            "assoc",
            f"cluster={CLUSTER_NAME}",
            "format=account,user",
            check=True,
        )
        have = {tuple(line.split("|")[:2]) for line in r.stdout.splitlines() if line.strip()}
        for acct in ACCOUNTS:
            if (acct, "") not in have:
                self.slurm(
                    "sacctmgr",
                    "-i",
                    "add",
                    "account",
                    acct,
                    f"cluster={CLUSTER_NAME}",
                    f"description=hpcgate test project {acct}",
                    "organization=hpcgate",
                    check=True,
                )
        for user in (*USERS, SERVICE_ACCOUNT):
            accts = [a for a, members in ACCOUNTS.items() if user in members]
            todo = [a for a in accts if (a, user) not in have]
            if todo:
                log(f"adding {user} to {','.join(todo)}")
                self.slurm(
                    "sacctmgr",
                    "-i",
                    "add",
                    "user",
                    user,
                    f"account={','.join(todo)}",
                    f"defaultaccount={accts[0]}",
                    f"cluster={CLUSTER_NAME}",
                    check=True,
                )

    def ensure_reservation(self) -> None:
        r = self.slurm("scontrol", "-o", "show", "reservation", RESERVATION_NAME)
        if r.returncode == 0 and f"ReservationName={RESERVATION['name']}" in r.stdout:
            return
        self.slurm(
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={RESERVATION['name']}",
            f"Users={RESERVATION['users']}",
            f"Nodes={NODE_NAME}",
            f"StartTime={RESERVATION['start']}",
            f"Duration={RESERVATION['duration']}",
            check=True,
        )

    # ---- commands --------------------------------------------------------
    def start(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            raise ClusterError("cluster.py start must run as root")
        timings: dict[str, float] = {}
        timings["apt"] = round(ensure_packages(), 1)
        with self.locked():
            self.load()
            running = {n for n in COMPONENTS if self.alive(n)}
            if running and "ports" not in self.state:
                raise ClusterError(f"state in {self.dir} is inconsistent; run `cluster.py stop`")
            self.choose_ports(running=bool(running))
            self.dir.chmod(0o755)
            t = time.monotonic()
            ensure_users()
            self.prepare_dirs()
            self.ensure_keys()
            self.pip_seconds = ensure_streamer(self.streamer_venv)
            self.pip_seconds += ensure_wormhole(self.wormhole_venv)
            self.write_configs()
            self.save()
            timings["setup"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            started = []

            def need(n: str) -> bool:
                if n in running and self.alive(n):
                    return False
                started.append(n)
                return True

            # Independent parts first; they get ready while Slurm comes up.
            if need("sshd"):
                self.start_sshd()
            if need("s3"):
                self.start_s3()
            self.start_wormhole(need)
            new_munge = need("munged")
            if new_munge:
                self.start_munged()
            new_db = need("mariadbd")
            if new_db:
                self.start_mariadbd()
            self.wait_for("munged", "munge socket answering", self.check_munge, 20)
            self.wait_for("mariadbd", "MariaDB socket answering", self.check_mysql, 90)
            if new_db:
                self.mysql_grants()
            if need("slurmdbd"):
                self.launch(
                    "slurmdbd", ["/usr/sbin/slurmdbd", "-D"], env=self.slurm_env(), own_log=True
                )
            self.wait_for("slurmdbd", "`sacctmgr show cluster` working", self.check_slurmdbd, 120)
            self.ensure_accounting()
            if need("slurmctld"):
                self.launch(
                    "slurmctld", ["/usr/sbin/slurmctld", "-D"], env=self.slurm_env(), own_log=True
                )
            self.wait_for("slurmctld", "`scontrol ping` UP", self.check_slurmctld, 60)
            if need("slurmd"):
                self.launch(
                    "slurmd",
                    ["/usr/sbin/slurmd", "-D", "-N", NODE_NAME],
                    env=self.slurm_env(),
                    own_log=True,
                )
            self.wait_for("slurmd", f"node {NODE_NAME} idle in sinfo", self.check_slurmd, 60)
            self.ensure_reservation()
            if need("slurmrestd"):
                self.start_slurmrestd()
            self.wait_for("slurmrestd", "HTTP answering", self.check_slurmrestd, 30)
            self.wait_for("sshd", "SSH banner on the port", self.check_sshd, 20)
            self.wait_for("s3", "S3 endpoint answering HTTP", self.check_s3, 60)
            self.wait_for("wormhole-mailbox", "HTTP answering", self.check_wormhole_mailbox, 30)
            self.wait_for("wormhole-relay", "TCP accepting", self.check_wormhole_relay, 30)
            timings["daemons"] = round(time.monotonic() - t, 1)
            timings["pip"] = round(getattr(self, "pip_seconds", 0.0), 1)
            timings["total"] = round(time.monotonic() - T0, 1)
            mode = (
                "fresh-install" if timings["apt"] else ("started" if started else "already-running")
            )
            self.state["last_start"] = {
                "mode": mode,
                "started": started,
                "seconds": timings,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            if "slurm_version" not in self.state:
                self.state["slurm_version"] = self.slurm("sinfo", "--version").stdout.strip()
            self.save()
            info = self.info()
            write_file(self.dir / "cluster.json", json.dumps(info, indent=2) + "\n", 0o644)
            what = ", ".join(started) or "nothing"
            log(f"cluster ready ({mode}, {timings['total']}s; started: {what})")
            if self.state.get("private_data"):
                log(f"PrivateData={PRIVATE_DATA} is on (`cluster.py private-data off` ends it)")
            return info

    def set_private_data(self, on: bool) -> None:
        """Turn ``PrivateData=jobs`` on or off in the running slurmctld and slurmdbd.

        The setting is kept in the state, so configs that ``start`` rewrites
        (and daemons it restarts meanwhile) keep it. slurmctld rereads
        slurm.conf on ``scontrol reconfigure``, slurmdbd rereads slurmdbd.conf
        on SIGHUP; neither restarts, so running jobs and connections stay.
        Returns once both daemons report the new value. The state and the
        configs change first: a daemon found down starts with the new value.
        """
        if os.geteuid() != 0:
            raise ClusterError("cluster.py private-data must run as root")
        with self.locked():
            self.load()
            self.state["private_data"] = on
            self.write_configs()
            self.save()
            down = [n for n in ("slurmdbd", "slurmctld") if not self.alive(n)]
            if down:
                raise ClusterError(f"not running: {', '.join(down)}; run `cluster.py start`")
            os.kill(self.state["procs"]["slurmdbd"]["pid"], signal.SIGHUP)
            self.slurm("scontrol", "reconfigure", check=True)
            want = PRIVATE_DATA if on else "none"
            self.wait_for(
                "slurmctld", f"PrivateData={want}", lambda: self.check_private_data(want), 60
            )
            log(f"PrivateData={want} in slurmctld and slurmdbd")

    def stop(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError("cluster.py stop must run as root")
        with self.locked():
            self.load()
            procs = self.state["procs"]
            for wave in STOP_WAVES:
                live = [n for n in wave if rec_alive(procs.get(n))]
                for n in live:
                    log(f"stopping {n} (pid {procs[n]['pid']})")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(procs[n]["pid"], signal.SIGTERM)
                deadline = time.monotonic() + 30
                while any(rec_alive(procs.get(n)) for n in live) and time.monotonic() < deadline:
                    time.sleep(0.1)
                for n in live:
                    if rec_alive(procs.get(n)):
                        log(f"{n} ignored SIGTERM for 30s; SIGKILL")
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(procs[n]["pid"], signal.SIGKILL)
                deadline = time.monotonic() + 10
                while any(rec_alive(procs.get(n)) for n in live) and time.monotonic() < deadline:
                    time.sleep(0.1)
            left = [n for n in procs if rec_alive(procs.get(n))]
            if left:
                raise ClusterError(f"still running after stop: {', '.join(left)}")
            self.state["procs"] = {}
            self.save()
            log("stopped")

    def status(self) -> bool:
        self.load()
        procs = self.state["procs"]
        all_up = bool(procs)
        for n in COMPONENTS:
            rec = procs.get(n)
            up = rec_alive(rec)
            all_up &= up
            pid = rec["pid"] if rec else "-"
            print(f"{n:10} {'running' if up else 'stopped':8} pid {pid!s:8} log {self.log_path(n)}")
        return all_up

    def info(self) -> dict[str, Any]:
        if "ports" not in self.state:
            raise ClusterError(f"no cluster state in {self.dir}; run `cluster.py start`")
        port = self.ports
        host_key = (self.ssh_dir / "ssh_host_ed25519_key.pub").read_text().split()
        cpus, mem = self.node_resources()

        def user_info(name: str) -> dict[str, Any]:
            pw = pwd.getpwnam(name)
            accts = [a for a, m in ACCOUNTS.items() if name in m]
            groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem)
            d: dict[str, Any] = {
                "uid": pw.pw_uid,
                "gid": pw.pw_gid,
                "home": pw.pw_dir,
                "groups": groups,
                "accounts": accts,
                "default_account": accts[0] if accts else None,
            }
            if name in USERS:
                d["scratch"] = f"/scratch/{name}"
            return d

        return {
            "state_dir": str(self.dir),
            "running": {n: rec_alive(self.state["procs"].get(n)) for n in COMPONENTS},
            "ssh": {
                "host": "127.0.0.1",
                "port": port["ssh"],
                "host_key": f"{host_key[0]} {host_key[1]}",
                "host_key_pub": str(self.ssh_dir / "ssh_host_ed25519_key.pub"),
                "known_hosts": str(self.ssh_dir / "known_hosts"),
                "ca_key": str(self.ssh_dir / "user_ca"),
                "ca_pub": str(self.ssh_dir / "user_ca.pub"),
                "max_sessions": SSH_MAX_SESSIONS,
                "sftp": True,
                "users": [*USERS, SERVICE_ACCOUNT],
                "sshd_config": str(self.ssh_dir / "sshd_config"),
            },
            "slurm": {
                "conf": str(self.slurm_conf),
                "slurmdbd_conf": str(self.slurmdbd_conf),
                "env": {"SLURM_CONF": str(self.slurm_conf)},
                "version": self.state.get("slurm_version", ""),
                "cluster": CLUSTER_NAME,
                "node": NODE_NAME,
                "cpus": cpus,
                "real_cpus": os.cpu_count(),
                "real_memory_mb": mem,
                "partitions": [p["name"] for p in PARTITIONS],
                "default_partition": next(p["name"] for p in PARTITIONS if p["default"]),
                "hidden_partitions": [p["name"] for p in PARTITIONS if p["hidden"]],
                "partition_details": list(PARTITIONS),
                "reservation": RESERVATION["name"],
                "reservation_details": {
                    **RESERVATION,
                    "users": RESERVATION["users"].split(","),
                    "nodes": NODE_NAME,
                },
                "accounts": {a: list(m) for a, m in ACCOUNTS.items()},
                "private_data": PRIVATE_DATA if self.state.get("private_data") else None,
                "munge_socket": str(self.munge_socket),
                "ports": {k: port[k] for k in ("slurmctld", "slurmd", "slurmdbd")},
            },
            "slurmrestd": {
                "url": f"http://127.0.0.1:{port['slurmrestd']}",
                "port": port["slurmrestd"],
                "api_version": SLURMRESTD_API,
                "jwt_key": str(self.jwt_key),
                "user": SLURMRESTD_USER,
            },
            "mariadb": {"port": port["mysql"], "socket": str(self.mysql_socket)},
            "s3": {
                "endpoint": f"http://127.0.0.1:{port['s3']}",
                "region": S3_REGION,
                "access_key": S3_ACCESS_KEY,
                "secret_key": S3_SECRET_KEY,
                "addressing_style": "path",
                "signature_version": "s3v4",
            },
            "streamer": {
                "python": str(self.streamer_venv / "bin" / "python"),
                "package": STREAMER_PACKAGE,
                "host": "127.0.0.1",
                "port_range": list(STREAMER_PORTS),
            },
            "wormhole": {
                "command": str(self.wormhole_venv / "bin" / "wormhole"),
                "packages": list(WORMHOLE_PACKAGES),
                "mailbox_url": f"ws://127.0.0.1:{port['wormhole_mailbox']}/v1",
                "transit_relay": f"tcp:127.0.0.1:{port['wormhole_relay']}",
            },
            "users": {u: user_info(u) for u in USERS},
            "project_group": PROJECT_GROUP,
            "service_account": {"name": SERVICE_ACCOUNT, **user_info(SERVICE_ACCOUNT)},
            "logs": {n: str(self.log_path(n)) for n in COMPONENTS},
            "pids": {n: r["pid"] for n, r in self.state["procs"].items()},
            "last_start": self.state.get("last_start"),
        }


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="state directory (default: $HPCGATE_CLUSTER_DIR or <repo>/.hpcgate/cluster)",
    )
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (
        ("start", "start what is not running; print the cluster JSON"),
        ("stop", "stop the processes start recorded"),
        ("status", "show which parts run (exit 0 if all do, 3 if not)"),
        ("info", "print the cluster JSON"),
    ):
        sub.add_parser(name, help=help_, parents=[common])
    private = sub.add_parser(
        "private-data",
        help=f"turn PrivateData={PRIVATE_DATA} on or off in the running slurmctld and slurmdbd",
        parents=[common],
    )
    private.add_argument("setting", choices=("on", "off"))
    args = ap.parse_args(argv)
    os.umask(0o022)  # state files must be readable (and dirs traversable) by the test users
    state_dir = getattr(args, "state_dir", None) or Path(
        os.environ.get("HPCGATE_CLUSTER_DIR") or DEFAULT_STATE_DIR
    )
    cluster = Cluster(state_dir.resolve())
    try:
        if args.cmd == "start":
            print(json.dumps(cluster.start(), indent=2), flush=True)
        elif args.cmd == "stop":
            cluster.stop()
        elif args.cmd == "status":
            return 0 if cluster.status() else 3
        elif args.cmd == "info":
            cluster.load()
            print(json.dumps(cluster.info(), indent=2), flush=True)
        elif args.cmd == "private-data":
            cluster.set_private_data(args.setting == "on")
    except ClusterError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
