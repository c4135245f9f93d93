"""pose3d.train.tensorboard: what a run writes reads back by tag and step, across a resume."""

from __future__ import annotations

from pose3d.train.tensorboard import TensorBoard, read_scalars


def test_scalars_read_back_by_tag_and_step_over_a_resumed_runs_event_files(tmp_path):
    first = TensorBoard(str(tmp_path))
    for step in (1, 2, 3):
        first.write({"loss_total": 1.0 / step, "global_step": step, "stage": 1, "note": "text"}, step)
    first.close()
    resumed = TensorBoard(str(tmp_path))  # a second event file, from step 3 again
    resumed.write({"loss_total": 0.25, "stage": 2}, 3)
    resumed.write({"loss_total": 0.125, "stage": 2}, 4)
    resumed.close()

    everything = read_scalars(str(tmp_path))
    assert set(everything) == {"loss_total", "stage"}  # numbers only, never global_step itself
    assert everything["loss_total"] == {1: 1.0, 2: 0.5, 3: 0.25, 4: 0.125}  # step 3: the later value
    assert everything["stage"] == {1: 1.0, 2: 1.0, 3: 2.0, 4: 2.0}
    assert read_scalars(str(tmp_path), ("stage",)) == {"stage": everything["stage"]}
