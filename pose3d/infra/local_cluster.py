"""A real multi-node Ray cluster on one machine: a head and worker nodes, each a ``ray start --block``.

Used by the cluster tests and by ``python -m cluster.local_cluster``. Each cluster keeps to itself:

- its own ports, picked free at start (GCS, dashboard, client server, agents, metrics), and random
  worker ports, so two clusters, or an in-process ``ray.init`` beside them, never collide;
- its own Ray temp dir (short, under /tmp: Ray's Unix sockets live there and their paths are limited
  to 107 bytes), so nothing is written to /tmp/ray;
- its own auth token in ``<dir>/auth_token``, handed to every node and client through
  ``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN_PATH``; the user's ``~/.ray/auth_token`` is never used;
- its own processes: every ``ray start --block`` is launched in a new session, and Ray's processes
  stay in that session (workers change their process group, not their session). Stopping signals
  the processes of those sessions plus their descendants (a job's driver runs in a session of its
  own), never anything found by name (no machine-wide stop command).

The state (PIDs, ports, addresses) is saved in ``<dir>/cluster.json`` so another process can stop it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pose3d.infra.ray_session import free_ports

log = logging.getLogger("pose3d.infra")

STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
STARTED_MARKER = "Ray runtime started."
#: Ray writes the address of the last cluster started here (relative to a temp dir).
ADDRESS_FILE = "ray_current_cluster"


class ClusterError(RuntimeError):
    """The local cluster could not be started, or its state is unusable."""


@dataclass
class NodeRecord:
    """One ``ray start --block`` process: the leader of a session holding that node's processes."""

    name: str  # "head", "node2", ...
    pid: int  # also the session id of every Ray process of this node
    start_ticks: int  # /proc start time, guards against a reused PID
    log: str  # stdout + stderr of ``ray start``
    temp_dir: str  # the node's Ray temp dir
    ports: dict[str, int] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # `ray start` arguments besides ports and sizes


@dataclass
class ClusterState:
    directory: str
    gcs_address: str  # host:port, what ``ray.init(address=...)`` takes
    dashboard_url: str  # http://127.0.0.1:port, what the Jobs SDK takes
    token_path: str
    temp_root: str  # removed on stop
    nodes: list[NodeRecord]

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ClusterState:
        path = Path(directory) / STATE_FILE
        if not path.is_file():
            raise ClusterError(f"no local cluster state at {path}")
        data = json.loads(path.read_text())
        data["nodes"] = [NodeRecord(**n) for n in data["nodes"]]
        return cls(**data)


