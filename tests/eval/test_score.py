"""Evaluation tables on hand-made predictions: per-action and per-group aggregation, PCKh in the MPII
layout, bone symmetry, the whole report (JSON + Markdown) and its figures, the flip test. No Ray."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from pose3d import skeleton
from pose3d.data import shards
from pose3d.eval import predict, report, score
from pose3d.model.net import PoseOutput
from pose3d.skeleton import JOINT_INDEX as J
from pose3d.viz import draw3d
from tests.shard_factory import write_shard_set

OUT = 32  # output map side of the hand-made predictions
STRIDE = 4
PX_PER_MM = 0.01
L_LOWER_ARM = float(skeleton.CANONICAL_BONE_LENGTHS_MM[skeleton.BONE_INDEX["l_lower_arm"]])
L_SPINE = float(skeleton.CANONICAL_BONE_LENGTHS_MM[skeleton.BONE_INDEX["spine"]])


# --- per-action, per-group, PCKh, symmetry tables ---------------------------------------------


def test_action_table_paper_order_average_over_present_actions():
    values = {"mpjpe": np.array([10.0, 20.0, 30.0, 60.0]), "pa_mpjpe": np.array([1.0, 3.0, 5.0, 7.0])}
    actions = np.array(["Walking 1", "S9_Walking_2.55011271", "Sitting", "Eating"])
    t = report.action_table(values, actions)
    assert t["layout"] == "h36m"
    assert t["actions"][:3] == ["Directions", "Discussion", "Eating"] and len(t["actions"]) == 15
    assert t["means"]["mpjpe"]["Walking"] == 15.0 and t["means"]["mpjpe"]["Sitting"] == 30.0
    assert t["means"]["mpjpe"]["Eating"] == 60.0 and t["means"]["mpjpe"]["Directions"] is None
    assert t["average"]["mpjpe"] == pytest.approx((15 + 30 + 60) / 3)  # mean of action means
    assert t["overall"]["mpjpe"] == pytest.approx(30.0)  # mean over rows
    assert t["average"]["pa_mpjpe"] == pytest.approx((2 + 5 + 7) / 3)
    assert t["counts"]["Walking"] == 2 and t["counts"]["Posing"] == 0
    assert "Posing" in t["missing"] and "Walking" not in t["missing"] and len(t["missing"]) == 12


def test_action_table_falls_back_to_names_as_found():
    t = report.action_table({"mpjpe": np.array([1.0, 3.0, 10.0])}, np.array(["jump", "jump", "cartwheel"]))
    assert t["layout"] == "generic"
    assert t["actions"] == ["cartwheel", "jump"]
    assert t["means"]["mpjpe"] == {"cartwheel": 10.0, "jump": 2.0}
    assert t["average"]["mpjpe"] == 6.0 and t["overall"]["mpjpe"] == pytest.approx(14 / 3)


def test_group_table_3dhp_order_and_pooled_all():
    groups = np.array(["outdoor", "studio_gs", "studio_nogs", "studio_gs"])
    t = report.group_table({"pck3d": np.array([0.0, 1.0, 0.25, 0.5])}, groups)
    assert t["groups"] == ["studio_gs", "studio_nogs", "outdoor"]
    assert [t["labels"][g] for g in t["groups"]] == ["Studio GS", "Studio no GS", "Outdoor"]
    assert t["means"]["pck3d"] == {"studio_gs": 0.75, "studio_nogs": 0.25, "outdoor": 0.0}
    assert t["all"]["pck3d"] == pytest.approx(1.75 / 4)  # pooled over frames, not mean of groups (1/3)
    assert t["counts"] == {"studio_gs": 2, "studio_nogs": 1, "outdoor": 1}


def test_group_table_unknown_groups_after_known_ones():
    t = report.group_table({"auc3d": np.ones(3)}, np.array(["zeta", "", "outdoor"]))
    assert t["groups"] == ["outdoor", "(none)", "zeta"]


def test_pckh_table_mpii_columns_mean_total_and_excluded_rows():
    gt = np.zeros((3, 16, 2))
    gt[:, :, 0] = np.arange(16) * 20.0
    pred = gt.copy()
    pred[0] += (4.0, 0.0)  # row A: every joint 4 px off (correct at head 10: 4 <= 5)...
    pred[0, J["r_wrist"]] = gt[0, J["r_wrist"]] + (0.0, 6.0)  # ...but the right wrist 6 px off
    visible = np.ones((3, 16), bool)
    visible[1] = False  # row B: only the wrists, both exact
    visible[1, [J["r_wrist"], J["l_wrist"]]] = True
    head = np.array([10.0, 10.0, np.nan])  # row C: no head box -> left out, counted
    t = report.pckh_table(pred, gt, visible, head)
    assert t["rows"] == 2 and t["excluded_no_head_size"] == 1
    cols = t["columns"]
    assert list(cols) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Total"]
    assert cols["Wrist"] == pytest.approx((0.5 + 1.0) / 2)  # r_wrist 1/2, l_wrist 2/2
    assert all(cols[c] == 1.0 for c in ("Head", "Shoulder", "Elbow", "Hip", "Knee", "Ankle"))
    assert cols["Mean"] == pytest.approx(13.5 / 14)  # mean of the 14 per-joint values
    assert cols["Total"] == pytest.approx(15 / 16)  # pooled: 16 visible scored joints, 15 correct
    assert t["per_joint"]["pelvis"] is None and t["per_joint"]["thorax"] is None


def test_pckh_table_none_without_head_sizes():
    z = np.zeros((2, 16, 2))
    assert report.pckh_table(z, z, np.ones((2, 16), bool), np.full(2, np.nan)) is None


def test_symmetry_table_hand_case():
    pose = skeleton.canonical_pose_mm()[None].copy()
    pose[0, J["r_elbow"], 1] += 20.0  # right upper arm 20 mm longer, right lower arm 20 mm shorter
    t = report.symmetry_table(pose * 0.1, pose, None)
    assert t["pred_mm"]["upper_arm"] == pytest.approx(20.0) and t["pred_mm"]["lower_arm"] == pytest.approx(
        20.0
    )
    assert t["pred_mm"]["upper_leg"] == pytest.approx(0.0, abs=1e-9)
    assert t["pred_px"]["upper_arm"] == pytest.approx(2.0)
    assert "gt_mm" not in t


# --- the whole report on hand-made predictions ------------------------------------------------


def _yawed(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return skeleton.canonical_pose_mm() @ rot.T


def _as_network_output(pose_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pose (16, 3) mm -> the (joints_out, depth) a network would output for it (orthographic, a
    fixed px/mm): decoding gives the pose back up to scale and translation."""
    px = pose_mm * PX_PER_MM
    joints = px[:, :2] + (OUT - 1) / 2
    depth = (px[:, 2] - px[skeleton.ROOT, 2]) / OUT * 2  # root at 0
    return joints, depth


