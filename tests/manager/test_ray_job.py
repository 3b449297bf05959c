"""A study submitted as a Ray job to a running cluster, the way docs/cluster.md says: a Ray
head started with ``ray start --head`` and token authentication on, ``servetune run`` as the
job's entrypoint with ``--working-dir``, the database URL from the job's environment, the
results in a real PostgreSQL server.

The head is this test's own: private ports, its own ``--temp-dir`` and its own token. It is
never stopped with ``ray stop`` (which stops every Ray instance on the machine, other tests'
included) but by killing exactly the processes that carry its marker in their environment.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from common.results import TrialStatus
from common.store import Store, StudyStatus
from manager.cli import main
from tests.pg import PostgresCluster, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MARKER = "SERVETUNE_TEST_RAY_HEAD"
STUDY = "ray-job"
STUDY_YAML = f"""\
name: {STUDY}
model: {{name: meta-llama/Llama-3.1-8B-Instruct}}
engine: {{name: vllm, simulated: true}}
search_space: {{tensor-parallel-size: [1, 2]}}
search: {{algorithm: grid, max_concurrent_trials: 3}}
benchmark: {{scenarios: ['D(128,32)'], concurrency: [4], requests_per_level: 8,
            timeouts: {{startup_s: 60}}}}
cluster: {{address: auto}}
"""
PLANNED_TRIALS = 3  # the baseline (trial 0) and the grid's two points
JOB_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class RayHead:
    dashboard_url: str
    token: str
    temp_dir: Path
    token_path: Path

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """``ray start --head`` with 4 logical GPUs and token authentication, as a user starts a
    one-host cluster: ``RAY_AUTH_MODE=token`` and the token in a file that
    ``RAY_AUTH_TOKEN_PATH`` names (a private file instead of ``~/.ray/auth_token``)."""
    # Ray's socket paths must stay under 107 bytes: a short root under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="st-rj-", dir="/tmp"))
    token = secrets.token_hex(32)  # what `ray get-auth-token --generate` writes
    token_path = temp_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    ports = _distinct_free_ports((
        "port", "dashboard-port", "object-manager-port", "node-manager-port",
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port"))
    argv = [str(VENV_BIN / "ray"), "start", "--head", "--num-gpus", "4", "--num-cpus", "4",
            "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
            "--include-dashboard", "true", "--temp-dir", str(temp_dir),
            "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
            *[item for name, port in ports.items() for item in (f"--{name}", str(port))]]
    env = _head_env(temp_dir, token_path)
    try:
        started = subprocess.run(argv, env=env, cwd=temp_dir, capture_output=True, text=True,
                                 timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield RayHead(f"http://127.0.0.1:{ports['dashboard-port']}", token, temp_dir,
                      token_path)
    finally:
        _kill_marked(str(temp_dir))
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def test_study_submitted_as_a_ray_job_stores_every_trial_in_postgresql(
        ray_head: RayHead, postgres: PostgresCluster, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`servetune run study.yaml` submitted with --working-dir to a token-authenticated head
    succeeds; the dashboard refuses requests without the token; every planned trial is in
    the PostgreSQL database named by the job's SERVETUNE_DATABASE_URL, once, terminal, with
    the node and GPU ids it ran on; `servetune status` reads the study back from there."""
    started = time.monotonic()
    url = postgres.create_database("ray_job")
    unauthenticated = httpx.get(f"{ray_head.dashboard_url}/api/jobs/", timeout=10)
    assert unauthenticated.status_code == 401, unauthenticated.text

    work_dir = tmp_path / "study"  # what `--working-dir .` uploads: the study file's folder
    work_dir.mkdir()
    (work_dir / "study.yaml").write_text(STUDY_YAML)
    client = JobSubmissionClient(ray_head.dashboard_url, headers=ray_head.auth_headers)
    job_id = client.submit_job(
        entrypoint="servetune run study.yaml",
        runtime_env={"working_dir": str(work_dir),
                     "env_vars": {"SERVETUNE_DATABASE_URL": url}})
    status = _wait_for_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status is JobStatus.SUCCEEDED, f"job {job_id} ended {status}:\n{logs}"
    assert f"{PLANNED_TRIALS} trials in" in logs, logs
    assert f"@127.0.0.1:{postgres.port}/ray_job" in logs  # the URL from the job's env

    cli = _ray_cli(["job", "status", job_id, "--address", ray_head.dashboard_url],
                   ray_head, with_token=True)
    assert cli.returncode == 0 and "succeeded" in cli.stdout.lower(), cli.stdout + cli.stderr

    with Store.open(url) as store:
        info = store.study(STUDY)
        trials = store.trials(STUDY)
    assert info is not None and info.status is StudyStatus.SUCCEEDED
    assert sorted(t.number for t in trials) == list(range(PLANNED_TRIALS)), trials
    head_node_id = _head_node_id(ray_head)
    for trial in trials:
        assert trial.status is not TrialStatus.RUNNING and trial.finished_at is not None
        assert trial.status is TrialStatus.SUCCEEDED, (trial.number, trial.message)
        # The node's address as the trial saw it (the routed one: not always Ray's
        # --node-ip-address), and Ray's node id.
        assert trial.node, trial
        assert trial.node_id == head_node_id, trial
        assert len(trial.gpu_ids) == int(trial.params.get("tensor-parallel-size", 1))
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT number) FROM trials").fetchone()
    assert rows == (PLANNED_TRIALS, PLANNED_TRIALS)
    capsys.readouterr()
    assert main(["status", STUDY, "--database-url", url]) == 0
    status_out = capsys.readouterr().out
    assert f"study {STUDY}: succeeded after " in status_out
    assert f"({PLANNED_TRIALS} succeeded, 0 failed, 0 running)" in status_out
    print(f"ray job study: {time.monotonic() - started:.1f} s")


