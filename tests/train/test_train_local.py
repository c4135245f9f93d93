"""Training end to end on an in-process local Ray: the three stages, their checks, checkpoints,
fault tolerance and resume. Shards come from tests/shard_factory (no raw-format conversion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose3d.model.io import load_model
from pose3d.model.net import PoseNet
from pose3d.train import checkpoint as ckpt
from pose3d.train.config import load_config
from pose3d.train.tensorboard import read_scalars
from tests.shard_factory import write_shard_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return {
        "lab": write_shard_set(root / "lab", 48, has_3d=True, seed=0),
        "wild": write_shard_set(root / "wild", 48, has_3d=False, seed=1, dataset="synthetic_wild"),
        "val": write_shard_set(root / "val", 16, has_3d=True, seed=2, split="test"),
    }


def _config(shards, storage, name, *extra):
    return load_config(
        "demo",
        [
            f"data.set_3d={shards['lab']}", f"data.set_2d={shards['wild']}", f"data.val_3d={shards['val']}",
            f"run.storage_path={storage}", f"run.name={name}", "run.keep_checkpoints=20",
            "model.num_features=16", "data.batch_size=8", "data.val_rows=16", "data.stage1_data=2d",
            "train.stages.1.steps=3", "train.stages.2.steps=3", "train.stages.3.steps=3",
            "train.log_every=1", "train.checkpoint_every=3", "train.val_every=3", *extra,
        ],
    )  # fmt: skip


def _scalars(run_dir):
    return read_scalars(str(run_dir / "tensorboard"))


def test_three_stages_with_their_checks(ray_local, shards, tmp_path):
    from pose3d.train.trainer import fit

    cfg = _config(shards, tmp_path, "stages")
    result = fit(cfg)
    assert result.error is None
    assert result.metrics["global_step"] == 9 and result.metrics["start_step"] == 0

    # A checkpoint at the end of every stage (checkpoint_every = 3 = stage length), loadable without Ray.
    stage_ckpts = {}
    for checkpoint, metrics in result.best_checkpoints:
        state = ckpt.load_training_state(checkpoint.path)
        stage_ckpts[state["stage"]] = (checkpoint.path, state, metrics)
    assert sorted(stage_ckpts) == [1, 2, 3]
    assert all(state["world_size"] == 1 for _, state, _ in stage_ckpts.values())  # the count that wrote it
    assert stage_ckpts[3][1]["global_step"] == 9 and stage_ckpts[3][1]["config"]["run"]["name"] == "stages"
    model = load_model(stage_ckpts[3][0])
    assert isinstance(model, PoseNet) and not model.training

    # Stage 1 leaves the depth regressor as initialized; stage 2 changes it.
    torch.manual_seed(cfg.train.seed)
    init = PoseNet(cfg.model).state_dict()
    after1, after2 = stage_ckpts[1][1]["state_dict"], stage_ckpts[2][1]["state_dict"]
    depth_keys = [k for k in init if k.startswith("depth_head.") and init[k].is_floating_point()]
    assert depth_keys
    for k in depth_keys:
        torch.testing.assert_close(after1[k], init[k], rtol=0, atol=0)
    assert any(not torch.equal(after2[k], init[k]) for k in depth_keys if "weight" in k)
    hourglass = [k for k in init if k.startswith("stacks.") and k.endswith("weight")]
    assert any(not torch.equal(after1[k], init[k]) for k in hourglass)

    # Every step's batch: stage 1 all 2D-only rows; stages 2 and 3 exactly half 3D (4 of 8).
    s = _scalars(tmp_path / "stages")
    assert s["stage"][1] == 1 and s["stage"][9] == 3
    lo, hi = s["batch_3d_rows_min"], s["batch_3d_rows_max"]
    assert sorted(lo) == list(range(1, 10))
    assert all(lo[k] == hi[k] == 0 for k in (1, 2, 3))
    assert all(lo[k] == hi[k] == 4 for k in range(4, 10))
    # The global rows are counted from the batches drawn (here one worker's).
    assert s["global_3d_rows"] == lo and set(s["global_batch_rows"].values()) == {8}
    # Stage 3: the geometric term is on, non-zero, and only the 2D-only rows' part is applied.
    for k in (7, 8, 9):
        assert s["loss_geo_2d"][k] > 0
        assert s["loss_geo"][k] == pytest.approx(s["loss_geo_2d"][k])
    assert "val_mpjpe" in stage_ckpts[2][2] and np.isfinite(stage_ckpts[2][2]["val_mpjpe"])


def test_worker_killed_mid_run_resumes_from_last_checkpoint(ray_local, shards, tmp_path):
    from pose3d.train.trainer import fit

    # 2 DDP workers (gloo); the last rank exits at global step 5, after the checkpoint at step 3.
    cfg = _config(
        shards, tmp_path, "fault", "scaling.num_workers=2", "run.max_failures=1", "train.fail_at_step=5"
    )
    result = fit(cfg)
    assert (tmp_path / "fault" / ".fault_injected").is_file()
    assert result.error is None
    assert result.metrics["global_step"] == 9
    assert result.metrics["start_step"] == 3  # the restarted group began at the last checkpoint
    assert ckpt.load_training_state(result.checkpoint.path)["world_size"] == 2
    # Every step's global batch, counted from both ranks' batches: 8 rows, 0 3D in stage 1 (2D only),
    # 4 after; rank 0 drew half of the 3D rows.
    s = _scalars(tmp_path / "fault")
    assert set(s["world_size"].values()) == {2} and set(s["global_batch_rows"].values()) == {8}
    assert s["global_3d_rows"] == {k: 0 if k <= 3 else 4 for k in range(1, 10)}
    assert all(
        s["batch_3d_rows_min"][k] == s["batch_3d_rows_max"][k] == v / 2
        for k, v in s["global_3d_rows"].items()
    )


def test_a_corrupt_row_is_skipped_counted_and_named_unless_too_many(ray_local, shards, tmp_path):
    from pose3d.train.trainer import fit

    # 8 rows, one corrupt: every pass of stage 1's 2D stream meets it.
    bad = write_shard_set(
        tmp_path / "bad", 8, has_3d=False, seed=1, dataset="synthetic_wild", corrupt_rows=(3,)
    )
    stage1 = [
        "train.stages.2.steps=0",
        "train.stages.3.steps=0",
        f"data.set_2d={bad}",
        "train.checkpoint_every=4",
    ]
    result = fit(_config(shards, tmp_path, "corrupt", *stage1))
    assert result.error is None and result.metrics["global_step"] == 3
    assert result.metrics["rows_skipped"] >= 2  # 24 rows taken, 7 good rows a pass
    assert max(_scalars(tmp_path / "corrupt")["rows_skipped"].values()) == result.metrics["rows_skipped"]

    from ray.train.v2.api.exceptions import TrainingFailedError

    with pytest.raises(
        TrainingFailedError, match=r"rows of the set_2d set do not decode, more than data\.max_bad"
    ):
        fit(_config(shards, tmp_path, "too_many", *stage1, "data.max_bad_fraction=0.0001"))


# --- several sources on one side ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory, shards):
    """The lab set on the 3D side; on the 2D side the wild set and a second 2D set, weighted 3:1."""
    root = tmp_path_factory.mktemp("sources")
    # A COCO-like second set: its rows leave the thorax, neck and head-top heatmaps out of the loss.
    other = write_shard_set(root / "wild_b", 96, has_3d=False, shards=6, seed=3, dataset="synthetic_coco")
    wild = write_shard_set(root / "wild_a", 192, has_3d=False, shards=6, seed=4, dataset="synthetic_wild")
    return [f"data.set_2d=[{{path: {wild}, weight: 3}}, {{path: {other}, weight: 1}}]"]


def test_three_sources_hold_the_exact_mix_and_their_weights(ray_local, shards, three_sources, tmp_path):
    """Through the real pipelines (Ray Data reads, the weighted mix, the preprocessing actors) and
    the row streams a worker keeps: every step has exactly its 3D/2D rows, and over 300 steps each
    2D source's share is within 2 percentage points of its weight."""
    import ray

    from pose3d.train.trainer import build_datasets

    cfg = _config(shards, tmp_path, "mix", *three_sources, "data.epochs_per_pass=2")
    n_3d, n_2d = cfg.rows_per_worker()

    # Read in a Ray task, as a training worker reads: the driver keeps no Ray Data executor that
    # could outlive the module's Ray.
    @ray.remote(num_cpus=0)
    def draw(datasets, steps):
        from pose3d.data.augment import SOURCE_COLUMN
        from pose3d.data.mixing import RowStream, mixed_batch

        streams = {
            side: RowStream(lambda k, ds=ds: ds.iter_batches(batch_size=32, batch_format="numpy",
                                                          local_shuffle_buffer_size=64))
            for side, ds in datasets.items()
        }  # fmt: skip
        rows, rows_3d, sources = [], [], []
        for _ in range(steps):
            batch = mixed_batch(streams["set_3d"], n_3d, streams["set_2d"], n_2d)
            rows.append(len(batch["image"]))
            rows_3d.append(int(np.count_nonzero(batch["has_3d"])))
            sources.append(batch[SOURCE_COLUMN])
        for stream in streams.values():
            stream.close()
        return np.array(rows), np.array(rows_3d), np.stack(sources)

    datasets = build_datasets(cfg)
    # the idle backoff travels with each dataset's context to the process running its executor
    from pose3d.data.idle import IdleBackoff

    assert all(IdleBackoff in ds.context.custom_execution_callback_classes for ds in datasets.values())
    rows, rows_3d, sources = ray.get(draw.remote(datasets, 300))
    assert (rows == n_3d + n_2d).all() and (rows_3d == n_3d).all()  # every step
    assert (sources[:, :n_3d] == 0).all()  # the one 3D source
    counts = np.bincount(sources[:, n_3d:].ravel(), minlength=2)
    realized = counts / counts.sum()
    assert abs(realized[0] - 0.75) <= 0.02 and abs(realized[1] - 0.25) <= 0.02, realized


def test_training_reports_and_checkpoints_each_sources_share(ray_local, shards, three_sources, tmp_path):
    from pose3d.train.trainer import fit

    cfg = _config(shards, tmp_path, "shares", *three_sources, "train.stages.3.steps=6")
    result = fit(cfg)
    assert result.error is None
    m = result.metrics
    n_3d, n_2d = cfg.rows_per_worker()
    assert {"share_set_2d_1", "share_set_2d_2"} <= set(m) and "share_set_3d_1" not in m  # one 3D source
    assert m["share_set_2d_1"] + m["share_set_2d_2"] == pytest.approx(1.0)
    # Stage 1 draws 2D rows only (data.stage1_data=2d): all 8 per step; stages 2-3: n_2d per step.
    assert m["rows_set_2d_1"] + m["rows_set_2d_2"] == 3 * 8 + 9 * n_2d
    scalars = _scalars(tmp_path / "shares")
    assert set(scalars["share_set_2d_1"]) == set(range(1, 13))  # a report every step
    newest = max(result.best_checkpoints, key=lambda c: c[1]["global_step"])[0]
    state = ckpt.load_training_state(newest.path)
    assert state["source_rows"]["set_2d"] == [m["rows_set_2d_1"], m["rows_set_2d_2"]]