def _prediction_set() -> dict[str, np.ndarray]:
    """6 rows: lab (h36m kind) Walking x2 + Eating, wild (mpii kind) x2, wild-test (3dhp kind) x1.
    Perfect predictions except lab row 1, whose left forearm points up instead of down (bone
    lengths kept, the wrist 2 forearms away)."""
    datasets = ["synthetic_lab"] * 3 + ["synthetic_wild"] * 2 + ["synthetic_wild_test"]
    gt = np.stack([_yawed(0.3 * i) + (0, 0, 4000.0) for i in range(6)])
    pred = gt.copy()
    elbow = pred[1, J["l_elbow"]]
    pred[1, J["l_wrist"]] = elbow - (pred[1, J["l_wrist"]] - elbow)
    joints_gt = np.stack([_as_network_output(p)[0] for p in gt])
    out = [_as_network_output(p) for p in pred]
    has_3d = np.array([1, 1, 1, 0, 0, 1], bool)
    joints_3d = np.where(has_3d[:, None, None], gt, np.nan)
    return {
        "row_id": np.array([f"r{i}" for i in range(6)]),
        "dataset": np.array(datasets),
        "subject": np.array(["S9", "S9", "S11", "", "", "TS1"]),
        "action": np.array(["Walking 1", "Walking 2", "Eating", "", "", "Sports"]),
        "group": np.array(["", "", "", "", "", "outdoor"]),
        "annotation_3d": np.array(["", "", "", "", "", "univ_annot3"]),
        "joints_out": joints_gt.astype(np.float32),
        "visible": np.ones((6, 16), bool),
        "has_3d": has_3d,
        "joints_3d": joints_3d.astype(np.float32),
        "head_size_out": np.array([np.nan, np.nan, np.nan, 2.0, np.nan, np.nan], np.float32),
        "pred_joints": np.stack([o[0] for o in out]).astype(np.float32),
        "pred_depth": np.stack([o[1] for o in out]).astype(np.float32),
    }


