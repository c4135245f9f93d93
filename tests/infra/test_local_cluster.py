"""The local multi-node cluster (pose3d.infra.local_cluster, cluster/local_cluster.py) and ``pose3d submit``.

Fast tests check the process bookkeeping and the submit command's pieces; the tests marked
``cluster`` start a real 2-node cluster with ``ray start`` and submit jobs to it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pose3d import __version__
from pose3d.cli.errors import UserError
from pose3d.cli.main import main
from pose3d.cli.submit import (
    build_runtime_env,
    enable_token_auth_if_configured,
    entrypoint_for,
    is_pose3d_checkout,
    parse_env,
    resolve_address,
)
from pose3d.infra.local_cluster import free_ports, is_running, session_processes, warn_if_not_reniced
from tests.cluster_fixture import REPO_ROOT, local_cluster, run_submit  # noqa: F401  (fixture)
from tests.polling import wait_for

# --- process bookkeeping (fast) -------------------------------------------------------------


def test_session_processes_follows_children_that_leave_the_session(tmp_path):
    # A session leader with a child in its session, and a grandchild that starts its own session
    # (as a Ray job's driver does): both are found from the leader's session id alone.
    pid_file = tmp_path / "escaped.pid"
    script = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        subprocess.Popen(["sleep", "60"])
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(p.pid))
        time.sleep(60)
        """
    )
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        assert wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip())
        escaped = int(pid_file.read_text())
        assert os.getsid(escaped) == escaped != leader.pid  # it really left the session
        assert wait_for(lambda: len(session_processes({leader.pid})) == 3)
        found = session_processes({leader.pid})
        assert leader.pid in found and escaped in found
        assert os.getpid() not in found
    finally:
        for pid in session_processes({leader.pid}):
            os.kill(pid, signal.SIGKILL)
        leader.wait()
    assert wait_for(lambda: not session_processes({leader.pid}))
    assert not is_running(escaped)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range():
    ports = free_ports(12)
    assert len(set(ports)) == 12
    range_file = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(range_file.read_text().split()[0]) if range_file.exists() else 32768
    for port in ports:
        assert port < low  # the OS never hands it to a connection or a bind(0) meanwhile
        with socket.socket() as s:
            s.bind(("", port))


def test_free_ports_passes_over_a_port_in_use():
    import random

    (busy,) = free_ports(1)

    class OffersTheBusyPortFirst(random.Random):
        offered = False

        def choice(self, seq):
            if not self.offered:
                self.offered = True
                return busy
            return super().choice(seq)

    with socket.socket() as taken:
        taken.bind(("", busy))
        taken.listen()
        (port,) = free_ports(1, OffersTheBusyPortFirst(0))
    assert port != busy


# --- pose3d submit: the pieces (fast) -------------------------------------------------------


def test_entrypoint_is_pose3d_with_quoted_arguments():
    assert entrypoint_for(["--", "train", "--name", "my run", "data.set_3d=a;b"]) == (
        "pose3d train --name 'my run' 'data.set_3d=a;b'"
    )
    assert entrypoint_for(["--version"]) == "pose3d --version"
    with pytest.raises(UserError, match="nothing to run"):
        entrypoint_for(["--"])
    with pytest.raises(UserError, match="cannot itself"):
        entrypoint_for(["submit", "--", "train"])


def test_parse_env():
    assert parse_env(["A=1", "B_2=x=y", "C="]) == {"A": "1", "B_2": "x=y", "C": ""}
    for bad in ("novalue", "=1", "A-B=1"):
        with pytest.raises(UserError, match="KEY=VALUE"):
            parse_env([bad])


def test_address_precedence():
    env = {"RAY_ADDRESS": "10.0.0.1:6379", "RAY_API_SERVER_ADDRESS": "http://10.0.0.1:8265"}
    assert resolve_address("http://h:1", env) == "http://h:1"
    assert resolve_address(None, env) == "http://10.0.0.1:8265"
    assert resolve_address(None, {"RAY_ADDRESS": "10.0.0.1:6379"}) == "10.0.0.1:6379"
    assert resolve_address(None, {}) == "http://127.0.0.1:8265"


def test_token_mode_is_enabled_only_when_a_token_is_given():
    env = {"RAY_AUTH_TOKEN_PATH": "/x/token"}
    enable_token_auth_if_configured(env)
    assert env["RAY_AUTH_MODE"] == "token"
    env = {"RAY_AUTH_TOKEN": "abc", "RAY_AUTH_MODE": "disabled"}  # an explicit mode is kept
    enable_token_auth_if_configured(env)
    assert env["RAY_AUTH_MODE"] == "disabled"
    env = {}
    enable_token_auth_if_configured(env)
    assert "RAY_AUTH_MODE" not in env


def _submit_args(**kw) -> argparse.Namespace:
    base = {"working_dir": None, "env": [], "pip": []}
    base.update(kw)
    return argparse.Namespace(**base)