# --- processes ------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session id, start ticks) of a process from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def all_processes() -> dict[int, tuple[str, int, int, int]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def session_processes(session_ids: set[int]) -> set[int]:
    """Live PIDs in the given sessions, plus all their live descendants (in whatever session)."""
    table = {pid: st for pid, st in all_processes().items() if st[0] not in ("Z", "X")}
    found = {pid for pid, st in table.items() if st[2] in session_ids}
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st[1], []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Wait until none of ``pids`` runs; return those still running at the timeout."""
    deadline = time.monotonic() + timeout_s
    alive = {p for p in pids if is_running(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {p for p in alive if is_running(p)}
    return alive


# --- ports and addresses --------------------------------------------------------------------


def _http_get(url: str, token: str | None, timeout_s: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def ray_executable() -> str:
    """The ``ray`` script of the running interpreter's environment (the project's .venv)."""
    candidate = Path(sys.executable).parent / "ray"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise ClusterError("cannot find the `ray` command next to the Python interpreter or on PATH")
    return found


# --- the cluster ----------------------------------------------------------------------------


class LocalCluster:
    """A head node plus ``num_nodes - 1`` worker nodes on this machine, each started with ``ray start``.

    ``LocalCluster(dir).start()`` ... ``.stop()``, or as a context manager. Node ``i`` (1-based, the
    head is 1) carries the custom resource ``node{i}: 1`` so work can be pinned to a node.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        num_nodes: int = 2,
        cpus_per_node: int = 4,
        object_store_mb: int = 200,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.directory = Path(directory).resolve()
        self.num_nodes = num_nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self.state: ClusterState | None = None
        self._popens: list[subprocess.Popen] = []
        self._not_reniced: set[str] = set()  # nodes already warned about: one warning, not one per retry

    # -- addresses and credentials --

    def _require_state(self) -> ClusterState:
        if self.state is None:
            raise ClusterError(f"the local cluster in {self.directory} is not started")
        return self.state

    @property
    def address(self) -> str:
        """GCS address ``host:port`` (for ``ray.init`` and ``ray start --address``)."""
        return self._require_state().gcs_address

    @property
    def dashboard_url(self) -> str:
        """``http://127.0.0.1:port``: the Jobs API (``pose3d submit --address``)."""
        return self._require_state().dashboard_url

    @property
    def token_path(self) -> Path:
        return self.directory / TOKEN_FILE

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()

    def auth_env(self) -> dict[str, str]:
        """The variables that make a Ray client (or node) use this cluster's token."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses that talk to this cluster: token auth, RAY_ADDRESS (GCS),
        RAY_API_SERVER_ADDRESS (dashboard, used by the Jobs SDK and ``pose3d submit``), and PATH
        starting with this interpreter's bin dir so ``ray`` and ``pose3d`` are the project's."""
        env = dict(os.environ if base is None else base)
        env.pop("RAY_AUTH_TOKEN", None)  # would take precedence over the token file
        env.update(self.auth_env())
        env["RAY_ADDRESS"] = self.address
        env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # A raylet starting on a loaded 2-core machine (a node restarted under a running job) can
        # take longer than Ray's default 30 s to register with the GCS.
        env.setdefault("RAY_raylet_start_wait_time_s", "120")
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        return env

    # -- start --

    def _node_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
            env.pop(var, None)
        env.update(self.auth_env())
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # A raylet starting on a loaded 2-core machine (a node restarted under a running job) can
        # take longer than Ray's default 30 s to register with the GCS.
        env.setdefault("RAY_raylet_start_wait_time_s", "120")
        # Jobs run their entrypoint through a shell with the node's PATH: find this env's pose3d.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        return env

    def _launch(
        self, name: str, args: list[str], temp_dir: Path, ports: dict[str, int], niceness: int = 0
    ) -> NodeRecord:
        """Start one node's ``ray start``; ``niceness`` < 0 raises its CPU priority, and its processes'
        (where allowed: root or CAP_SYS_NICE; otherwise it starts at normal priority)."""
        log_path = self.directory / f"{name}.log"
        flags = [f"--{k}={v}" for k, v in ports.items()]
        cmd = [
            ray_executable(),
            "start",
            "--block",
            *args,
            *flags,
            f"--num-cpus={self.cpus_per_node}",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            # Random worker ports (0 = let the OS pick) instead of the shared default 10002-19999.
            "--min-worker-port=0",
            "--max-worker-port=0",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--log-style=record",
            "--log-color=false",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._node_env(),
                cwd=self.directory,
                start_new_session=True,  # the node's processes stay in this session: stop kills it
                preexec_fn=(lambda: _try_nice(niceness)) if niceness else None,
            )
        self._popens.append(proc)
        if niceness and name not in self._not_reniced and not warn_if_not_reniced(name, proc.pid, niceness):
            self._not_reniced.add(name)
        stat = proc_stat(proc.pid)
        return NodeRecord(
            name=name,
            pid=proc.pid,
            start_ticks=stat[3] if stat else 0,
            log=str(log_path),
            temp_dir=str(temp_dir),
            ports=ports,
            args=args,
        )

    def _wait_started(self, node: NodeRecord, deadline: float) -> None:
        log = Path(node.log)
        while time.monotonic() < deadline:
            if STARTED_MARKER in log.read_text(errors="replace"):
                return
            if not is_running(node.pid):
                raise ClusterError(f"`ray start` for {node.name} exited:\n{_tail(log)}")
            fatal = _raylet_fatal(Path(node.temp_dir))
            if fatal:  # `ray start` itself would wait out its own timeout (minutes) first
                raise ClusterError(f"the raylet of {node.name} died at start: {fatal}")
            time.sleep(0.25)
        raise ClusterError(f"`ray start` for {node.name} did not finish in time:\n{_tail(log)}")

    def _wait_port(self, node: NodeRecord, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if not is_running(node.pid):
                raise ClusterError(f"`ray start` for {node.name} exited:\n{_tail(Path(node.log))}")
            time.sleep(0.2)
        raise ClusterError(f"{node.name} did not open port {port} in time:\n{_tail(Path(node.log))}")

    def start(self, timeout_s: float = 120.0) -> LocalCluster:
        """Start the head, then the worker nodes; return once all nodes are alive in the GCS and the
        dashboard answers. On failure, whatever was started is stopped again."""
        if (self.directory / STATE_FILE).is_file():
            old = ClusterState.load(self.directory)
            if any(is_running(n.pid) for n in old.nodes):
                raise ClusterError(f"a local cluster is already running from {self.directory}")
        self.directory.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)  # 256 bits, as `ray get-auth-token --generate`
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        temp_root = Path(tempfile.mkdtemp(prefix="p3d-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
        deadline = time.monotonic() + timeout_s
        self.state = ClusterState(
            directory=str(self.directory),
            gcs_address="",
            dashboard_url="",
            token_path=str(self.token_path),
            temp_root=str(temp_root),
            nodes=[],
        )
        try:
            self._start_nodes(temp_root, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nodes(self, temp_root: Path, deadline: float) -> None:
        state = self._require_state()
        names = ["port", "dashboard-port", "ray-client-server-port"]
        agent = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port"]
        agent.append("metrics-export-port")
        ports = free_ports(len(names) + len(agent) * self.num_nodes)
        head_ports = dict(zip(names + agent, ports[: len(names) + len(agent)], strict=True))
        head = self._launch(
            "head",
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                '--resources={"node1": 1}',
            ],
            temp_root / "h",
            head_ports,
        )
        state.nodes.append(head)
        state.dashboard_url = f"http://127.0.0.1:{head_ports['dashboard-port']}"
        state.save()
        # Worker nodes may join as soon as the GCS listens: overlap their start with the head's.
        self._wait_port(head, head_ports["port"], deadline)
        for i in range(2, self.num_nodes + 1):
            offset = len(names) + len(agent) * (i - 1)
            node = self._launch(
                f"node{i}",
                [f"--address=127.0.0.1:{head_ports['port']}", f'--resources={{"node{i}": 1}}'],
                temp_root / f"w{i}",
                dict(zip(agent, ports[offset : offset + len(agent)], strict=True)),
            )
            state.nodes.append(node)
            state.save()
        self._wait_started(head, deadline)
        # Ray replaces 127.0.0.1 by the machine's address; it writes the real GCS address here.
        state.gcs_address = (temp_root / "h" / ADDRESS_FILE).read_text().strip()
        state.save()
        for k, node in enumerate(state.nodes[1:], start=1):
            try:
                self._wait_started(node, deadline)
            except ClusterError:
                if is_running(node.pid):
                    raise  # still starting at the deadline
                # Joined too early (the head still starting, a loaded machine): once more, now
                # that the head is up, keeping the failed attempt's log.
                Path(node.log).replace(Path(node.log).with_suffix(".failed.log"))
                # Fresh ports: a port taken meanwhile by another process may be why it failed.
                ports = dict(zip(node.ports, free_ports(len(node.ports)), strict=True))
                retry = self._launch(node.name, node.args, Path(node.temp_dir), ports)
                state.nodes[k] = retry
                state.save()
                self._wait_started(retry, deadline)
        while self.alive_nodes() < self.num_nodes:
            if time.monotonic() > deadline:
                raise ClusterError(f"only {self.alive_nodes()} of {self.num_nodes} nodes came up")
            time.sleep(0.5)

    # -- lose and regain a worker node (elastic training tests) --

    def kill_node(self, name: str, timeout_s: float = 30.0) -> set[int]:
        """SIGKILL every process of worker node ``name`` (its ``ray start``, raylet, workers): a
        machine lost, as a preempted spot instance is. Returns the PIDs killed; the head is refused."""
        node = self._node(name)
        pids = session_processes({node.pid})
        _signal_all(pids, signal.SIGKILL)
        left = _wait_gone(pids, timeout_s)
        if left:
            raise ClusterError(f"{name}: processes {sorted(left)} survived SIGKILL")
        return pids

    def restart_node(self, name: str, timeout_s: float = 120.0, attempts: int = 4) -> None:
        """Start worker node ``name`` again (same resources, fresh ports) after ``kill_node``; returns
        once it joined the cluster. Its previous log is kept beside the new one.

        A start that does not come up within ``timeout_s``, or whose raylet dies meanwhile, is
        killed, by its own PIDs, and tried again with fresh ports and temp dir, up to ``attempts``
        starts in all. Why: Ray 2.60's raylet gives its dashboard agent a fixed 15 s to write its
        ports and aborts past that (ray-project/ray issue 65983); on 2 cores busy training, the
        agent of a restarted node has missed it twice in a row (docs/design.md, Elastic training)."""
        state = self._require_state()
        node = self._node(name)
        if is_running(node.pid):
            raise ClusterError(f"{name} is still running")
        base_temp = node.temp_dir
        for attempt in range(1, attempts + 1):
            deadline = time.monotonic() + timeout_s
            Path(node.log).replace(Path(node.log).with_suffix(f".{node.pid}.log"))
            ports = dict(zip(node.ports, free_ports(len(node.ports)), strict=True))
            # A fresh temp dir: the killed node's sockets and session files under the old one would
            # stall the new raylet's start (a worker node takes the head's session name).
            # Raised priority: the new raylet's dashboard agent must start within Ray's fixed 15 s
            # while the running job keeps the cores busy (see the docstring).
            fresh = self._launch(node.name, node.args, Path(f"{base_temp}r{attempt}"), ports, niceness=-10)
            state.nodes[state.nodes.index(node)] = fresh
            state.save()
            try:
                self._wait_started(fresh, deadline)
                break
            except ClusterError as err:
                pids = session_processes({fresh.pid})
                _signal_all(pids, signal.SIGKILL)
                _wait_gone(pids, 30.0)
                if attempt == attempts:
                    logs = sorted(Path(fresh.temp_dir).glob("session_*/logs/raylet.*"))
                    logs += sorted(Path(fresh.temp_dir).glob("session_*/logs/dashboard_agent.*"))
                    detail = "\n".join(f"{f}:\n{_tail(f)}" for f in logs)
                    raise ClusterError(f"{name}: {attempts} starts failed; last: {err}\n{detail}") from None
                log.warning("%s did not start (%s); starting it again", name, str(err).splitlines()[0])
                node = fresh
        while self.alive_nodes() < len(state.nodes):
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} restarted but did not join the cluster in time")
            time.sleep(0.5)

    def _node(self, name: str) -> NodeRecord:
        state = self._require_state()
        found = [n for n in state.nodes if n.name == name]
        if not found or found[0] is state.nodes[0]:
            raise ClusterError(
                f"no worker node {name!r} (nodes: {', '.join(n.name for n in state.nodes[1:])})"
            )
        return found[0]

    # -- inspect --

    def alive_nodes(self, timeout_s: float = 20.0) -> int:
        """Nodes the GCS reports ALIVE (through the dashboard's State API; -1 if it does not answer
        within ``timeout_s``: a dashboard on a loaded 2-core machine can take seconds)."""
        url = f"{self.dashboard_url}/api/v0/nodes?limit=100"
        try:
            status, body = _http_get(url, self.token, timeout_s)
        except OSError:
            return -1
        if status != 200:
            return -1
        rows = json.loads(body)["data"]["result"]["result"]
        return sum(1 for row in rows if row.get("state") == "ALIVE")

    def pids(self) -> set[int]:
        """Every live process of this cluster: the nodes' sessions and their descendants."""
        state = self._require_state()
        return session_processes({n.pid for n in state.nodes})

    # -- stop --

    def stop(self, grace_s: float = 5.0, keep_temp: bool = False) -> set[int]:
        """Stop every process of this cluster: SIGTERM, SIGKILL after ``grace_s`` (gcs_server often
        needs it), worker nodes first. Returns the PIDs that were signalled. Idempotent."""
        state = self.state
        if state is None:
            return set()
        signalled: set[int] = set()
        for node in reversed(state.nodes):
            pids = session_processes({node.pid})
            signalled |= pids
            _signal_all(pids, signal.SIGTERM)
            left = _wait_gone(pids, grace_s)
            # Descendants that appeared meanwhile (a worker being spawned) go with the rest.
            left |= session_processes({node.pid})
            if left:
                signalled |= left
                _signal_all(left, signal.SIGKILL)
                left = _wait_gone(left, 10.0)
            if left:
                raise ClusterError(f"processes of {node.name} survived SIGKILL: {sorted(left)}")
        for proc in self._popens:  # reap our own children
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._popens.clear()
        _forget_address(state.gcs_address)
        if not keep_temp:
            shutil.rmtree(state.temp_root, ignore_errors=True)
        (self.directory / STATE_FILE).unlink(missing_ok=True)
        self.state = None
        return signalled

    @classmethod
    def attach(cls, directory: str | os.PathLike) -> LocalCluster:
        """The cluster started earlier from ``directory`` (possibly by another process)."""
        state = ClusterState.load(directory)
        cluster = cls(directory, num_nodes=len(state.nodes))
        cluster.state = state
        return cluster

    def node_status(self) -> dict[str, bool]:
        """Node name -> whether its ``ray start`` process still runs (same PID, same start time)."""
        status = {}
        for node in self._require_state().nodes:
            stat = proc_stat(node.pid)
            status[node.name] = stat is not None and stat[0] != "Z" and stat[3] == node.start_ticks
        return status

    def __enter__(self) -> LocalCluster:
        return self if self.state is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _forget_address(gcs_address: str) -> None:
    """Remove a ``ray_current_cluster`` file in Ray's default temp dirs if it names this (now dead)
    cluster: a later plain ``ray.init()`` would otherwise try to join it."""
    bases = {"/tmp", os.environ.get("RAY_TMPDIR"), os.environ.get("TMPDIR")}
    for base in filter(None, bases):
        path = Path(base) / "ray" / ADDRESS_FILE
        try:
            if gcs_address and path.read_text().strip() == gcs_address:
                path.unlink()
        except OSError:
            pass


def warn_if_not_reniced(name: str, pid: int, increment: int) -> bool:
    """Warn, and return False, when process ``pid`` did not get this process's niceness +
    ``increment`` (raising priority needs root or CAP_SYS_NICE; ``_try_nice`` then leaves it as is,
    and a node restarted on busy cores may miss Ray's 15 s agent start: docs/design.md, Elastic
    training). A process already gone is not warned about."""
    try:
        got = os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return True
    wanted = max(-20, os.getpriority(os.PRIO_PROCESS, 0) + increment)  # nice stops at -20
    if got > wanted:
        log.warning(
            "%s: could not raise its CPU priority (nice %+d needs root or CAP_SYS_NICE; it runs at "
            "nice %d): on busy cores its raylet may give up on its dashboard agent, and the restart "
            "is then retried",
            name,
            increment,
            got,
        )
        return False
    return True


def _try_nice(increment: int) -> None:
    """``os.nice`` in a child before exec; without the right to raise priority, leave it as is."""
    try:
        os.nice(increment)
    except OSError:
        pass


#: A glog line of severity C (fatal), e.g. "[2026-12-02 16:16:31,336 C 2758 2758] (raylet) ...".
_GLOG_FATAL = re.compile(r"\[\S+ \S+ C \d+ \d+\]")


def _raylet_fatal(temp_dir: Path) -> str:
    """The first fatal line (glog severity C) of a raylet log under ``temp_dir``, or ""."""
    for err in temp_dir.glob("session_*/logs/raylet.err"):
        for line in err.read_text(errors="replace").splitlines():
            if _GLOG_FATAL.match(line):
                return line.strip()
    return ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