def test_row_scores_of_hand_made_predictions():
    preds = _prediction_set()
    rs = score.score_prediction_set(preds, OUT * STRIDE, OUT)
    s = rs.scores
    wrist_error = 2 * L_LOWER_ARM / 16  # one joint of 16, two forearm lengths away; scale unchanged
    np.testing.assert_allclose(s.mpjpe[[0, 1, 2, 5]], [0, wrist_error, 0, 0], atol=0.05)
    np.testing.assert_allclose(s.mpjpe_plain[[0, 1, 2, 5]], [0, wrist_error, 0, 0], atol=0.05)
    np.testing.assert_allclose(s.pck3d[[0, 1, 2, 5]], [1, 13 / 14, 1, 1])
    # AUC: the 0-mm step counts exact matches only, which float32 rounding misses (30 of 31 steps);
    # the moved wrist is beyond 150 mm at every step.
    np.testing.assert_allclose(s.auc3d[[0, 1, 2, 5]], np.array([1, 13 / 14, 1, 1]) * 30 / 31)
    assert np.isnan(s.mpjpe[[3, 4]]).all() and np.isnan(rs.pred_known_mm[[3, 4]]).all()
    np.testing.assert_allclose(s.pck2d, [1, 15 / 16, 1, 1, 1, 1])  # the moved wrist is off in 2D too
    # Input-px scale (stride 4): x, y and the decoded depth (d + 1) / 2 * OUT, all times the stride.
    np.testing.assert_allclose(rs.pred_px[0, :, :2], preds["pred_joints"][0] * STRIDE, atol=1e-4)
    np.testing.assert_allclose(
        rs.pred_px[0, :, 2], (preds["pred_depth"][0] + 1) / 2 * OUT * STRIDE, atol=1e-4
    )


def test_pelvis_shift_applies_to_3dhp_rows_only():
    preds = _prediction_set()
    rs = score.score_prediction_set(preds, OUT * STRIDE, OUT, shift_pelvis_hips=0.2)
    s = rs.scores
    # Lab rows keep their unshifted scores.
    np.testing.assert_allclose(s.pck3d[[0, 1, 2]], [1, 13 / 14, 1])
    # The 3DHP row: pelvis and hips move 0.2 spine up, so after root alignment at the moved pelvis the
    # 12 other scored joints are 0.2 x spine (~115 mm) off and the hips exact: all within 150 mm,
    # and the AUC counts the thresholds at or above that error for those 12 joints.
    e = 0.2 * L_SPINE
    assert 100 < e < 150
    steps_ok = math.floor((150 - e) / 5) + 1  # thresholds 0, 5, ..., 150 that are >= e
    assert s.pck3d[5] == pytest.approx(1.0)
    assert s.auc3d[5] == pytest.approx((2 * 30 / 31 + 12 * steps_ok / 31) / 14)  # 0-mm step: see above


