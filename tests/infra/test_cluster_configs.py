"""The cluster definitions in cluster/: the launcher YAMLs pass Ray's own config validation, and the
KubeRay manifests have the fields KubeRay's ray.io/v1 resources require, with a runnable entrypoint."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from pose3d.cli.main import build_parser
from pose3d.cli.train import resolve_config

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHER_YAMLS = ["aws.yaml", "gcp.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER_DIR / name).read_text())


def _ray_validated(config: dict) -> dict:
    """What `ray up` does to a config before using it: fill defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _check_pose3d_train(entrypoint: str) -> None:
    """The command parses as `pose3d train` and its config (packaged config + overrides) validates."""
    words = shlex.split(entrypoint)
    assert words[:2] == ["pose3d", "train"], entrypoint
    args = build_parser().parse_args(words[1:])
    cfg = resolve_config(args)  # raises UserError on an unknown key or an invalid value
    assert cfg.scaling.use_gpu and cfg.scaling.worker_range[0] >= 1


# --- Ray cluster launcher -------------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_passes_ray_validation(name):
    config = _load(name)
    prepared = _ray_validated(config)
    assert prepared["provider"]["type"] == name.split(".")[0]
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_ray_validation_rejects_a_broken_config():
    # The check above can fail: Ray's schema refuses fractional resources and unknown node-type keys.
    config = _load("aws.yaml")
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_train"]["resources"]["GPU"] = 0.5
    with pytest.raises(Exception, match="0.5"):
        _ray_validated(bad)
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_train"]["instance"] = "g5.2xlarge"
    with pytest.raises(Exception, match="instance"):
        _ray_validated(bad)


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_has_gpu_and_cpu_worker_types(name):
    config = _load(name)
    types = config["available_node_types"]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu = [k for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1]
    cpu_only = [
        k
        for k, v in workers.items()
        if v["resources"].get("GPU", 0) == 0 and v["resources"].get("CPU", 0) > 0
    ]
    assert gpu, f"{name}: no GPU worker type"
    assert cpu_only, f"{name}: no CPU-only (preprocessing) worker type"
    for kind in gpu + cpu_only:
        assert types[kind]["max_workers"] >= 1
    # The GPU type runs a GPU image (and on GCP actually attaches a GPU to the VM).
    assert "gpu" in types[gpu[0]]["docker"]["worker_image"]
    if name == "gcp.yaml":
        accel = types[gpu[0]]["node_config"]["guestAccelerators"][0]
        assert accel["acceleratorCount"] == types[gpu[0]]["resources"]["GPU"]


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_has_a_spot_gpu_type_for_elastic_runs(name):
    types = _load(name)["available_node_types"]
    spot = types["gpu_train_spot"]
    assert spot["resources"] == types["gpu_train"]["resources"]  # the same workers, cheaper capacity
    assert spot["min_workers"] == 0 and spot["max_workers"] >= 2
    node = spot["node_config"]
    if name == "aws.yaml":
        assert node["InstanceMarketOptions"]["MarketType"] == "spot"
    else:
        assert node["scheduling"]["provisioningModel"] == "SPOT"
        assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"  # GPUs require it
    # An elastic run over these nodes is a valid pose3d command.
    args = build_parser().parse_args(["train", "--config", "paper", "--gpu", "--workers", "2:4",
                                      "run.max_failures=-1", "data.batch_size=24"])  # fmt: skip
    cfg = resolve_config(args)
    assert cfg.scaling.worker_range == (2, 4) and cfg.scaling.elastic


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_mounts_shared_storage_and_installs_pose3d(name):
    config = _load(name)
    prepared = _ray_validated(config)
    init = " ".join(config["initialization_commands"])
    # A network file system is mounted on every host and passed into the Ray container.
    assert "mount -t nfs" in init and "/mnt/shared" in init
    assert any("/mnt/shared:/mnt/shared" in opt for opt in config["docker"]["run_options"])
    # The checkout is synced to every node and installed there, head and workers alike.
    assert config["file_mounts"]["~/pose3d"] == "."
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and "~/pose3d" in c for c in prepared[key]), key
    # Token auth on every node, with the token file synced from the launching machine.
    assert "~/.ray/auth_token" in config["file_mounts"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in config[key]), key


# --- KubeRay --------------------------------------------------------------------------------


def _manifest(name: str, kind: str) -> dict:
    docs = [d for d in yaml.safe_load_all((CLUSTER_DIR / "kuberay" / name).read_text()) if d]
    assert len(docs) == 1
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    assert doc["metadata"]["name"]
    return doc


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__  # the image must carry the Ray we test against
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers and head_containers[0]["image"]
    groups = spec["workerGroupSpecs"]
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["image"]

    def gpus(group: dict) -> int:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        return int(limits.get("nvidia.com/gpu", 0))

    assert any(gpus(g) >= 1 for g in groups), "no GPU worker group"
    assert any(gpus(g) == 0 for g in groups), "no CPU-only worker group"
    # Every pod mounts the same ReadWriteMany claim at /mnt/shared.
    for template in [head["template"]] + [g["template"] for g in groups]:
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in template["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        mounts = {m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert claims == ["pose3d-shared"] and "/mnt/shared" in mounts


def test_kuberay_raycluster_manifest():
    doc = _manifest("raycluster.yaml", "RayCluster")
    _check_cluster_spec(doc["spec"])
    assert doc["spec"]["enableInTreeAutoscaling"] is True


def test_kuberay_rayjob_manifest():
    doc = _manifest("rayjob.yaml", "RayJob")
    spec = doc["spec"]
    _check_pose3d_train(spec["entrypoint"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and isinstance(runtime_env["env_vars"], dict)
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    _check_cluster_spec(spec["rayClusterSpec"])
    # The job's cluster has a GPU per training worker the entrypoint asks for.
    workers = int(shlex.split(spec["entrypoint"])[shlex.split(spec["entrypoint"]).index("--workers") + 1])
    gpu_pods = sum(
        g["replicas"]
        for g in spec["rayClusterSpec"]["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    )
    assert gpu_pods == workers


def test_kuberay_storage_claim_is_read_write_many():
    (claim,) = list(yaml.safe_load_all((CLUSTER_DIR / "kuberay" / "storage.yaml").read_text()))
    assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"]["name"] == "pose3d-shared"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_has_a_spot_gpu_group_for_elastic_runs():
    groups = {
        g["groupName"]: g for g in _manifest("raycluster.yaml", "RayCluster")["spec"]["workerGroupSpecs"]
    }
    spot = groups["gpu-train-spot"]
    assert spot["minReplicas"] == 0 and spot["maxReplicas"] >= 2
    pod = spot["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    assert any(t["key"] == "cloud.google.com/gke-spot" for t in pod["tolerations"])
    assert (
        pod["containers"][0]["resources"]
        == groups["gpu-train"]["template"]["spec"]["containers"][0]["resources"]
    )
