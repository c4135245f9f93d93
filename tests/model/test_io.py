"""A checkpoint folder's network: ``pose3d.model.io`` writes and reads it (local paths and URIs), and
``pose3d.train.checkpoint`` keeps the training state beside it."""

from __future__ import annotations

import pytest
import torch

from pose3d.model import io
from pose3d.model.net import ModelConfig, PoseNet
from pose3d.train import checkpoint


def _tiny() -> tuple[PoseNet, ModelConfig]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        num_stacks=1, num_modules=1, num_features=8, num_reg_modules=1, input_size=64, output_size=16
    )
    return PoseNet(cfg), cfg


def test_load_model_round_trip_local_and_uri(tmp_path):
    model, cfg = _tiny()
    folder = checkpoint.save_checkpoint(tmp_path / "ckpt", model, cfg, stage=2, global_step=7)
    assert (folder / io.MODEL_FILE).is_file() and checkpoint.MODEL_FILE == io.MODEL_FILE
    for path in (folder, str(folder), f"file://{folder}"):
        loaded = io.load_model(path)
        assert not loaded.training and loaded.config == cfg
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
    state = checkpoint.load_training_state(f"file://{folder}")
    assert state["stage"] == 2 and state["global_step"] == 7 and state["config"] is None
    assert all(torch.equal(state["state_dict"][k], v) for k, v in model.state_dict().items())


def test_not_a_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.pt") as err:
        io.load_model(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(err.value)
    with pytest.raises(FileNotFoundError, match="no model.pt"):
        checkpoint.load_training_state(str(tmp_path))


def test_one_definition_of_load_model():
    assert not hasattr(checkpoint, "load_model")


class _RunsCode:
    """Unpickling this calls ``pathlib.Path.touch`` on ``marker``: the shape of a code-running file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_crafted_state_file_is_refused_and_nothing_runs(tmp_path):
    model, cfg = _tiny()
    folder = checkpoint.save_checkpoint(tmp_path / "ckpt", model, cfg, stage=1, global_step=3)
    marker = tmp_path / "ran"
    torch.save({"optimizer": _RunsCode(marker), "stage": 1}, folder / checkpoint.STATE_FILE)
    with pytest.raises(io.UnsafeCheckpointError, match="refused to load") as err:
        checkpoint.load_training_state(folder)
    assert str(folder / checkpoint.STATE_FILE) in str(err.value)
    torch.save({"model_config": {}, "state_dict": _RunsCode(marker)}, folder / io.MODEL_FILE)
    with pytest.raises(io.UnsafeCheckpointError, match="could run code"):
        io.load_model(folder)
    assert not marker.exists()


def test_a_corrupt_file_is_called_unreadable_not_unsafe(tmp_path):
    model, cfg = _tiny()
    folder = checkpoint.save_checkpoint(tmp_path / "ckpt", model, cfg, stage=1, global_step=3)
    (folder / io.MODEL_FILE).write_bytes(b"not a checkpoint at all")
    with pytest.raises(io.CheckpointReadError, match="not a readable checkpoint") as err:
        io.load_model(folder)
    assert not isinstance(err.value, io.UnsafeCheckpointError)
    assert str(folder / io.MODEL_FILE) in str(err.value)


def test_optimizer_state_loads_weights_only(tmp_path):
    model, cfg = _tiny()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 64, 64)).heatmaps[-1].sum().backward()
    optimizer.step()
    folder = checkpoint.save_checkpoint(tmp_path / "ckpt", model, cfg, optimizer=optimizer, stage=2)
    state = checkpoint.load_training_state(folder)
    restored = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    restored.load_state_dict(state["optimizer"])
    assert restored.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_reconcile_adopts_the_newest_unregistered_checkpoint_and_removes_the_rest(tmp_path):
    import json

    model, cfg = _tiny()
    run = tmp_path / "run"

    def save(name: str, step: int) -> None:
        checkpoint.save_checkpoint(run / name, model, cfg, stage=1, global_step=step, config={"run": {}})

    save("checkpoint_2026-01-01_00-00-01.000000", 1)  # never registered, older than Ray's latest
    save("checkpoint_2026-01-01_00-00-03.000000", 3)  # registered
    save("checkpoint_2026-01-01_00-00-06.000000", 6)  # written, its report lost: adopted
    save("checkpoint_2026-01-01_00-00-09.000000", 9)
    (run / "checkpoint_2026-01-01_00-00-09.000000" / checkpoint.STATE_FILE).write_bytes(b"cut")  # mid-upload
    found = checkpoint.reconcile(str(run), 3, remove=False)  # no snapshot: adopt, remove nothing
    assert found.adopted.global_step == 6 and found.removed == []
    registered = {"checkpoint_dir_name": "checkpoint_2026-01-01_00-00-03.000000", "metrics": {}}
    snapshot = {"checkpoint_results": [registered], "latest_checkpoint_result": registered,
                "pending_training_results": []}  # fmt: skip
    (run / checkpoint.RAY_SNAPSHOT_FILE).write_text(json.dumps(snapshot))
    found = checkpoint.reconcile(str(run), 3, remove=True)
    assert found.adopted.path.endswith("00-00-06.000000") and found.adopted.global_step == 6
    assert sorted(found.removed) == [
        "checkpoint_2026-01-01_00-00-01.000000",
        "checkpoint_2026-01-01_00-00-09.000000",
    ]
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [
        "checkpoint_2026-01-01_00-00-03.000000", "checkpoint_2026-01-01_00-00-06.000000",
    ]  # fmt: skip
    assert checkpoint.reconcile(str(run), 6, remove=False).adopted is None  # Ray's own is as new