def test_build_report_sections_by_dataset_kind(tmp_path):
    preds = _prediction_set()
    rs = score.score_prediction_set(preds, OUT * STRIDE, OUT)
    rep = report.build_report(preds, rs, {"checkpoint": "ckpt", "data": ["d"]})
    assert list(rep["datasets"]) == ["synthetic_lab", "synthetic_wild", "synthetic_wild_test"]
    lab, wild, test = (rep["datasets"][k] for k in rep["datasets"])
    assert (lab["kind"], wild["kind"], test["kind"]) == ("h36m", "mpii", "3dhp")
    assert "actions" in lab and "groups" not in lab and "pckh" not in lab
    wrist_error = 2 * L_LOWER_ARM / 16
    assert lab["actions"]["means"]["mpjpe"]["Walking"] == pytest.approx(wrist_error / 2, abs=0.05)
    assert lab["actions"]["average"]["mpjpe"] == pytest.approx(wrist_error / 4, abs=0.05)
    assert "pckh" in wild and "actions" not in wild and "groups" not in wild
    assert wild["pckh"]["rows"] == 1 and wild["pckh"]["excluded_no_head_size"] == 1
    assert wild["pckh"]["columns"]["Total"] == 1.0
    assert "pred_mm" not in wild["bone_symmetry"] and "pred_px" in wild["bone_symmetry"]
    assert test["groups"]["groups"] == ["outdoor"] and test["groups"]["all"]["pck3d"] == 1.0
    assert test["annotation_3d"] == {"univ_annot3": 1}
    assert lab["bone_symmetry"]["gt_mm"]["upper_arm"] == pytest.approx(0.0, abs=1e-6)

    path = report.write_json(rep, tmp_path / "report.json")
    loaded = json.loads(path.read_text())  # strict JSON: NaN became null
    assert loaded["datasets"]["synthetic_wild"]["summary"]["mpjpe"] is None
    md = report.to_markdown(rep, {"synthetic_lab": {"Per-action error": "actions_synthetic_lab.png"}})
    lab_part = md.split("## synthetic_lab")[1].split("## synthetic_wild")[0]
    assert "### Per action" in lab_part and "| Directions | Discussion | Eating |" in lab_part
    assert "### PCKh per joint" not in lab_part and "### Per group" not in lab_part
    assert "![Per-action error](actions_synthetic_lab.png)" in lab_part
    wild_part = md.split("## synthetic_wild (")[1].split("## synthetic_wild_test")[0]
    assert "| Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean | Total |" in wild_part
    assert "1 rows without a head size left out" in wild_part
    test_part = md.split("## synthetic_wild_test")[1]
    assert "| Outdoor | All |" in test_part and "univ_annot3" in test_part


def test_3dhp_rows_without_univ_annot3_are_flagged():
    preds = _prediction_set()
    preds["annotation_3d"] = np.array(["", "", "", "", "", "annot3"])
    rep = report.build_report(preds, score.score_prediction_set(preds, OUT * STRIDE, OUT))
    notes = " ".join(rep["datasets"]["synthetic_wild_test"]["notes"])
    assert "annot3 (1 rows)" in notes and "official MPI-INF-3DHP ground truth is univ_annot3" in notes


# --- flip test ---------------------------------------------------------------------------------


def test_flip_back_mirrors_maps_and_swaps_joints():
    maps = torch.zeros(1, 16, 8, 8)
    maps[0, J["r_ankle"], 5, 2] = 1.0  # row 5, column 2
    depth = torch.arange(16.0)[None]
    back, d = predict.flip_back(maps, depth)
    assert back[0, J["l_ankle"], 5, 8 - 1 - 2] == 1.0 and back.sum() == 1.0
    assert d[0, J["l_wrist"]] == J["r_wrist"] and d[0, J["pelvis"]] == J["pelvis"]


