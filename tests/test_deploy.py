"""deploy/: the compose file, the Ray cluster launcher YAML and the KubeRay manifests are
valid for the tools that read them, keep their ports private and take secrets from outside."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.autoscaler
import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

# Field names of KubeRay's ray.io/v1 API (ray-operator/apis/ray/v1/raycluster_types.go and
# rayjob_types.go, KubeRay 1.5 to 1.6): a misspelt key is dropped by the API server's
# structural pruning without an error, so the manifests are checked against these.
RAYCLUSTER_SPEC = {"upgradeStrategy", "authOptions", "suspend", "managedBy", "autoscalerOptions",
                   "headServiceAnnotations", "enableInTreeAutoscaling",
                   "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
                   "workerGroupSpecs"}
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas",
                "idleTimeoutSeconds", "rayStartParams", "template", "scaleStrategy",
                "numOfHosts"}
AUTH_OPTIONS = {"mode"}
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
               "metadata", "clusterSelector", "submitterConfig", "managedBy",
               "deletionStrategy", "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode",
               "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
               "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"}
# core/v1 Container fields the manifests may use.
CONTAINER = {"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports",
             "resources", "volumeMounts", "securityContext", "lifecycle", "readinessProbe",
             "livenessProbe", "workingDir"}
SECRET_NAMES = re.compile(r"PASSWORD|TOKEN|DATABASE_URL|SECRET", re.IGNORECASE)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- deploy/compose.yaml -------------------------------------------------------------------

def test_compose_postgres_has_a_named_volume_a_healthcheck_and_gates_the_ray_head() -> None:
    """PostgreSQL 15 keeps its data in a named volume, has a pg_isready healthcheck, and the
    Ray head (which runs trials) waits for it to be healthy and asks Docker for the GPUs."""
    compose = _load(DEPLOY / "compose.yaml")
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    head = compose["services"]["ray-head"]
    assert head["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = head["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert head["environment"]["RAY_AUTH_MODE"] == "token"
    assert head["build"]["dockerfile"] == "deploy/worker.Dockerfile"


def test_compose_publishes_ports_on_loopback_only_and_writes_no_secret() -> None:
    """Every published port is bound to 127.0.0.1, and each secret-like variable of every
    service is a ${...} reference to deploy/.env, never a literal value."""
    compose = _load(DEPLOY / "compose.yaml")
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for key, value in service.get("environment", {}).items():
            if SECRET_NAMES.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(value)), (name, key)
    example = (DEPLOY / "env.example").read_text()
    referenced = set(re.findall(r"\$\{([A-Z_]+)", (DEPLOY / "compose.yaml").read_text()))
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", example, re.MULTILINE))
    assert referenced - {"HF_CACHE_ON_HOST"} <= documented
    assert "deploy/.env" in (REPO / ".gitignore").read_text().splitlines()


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_accepts_the_file_with_the_example_env(tmp_path: Path) -> None:
    """`docker compose config` (or docker-compose 1.x) resolves the file with env.example as
    deploy/.env, and refuses it when a required secret is missing."""
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    text = (DEPLOY / "compose.yaml").read_text()
    if command[-1].endswith("docker-compose"):
        text = re.sub(r"^name: .*\n", "", text, flags=re.MULTILINE)  # 1.x predates `name`
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "compose.yaml").write_text(text)
    (folder / ".env").write_text((DEPLOY / "env.example").read_text())
    argv = [*command, "-f", str(folder / "compose.yaml"), "--profile", "api", "config"]
    resolved = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert resolved.returncode == 0, resolved.stderr
    config = yaml.safe_load(resolved.stdout)
    assert set(config["services"]) == {"postgres", "ray-head", "api"}
    assert config["services"]["ray-head"]["environment"]["RAY_AUTH_TOKEN"] == "change-me"
    (folder / ".env").write_text("POSTGRES_USER=servetune\n")
    missing = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD" in missing.stderr


# --- deploy/ray-cluster.yaml ---------------------------------------------------------------

def test_cluster_launcher_yaml_matches_rays_schema() -> None:
    """The file validates against the cluster launcher schema this Ray ships, before and
    after Ray fills in its provider defaults (what `ray up` does)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _load(DEPLOY / "ray-cluster.yaml")
    errors = sorted(Draft7Validator(schema).iter_errors(config), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    validate_config(prepare_config(config))


def test_cluster_launcher_runs_gpu_workers_with_docker_and_token_auth() -> None:
    """A GPU-less head and an 8-GPU worker type; the token file and secrets file reach every
    node by file_mounts (no secret in the YAML); `ray start` runs with RAY_AUTH_MODE=token in
    the docker group; setup installs servetune from the repository."""
    config = _load(DEPLOY / "ray-cluster.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["GPU"] == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] == 8 for t in workers)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert config["file_mounts"]["~/servetune.env"] == "./deploy/.env"
    assert "deploy/.env" in config["rsync_exclude"]  # not inside the copied repository
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = config[key][-1]
        assert "RAY_AUTH_MODE=token" in start and start.startswith("sg docker -c")
    assert any("usermod -aG docker" in c for c in config["initialization_commands"])
    assert any("pip install" in c and "~/servetune" in c for c in config["setup_commands"])
    assert not SECRET_NAMES.search(json.dumps(config["provider"]))


# --- deploy/kuberay ------------------------------------------------------------------------

def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    cluster = _load(DEPLOY / "kuberay" / "raycluster.yaml")
    job = _load(DEPLOY / "kuberay" / "rayjob.yaml")
    return [("raycluster", cluster["spec"]), ("rayjob", job["spec"]["rayClusterSpec"])]


def test_kuberay_manifests_use_ray_io_v1_and_known_fields() -> None:
    """apiVersion ray.io/v1, and every key under spec is a field of KubeRay's v1 types (an
    unknown one would be pruned silently by the API server)."""
    cluster = _load(DEPLOY / "kuberay" / "raycluster.yaml")
    job = _load(DEPLOY / "kuberay" / "rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert set(job["spec"]) <= RAYJOB_SPEC, set(job["spec"]) - RAYJOB_SPEC
    for where, spec in _cluster_specs():
        assert set(spec) <= RAYCLUSTER_SPEC, (where, set(spec) - RAYCLUSTER_SPEC)
        assert set(spec["authOptions"]) <= AUTH_OPTIONS and spec["authOptions"]["mode"] == "token"
        assert set(spec["headGroupSpec"]) <= HEAD_GROUP, where
        for group in spec["workerGroupSpecs"]:
            assert set(group) <= WORKER_GROUP, (where, set(group) - WORKER_GROUP)
        for container in _containers(spec):
            assert set(container) <= CONTAINER, (where, set(container) - CONTAINER)
        assert all(isinstance(v, str) for v in spec["headGroupSpec"]["rayStartParams"].values())


def test_kuberay_pods_run_the_worker_image_gpus_and_secrets_from_kubernetes() -> None:
    """Head and workers run one worker image (deploy/worker.Dockerfile) at the Ray version
    servetune pins; workers request nvidia.com/gpu; the head gets SERVETUNE_DATABASE_URL from
    a Secret; no literal secret and no docker launcher anywhere."""
    dockerfile = (DEPLOY / "worker.Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}" in dockerfile
    for where, spec in _cluster_specs():
        assert spec["rayVersion"] == ray.__version__
        assert len({c["image"] for c in _containers(spec)}) == 1, where
        assert "servetune-worker" in _containers(spec)[0]["image"]
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in head["env"]}
        assert env["SERVETUNE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
        assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
        for group in spec["workerGroupSpecs"]:
            worker = group["template"]["spec"]["containers"][0]
            assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        for container in _containers(spec):
            for variable in container.get("env", []):
                if SECRET_NAMES.search(variable["name"]):
                    assert "value" not in variable, (where, variable["name"])
    text = (DEPLOY / "kuberay" / "rayjob.yaml").read_text()
    job = yaml.safe_load(text)
    assert "servetune run" in job["spec"]["entrypoint"]
    assert "kind: docker" not in text


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# --- docs/cluster.md -----------------------------------------------------------------------

def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_cluster_doc_links_resolve_and_name_the_deploy_files() -> None:
    """Every relative link of docs/cluster.md points at a file that exists (and a heading
    that exists, for #anchors), and the doc links each deployment file."""
    doc = REPO / "docs" / "cluster.md"
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), target
        if anchor:
            assert anchor in _anchors(file.read_text()), target
    for name in ("compose.yaml", "ray-cluster.yaml", "kuberay/raycluster.yaml",
                 "kuberay/rayjob.yaml", "worker.Dockerfile"):
        assert f"deploy/{name}" in text or name in text, name
    assert "docs/cluster.md" in (REPO / "README.md").read_text()