def test_the_ray_cli_needs_the_token(ray_head: RayHead) -> None:
    """`ray job list` against the head fails without the token and works with
    RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, as docs/cluster.md tells CLI users."""
    argv = ["job", "list", "--address", ray_head.dashboard_url]
    refused = _ray_cli(argv, ray_head, with_token=False)
    assert refused.returncode != 0
    assert "401" in refused.stdout + refused.stderr or "uthenticat" in refused.stderr
    allowed = _ray_cli(argv, ray_head, with_token=True)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def _distinct_free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free port per name, no two alike (a port just freed can be handed out again, and
    ``ray start`` refuses one port for two components)."""
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for name in names:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        ports[name] = port
    return ports


def _head_node_id(head: RayHead) -> str:
    """The one node's id, from the dashboard's state API (token required)."""
    response = httpx.get(f"{head.dashboard_url}/api/v0/nodes", headers=head.auth_headers,
                         timeout=30)
    response.raise_for_status()
    nodes = response.json()["data"]["result"]["result"]
    assert len(nodes) == 1, nodes
    return str(nodes[0]["node_id"])


def _wait_for_job(client: JobSubmissionClient, job_id: str) -> JobStatus:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(1.0)
    logs = client.get_job_logs(job_id)
    client.stop_job(job_id)
    pytest.fail(f"job {job_id} not done after {JOB_TIMEOUT_S:.0f} s:\n{logs}")


def _ray_cli(args: list[str], head: RayHead,
             with_token: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env["HOME"] = str(head.temp_dir)  # no ~/.ray/auth_token of this machine's user
    if with_token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_path))
    return subprocess.run([str(VENV_BIN / "ray"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _head_env(temp_dir: Path, token_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "SERVETUNE_")) and k != "CUDA_VISIBLE_DEVICES"}
    env.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
        # The installed servetune on PATH, as in an activated virtualenv or the worker image.
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        # Every process of this head inherits it: how the finalizer finds them, and only them.
        MARKER: str(temp_dir),
    })
    return env


def _kill_marked(marker_value: str, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process whose environment has this head's marker."""
    needle = f"{MARKER}={marker_value}".encode()
    pids = _marked_pids(needle)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = _marked_pids(needle)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _marked_pids(needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            marked = needle in (entry / "environ").read_bytes().split(b"\0")
            zombie = "State:\tZ" in (entry / "status").read_text()
        except OSError:
            continue
        if marked and not zombie:
            found.append(int(entry.name))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