class _MirrorModel(torch.nn.Module):
    """Every joint's heatmap is the image's red channel pooled to the output size (so it mirrors with
    the image); depth is a fixed per-joint value that ignores the image."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("depth", torch.linspace(-0.5, 0.5, 16))

    def forward(self, x: torch.Tensor) -> PoseOutput:
        maps = torch.nn.functional.avg_pool2d(x[:, :1], STRIDE).expand(-1, 16, -1, -1)
        return PoseOutput([maps], self.depth.expand(len(x), -1))


def test_predict_flip_test_averages_with_the_mirror():
    images = np.zeros((2, 3, OUT * STRIDE, OUT * STRIDE), np.uint8)
    images[0, 0, 40:44, 20:24] = 255  # a bright block -> output px (5.25 or so, 10.x)
    images[1, 0, 100:104, 80:84] = 255
    model = _MirrorModel()
    j_plain, d_plain = predict.predict(model, images)
    j_flip, d_flip = predict.predict(model, images, flip_test=True)
    np.testing.assert_allclose(j_flip, j_plain)  # a mirror-equivariant model: the same joints
    perm = skeleton.FLIP_PERMUTATION
    expected = (model.depth.numpy() + model.depth.numpy()[perm]) / 2
    np.testing.assert_allclose(d_flip, np.broadcast_to(expected, (2, 16)), atol=1e-6)
    assert not np.allclose(d_plain, d_flip)


# --- figures and row lookup ----------------------------------------------------------------------


def _png_ok(path, min_bytes: int = 5000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes
    img = cv2.imread(str(path))
    assert img is not None and img.std() > 5  # not blank


def test_bar_chart_and_skeleton_grid_png(tmp_path):
    _png_ok(
        draw3d.bar_chart(
            tmp_path / "bars.png",
            ["A", "B", "C"],
            {"x": [1.0, None, 3.0], "y": [2.0, 2.5, 1.0]},
            ylabel="mm",
            title="t",
            reference={"x": 2.0},
        )
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    joints = rng.uniform(5, 60, (3, 16, 2))
    pose = np.stack([_yawed(a) for a in (0.0, 1.0, 2.0)])
    gt = pose.copy()
    gt[2] = np.nan  # a row without ground truth
    _png_ok(draw3d.skeleton_grid(tmp_path / "grid.png", images, joints, pose, gt, labels=["a", "b", "c"]))


def test_spread_rows_best_to_worst_nan_last():
    values = np.array([5.0, np.nan, 1.0, 3.0, 2.0, 4.0])
    assert draw3d.spread_rows(values, 3).tolist() == [2, 3, 1]  # 1.0, 3.0 (middle), NaN (last)
    assert draw3d.spread_rows(values[:2], 5).tolist() == [0, 1]


def test_load_rows_by_id_keeps_the_asked_order(tmp_path):
    folder = write_shard_set(tmp_path / "s", 10, has_3d=True, shards=3)
    ids = ["synthetic_lab/train/0/7", "synthetic_lab/train/0/2", "synthetic_lab/train/0/9"]
    rows = shards.rows_by_id(str(folder), ids, ("row_id", "frame", "joints_2d"))
    assert rows["row_id"].tolist() == ids and rows["frame"].tolist() == [7, 2, 9]
    assert rows["joints_2d"].shape == (3, 16, 2)
    with pytest.raises(KeyError, match="nope"):
        shards.rows_by_id(str(folder), ["nope"], predict.EVAL_COLUMNS)


def test_select_rows_spreads_evenly():
    assert predict.select_rows(10, None) is None and predict.select_rows(3, 5) is None
    assert predict.select_rows(10, 4).tolist() == [0, 3, 6, 9]


# --- the one scorer: every path gives the same numbers ------------------------------------------


def test_pck2d_metric_hand_case():
    from pose3d import metrics

    gt = np.zeros((3, 16, 2))
    pred = gt.copy()
    pred[0, :4] += (3.0, 4.0)  # 5 px off: out at normalizer 8 (threshold 4), in at 10 (threshold 5)
    visible = np.ones((3, 16), bool)
    visible[2] = False  # no visible joint: NaN
    out = metrics.pck2d(pred, gt, visible, np.array([8.0, 8.0, 8.0]))
    np.testing.assert_allclose(out[:2], [12 / 16, 1.0])
    assert np.isnan(out[2])
    assert metrics.pck2d(pred, gt, visible, np.array([10.0, 8.0, 8.0]))[0] == 1.0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from pose3d.model.net import ModelConfig, PoseNet
    from pose3d.train.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("scorer")
    torch.manual_seed(0)
    cfg = ModelConfig(
        num_stacks=1, num_modules=1, num_features=8, num_reg_modules=1, input_size=64, output_size=16
    )
    ckpt = save_checkpoint(root / "ckpt", PoseNet(cfg), cfg)
    lab = write_shard_set(root / "lab", 12, has_3d=True, seed=0, split="test")
    test = write_shard_set(root / "test", 8, has_3d=True, seed=2, dataset="synthetic_wild_test", split="test")
    return {"ckpt": str(ckpt), "lab": str(lab), "test": str(test), "cfg": cfg}


def test_evaluate_checkpoint_is_the_scorer_on_the_in_memory_prediction_set(tiny_checkpoint):
    from pose3d.model.io import load_model

    t = tiny_checkpoint
    ev = score.evaluate_checkpoint(t["ckpt"], [t["lab"], t["test"]], max_rows=15, baseline_from=t["lab"])
    model = load_model(t["ckpt"])
    preds = predict.predict_in_memory(model, [t["lab"], t["test"]], max_rows=15)
    rs = score.score_prediction_set(preds, t["cfg"].input_size, t["cfg"].output_size)
    assert ev["rows"] == 15
    assert ev["model"] == rs.scores.summary()
    assert set(ev["groups"]) == set(preds["group"]) - {""}
    for g, summary in ev["groups"].items():
        assert summary == rs.scores.select(preds["group"] == g).summary()
    assert set(ev["baseline"]) == {"mpjpe", "pa_mpjpe", "pck3d", "auc3d"}
    assert ev["baseline"] == score.baseline_scores(score.mean_pose(t["lab"]), preds)


def test_validator_scores_like_the_scorer(tiny_checkpoint):
    from pose3d.model.io import load_model
    from pose3d.train.validate import Validator

    t, cfg = tiny_checkpoint, tiny_checkpoint["cfg"]
    model = load_model(t["ckpt"])
    val = Validator(t["lab"], 0, cfg.input_size, cfg.output_size)(model, torch.device("cpu"))
    s = score.score_prediction_set(predict.predict_in_memory(model, t["lab"]), 64, 16).scores.summary()
    assert val == {"val_mpjpe": s["mpjpe"], "val_pa_mpjpe": s["pa_mpjpe"], "val_pck2d": s["pck2d"]}


def test_a_corrupt_row_is_skipped_and_named_not_fatal(tiny_checkpoint, tmp_path, caplog):
    from pose3d.model.io import load_model
    from pose3d.train.validate import Validator

    t, cfg = tiny_checkpoint, tiny_checkpoint["cfg"]
    bad = write_shard_set(tmp_path / "bad", 12, has_3d=True, seed=0, split="test", corrupt_rows=(5,))
    model = load_model(t["ckpt"])
    with caplog.at_level("WARNING", logger="pose3d.eval"):
        preds = predict.predict_in_memory(model, str(bad))
    assert len(preds["row_id"]) == 11 and "synthetic_lab/test/0/5" not in set(preds["row_id"])
    assert "skipped row synthetic_lab/test/0/5" in caplog.text and "1 of 12 rows skipped" in caplog.text
    good = predict.predict_in_memory(model, t["lab"])
    keep = good["row_id"] != "synthetic_lab/test/0/5"
    np.testing.assert_array_equal(preds["pred_joints"], good["pred_joints"][keep])  # the others unchanged
    val = Validator(str(bad), 0, cfg.input_size, cfg.output_size)(model, torch.device("cpu"))
    assert np.isfinite(val["val_mpjpe"])