def test_runtime_env_uploads_a_checkout_by_default(tmp_path):
    assert is_pose3d_checkout(REPO_ROOT)
    assert build_runtime_env(_submit_args(), REPO_ROOT) == {"working_dir": str(REPO_ROOT)}
    # Elsewhere nothing is uploaded unless asked; 'none' turns the upload off.
    assert build_runtime_env(_submit_args(), tmp_path) == {}
    assert build_runtime_env(_submit_args(working_dir="none"), REPO_ROOT) == {}
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "other"\n')
    (other / "pose3d").mkdir()
    (other / "pose3d" / "__init__.py").write_text("")
    assert not is_pose3d_checkout(other)
    got = build_runtime_env(_submit_args(working_dir=str(other), env=["K=v"], pip=["cdflib"]), tmp_path)
    assert got == {"working_dir": str(other), "env_vars": {"K": "v"}, "pip": ["cdflib"]}
    with pytest.raises(UserError, match="not a directory"):
        build_runtime_env(_submit_args(working_dir=str(tmp_path / "missing")), tmp_path)


def test_submit_to_an_unreachable_address_is_a_user_error(monkeypatch, capsys):
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    (port,) = free_ports(1)  # free now, so nothing listens there
    address = f"http://127.0.0.1:{port}"
    assert main(["submit", "--address", address, "--working-dir", "none", "--", "--version"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach a Ray cluster at {address}" in err


def test_submit_without_arguments_is_a_user_error(capsys):
    assert main(["submit"]) == 2
    assert "nothing to run" in capsys.readouterr().err


# --- a real 2-node cluster ------------------------------------------------------------------


def _http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


NODES_SCRIPT = """
import json, ray
ray.init(log_to_driver=False)
nodes = [n for n in ray.nodes() if n["Alive"]]
print(json.dumps([n["Resources"] for n in nodes]))
"""


@pytest.mark.cluster
@pytest.mark.slow
def test_two_alive_nodes(local_cluster):  # noqa: F811
    assert local_cluster.alive_nodes() == 2
    # A Ray client given the cluster's environment (RAY_ADDRESS + token) sees both nodes.
    done = subprocess.run(
        [sys.executable, "-c", NODES_SCRIPT],
        env=local_cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    resources = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(resources) == 2
    assert sorted(r["CPU"] for r in resources) == [4.0, 4.0]
    assert sorted(k for r in resources for k in r if k in ("node1", "node2")) == ["node1", "node2"]
    # The nodes' own temp dirs, not /tmp/ray.
    assert Path(local_cluster.state.temp_root).is_dir()
    assert all(
        Path(n.temp_dir).parent == Path(local_cluster.state.temp_root) for n in local_cluster.state.nodes
    )


@pytest.mark.cluster
@pytest.mark.slow
def test_the_cluster_requires_its_token(local_cluster, tmp_path):  # noqa: F811
    jobs_url = f"{local_cluster.dashboard_url}/api/jobs/"
    assert _http_status(jobs_url, None) == 401
    assert _http_status(jobs_url, "0" * 64) == 403
    assert _http_status(jobs_url, local_cluster.token) == 200
    # `pose3d submit` without the token (and without a ~/.ray/auth_token) is refused, exit 2.
    env = local_cluster.env()
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    env["HOME"] = str(tmp_path)
    done = run_submit(local_cluster, ["--version"], ["--working-dir", "none"], env=env, timeout_s=120)
    assert done.returncode == 2, done.stderr
    assert "refused the credentials" in done.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_submit_streams_the_job_log_and_succeeds(local_cluster):  # noqa: F811
    # From the checkout: the working dir is uploaded and the job runs `pose3d --version` there.
    done = run_submit(local_cluster, ["--version"], timeout_s=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pose3d {__version__}" in done.stdout  # the job's own output, streamed back
    assert "Running entrypoint for job" in done.stdout and "pose3d --version" in done.stdout
    assert "SUCCEEDED" in done.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_a_failing_job_exits_1(local_cluster):  # noqa: F811
    done = run_submit(
        local_cluster,
        ["train", "--config", "no-such-config"],
        ["--working-dir", "none", "--submission-id", "p3d-failing-job"],
        timeout_s=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no-such-config" in done.stdout  # pose3d train's error, from the job's log
    assert "p3d-failing-job FAILED" in done.stderr and "exited with code 2" in done.stderr
    # The submission id is now taken: a second submission is refused as a user error.
    again = run_submit(
        local_cluster, ["--version"], ["--working-dir", "none", "--submission-id", "p3d-failing-job"]
    )
    assert again.returncode == 2 and "did not accept the job" in again.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_a_killed_worker_node_leaves_the_cluster_and_its_restart_joins_again(local_cluster):  # noqa: F811
    # What `make test-elastic` does to its cluster mid-run (kept out of make test for its ~8 min),
    # here on the idle module cluster, so CI covers the kill and the restart.
    old = local_cluster.state.nodes[1]
    ours = local_cluster.pids()
    killed = local_cluster.kill_node(old.name)
    assert old.pid in killed and killed <= ours  # by the PIDs this cluster started
    assert not [p for p in killed if is_running(p)]
    assert wait_for(lambda: local_cluster.alive_nodes() == 1, timeout_s=120, every_s=1.0)
    local_cluster.restart_node(old.name)
    new = local_cluster.state.nodes[1]
    assert new.name == old.name and new.pid != old.pid and is_running(new.pid)
    assert new.temp_dir != old.temp_dir  # a fresh temp dir, not the killed node's sockets
    assert local_cluster.alive_nodes() == 2


@pytest.mark.cluster
@pytest.mark.slow
def test_script_status_then_stop_kills_every_process(local_cluster):  # noqa: F811
    # Runs last in this module: stops the shared cluster through the script, from another process.
    directory = str(local_cluster.directory)
    script = [sys.executable, "-m", "cluster.local_cluster"]
    status = subprocess.run(
        [*script, "status", "--dir", directory], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "alive in the GCS: 2" in status.stdout

    pids = local_cluster.pids()
    assert len(pids) >= 10  # GCS, raylets, dashboard, agents, workers...
    leaders = {n.pid for n in local_cluster.state.nodes}
    assert leaders <= pids
    temp_root = Path(local_cluster.state.temp_root)
    stop = subprocess.run(
        [*script, "stop", "--dir", directory], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert [p for p in pids if is_running(p)] == []
    assert not temp_root.exists()
    assert not (local_cluster.directory / "cluster.json").exists()
    current = Path("/tmp/ray/ray_current_cluster")
    assert not (current.is_file() and current.read_text().strip() == local_cluster.address)
    after = subprocess.run(
        [*script, "status", "--dir", directory], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert after.returncode == 1 and "no local cluster state" in after.stderr


def test_a_node_that_could_not_be_reniced_is_warned_about(caplog):
    child = subprocess.Popen(["sleep", "30"])  # started at this process's own niceness
    try:
        with caplog.at_level("WARNING", logger="pose3d.infra"):
            assert warn_if_not_reniced("node2", child.pid, -5) is (os.getpriority(os.PRIO_PROCESS, 0) == -20)
            assert warn_if_not_reniced("node2", child.pid, 0) is True
    finally:
        child.kill()
        child.wait()
    if os.getpriority(os.PRIO_PROCESS, 0) > -20:
        assert "node2: could not raise its CPU priority (nice -5" in caplog.text
    assert warn_if_not_reniced("node2", child.pid, -5) is True  # gone: nothing to say


def test_a_node_restarted_several_times_is_warned_about_once(tmp_path, monkeypatch, caplog):
    """A restart may take up to 4 attempts; a node that cannot be reniced is named once, not per try."""
    from pose3d.infra import local_cluster as lc

    if os.getpriority(os.PRIO_PROCESS, 0) == -20:
        pytest.skip("this process runs at nice -20: a child can never be below it")
    started, real_popen = [], subprocess.Popen

    def popen(cmd, **kwargs):  # a stand-in node at this process's niceness: never reniced
        started.append(real_popen(["sleep", "30"]))
        return started[-1]

    monkeypatch.setattr(lc.subprocess, "Popen", popen)
    cluster = lc.LocalCluster(tmp_path)
    try:
        with caplog.at_level("WARNING", logger="pose3d.infra"):
            for attempt in range(3):
                cluster._launch("node2", [], tmp_path / f"r{attempt}", {}, niceness=-10)
            cluster._launch("node3", [], tmp_path / "n3", {}, niceness=-10)
    finally:
        for child in started:
            child.kill()
            child.wait()
    assert len(started) == 4
    warned = [r.getMessage() for r in caplog.records if "could not raise its CPU priority" in r.getMessage()]
    assert [w.split(":")[0] for w in warned] == ["node2", "node3"]


def test_a_raylet_that_died_at_start_is_told_from_one_still_starting(tmp_path):
    from pose3d.infra.local_cluster import _raylet_fatal

    logs = tmp_path / "session_2026-12-02_16-09-44_493831_30638" / "logs"
    logs.mkdir(parents=True)
    err = logs / "raylet.err"
    err.write_text("[2026-12-02 16:16:13,335 I 2758 2758] (raylet) main.cc:300: starting\n")
    assert _raylet_fatal(tmp_path) == ""  # still starting: restart_node waits on
    fatal = (
        "[2026-12-02 16:16:31,336 C 2758 2758] (raylet) node_manager.cc:3588:  An unexpected system "
        "state has occurred. ... Timed out waiting for file .../metrics_agent_port_5bd1"
    )
    err.write_text(err.read_text() + fatal + "\n*** StackTrace Information ***\n")
    assert _raylet_fatal(tmp_path) == fatal  # restart_node kills that start and tries again
