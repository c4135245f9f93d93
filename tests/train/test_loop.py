"""The training loop's pure parts, without Ray."""

from pose3d.train.config import load_config


def test_the_progress_line_shows_each_sides_realized_shares_beside_its_weights():
    from pose3d.train.loop import _progress_line

    cfg = load_config("demo", ["data.set_2d=[{path: a, weight: 3}, {path: b, weight: 1}]"])
    m = {"stage": 3, "step_in_stage": 5, "global_step": 25, "loss_total": 1.0, "loss_heatmap": 0.5,
         "img_per_s": 40.0, "share_set_2d_1": 0.7, "share_set_2d_2": 0.3}  # fmt: skip
    line = _progress_line(m, 10, 30, "1m00s", cfg.data)
    assert "2D sources 70/30 % (weights 75/25)" in line and "3D sources" not in line
