"""Search spaces, trial configs, concurrency, the Train -> Tune report filter, and the tables of
``pose3d best`` and the ablation: no Ray cluster, no training."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from pose3d.train.config import load_config
from tune import ablation
from tune.space import (
    SpaceError,
    apply_overrides,
    check_space,
    load_space,
    packaged_spaces,
    parse_space,
    step_range,
    trial_base,
)


def _space(params, **extra):
    return parse_space({"params": params, **extra}, "test.yaml")


LR = {"distribution": "loguniform", "low": 1e-4, "high": 1e-3, "keys": ["train.stages.2.lr"]}


# --- the packaged spaces ------------------------------------------------------------------------


def test_packaged_spaces_fit_their_configs_and_map_the_paper_values():
    assert {"paper_search", "demo_search"} <= set(packaged_spaces())
    paper = load_space("paper")
    check_space(paper, load_config("paper"))
    over = paper.overrides(paper.start_points[0])
    # The paper's values: λ_reg 0.1 in stages 2 and 3, λ_geo 0.01, lr 2.5e-4 then a tenth,
    # 200k + 40k steps, the stage-2 lr drop at 25/30 of 200k = 166,666.7 -> 166,667.
    assert over["train.stages.2.reg"] == over["train.stages.3.reg"] == 0.1
    assert over["train.stages.3.geo"] == 0.01
    assert over["train.stages.2.lr"] == pytest.approx(2.5e-4)
    assert over["train.stages.3.lr"] == pytest.approx(2.5e-5)
    assert over["train.stages.2.steps"] == 200000 and over["train.stages.3.steps"] == 40000
    assert over["train.stages.2.lr_drop_step"] == 166667 and isinstance(
        over["train.stages.2.lr_drop_step"], int
    )
    # ASHA's time axis spans 100k + 20k .. 200k + 60k steps.
    assert step_range(paper, trial_base(load_config("paper"), paper)) == (120000, 260000)

    demo = load_space("demo_search")
    base = load_config("demo")
    check_space(demo, base)
    # Both stage lengths are searched: 300 + 100 .. 600 + 300 steps, whatever the config says.
    assert step_range(demo, trial_base(base, demo)) == (400, 900)
    tree = trial_base(base, demo)
    assert tree["train"]["val_every"] == 100 and tree["train"]["checkpoint_every"] == 100
    assert demo.overrides(demo.start_points[0])["train.stages.2.lr_drop_step"] == 450


def test_domains_are_tune_domains_and_randint_includes_high():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = _space({
        "lr": LR,
        "steps": {"distribution": "randint", "low": 1, "high": 3, "keys": ["train.stages.3.steps"]},
        "rows": {"distribution": "choice", "values": ["2d", "all"], "keys": ["loss.geo_rows"]},
        "geo": {"distribution": "quniform", "low": 0.0, "high": 0.1, "q": 0.05,
                "keys": ["train.stages.3.geo"]},
    })  # fmt: skip
    domains = space.param_space()
    assert isinstance(domains["lr"], Float) and isinstance(domains["steps"], Integer)
    assert isinstance(domains["rows"], Categorical) and isinstance(domains["geo"], Float)
    samples = {domains["steps"].sample() for _ in range(300)}
    assert samples == {1, 2, 3}
    lrs = [domains["lr"].sample() for _ in range(200)]
    assert all(1e-4 <= v <= 1e-3 for v in lrs)
    geos = {round(domains["geo"].sample(), 6) for _ in range(200)}
    assert geos <= {0.0, 0.05, 0.1}


def test_multipliers_round_integer_fields_and_apply_by_stage_number():
    space = _space({
        "s2": {"distribution": "qrandint", "low": 10, "high": 30, "q": 10,
               "keys": {"train.stages.2.steps": 1, "train.stages.2.lr_drop_step": 0.25}},
        "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-3,
               "keys": {"train.stages.2.lr": 1, "train.stages.3.lr": 0.5}},
    })  # fmt: skip
    over = space.overrides({"s2": 30, "lr": 4e-4})
    # 30 * 0.25 = 7.5 -> 8 (an integer field); lr halves for stage 3 and stays a float.
    assert over == {
        "train.stages.2.steps": 30,
        "train.stages.2.lr_drop_step": 8,
        "train.stages.2.lr": pytest.approx(4e-4),
        "train.stages.3.lr": pytest.approx(2e-4),
    }
    cfg = apply_overrides(load_config("demo", ["train.stages.1.steps=150"]).to_dict(), over)
    assert cfg.train.stages[1].steps == 30 and cfg.train.stages[1].lr_drop_step == 8
    assert cfg.train.stages[2].lr == pytest.approx(2e-4)
    assert cfg.train.stages[0].steps == 150  # stage 1 untouched


@pytest.mark.parametrize(
    ("params", "extra", "message"),
    [
        ({"lr": {**LR, "distribution": "gaussian"}}, {}, "params.lr: distribution must be one of"),
        ({"lr": {**LR, "low": 1e-3, "high": 1e-4}}, {}, "params.lr: low (0.001) must be below high"),
        ({"lr": {**LR, "low": 0.0}}, {}, "loguniform needs low > 0"),
        (
            {"lr": {**LR, "keys": ["train.stages.2.learning_rate"]}},
            {},
            "unknown key train.stages.2.learning_rate",
        ),
        ({"lr": {**LR, "keys": ["train.stages.4.lr"]}}, {}, "needs a stage number 1..3"),
        ({"lr": {**LR, "keys": ["train.stages.1.lr"]}}, {}, "train.stages.1.lr is not searchable"),
        ({"lr": {**LR, "keys": ["run.name"]}}, {}, "run.name is not searchable"),
        ({"lr": {**LR, "keys": ["data.set_3d"]}}, {}, "data.set_3d is not searchable"),
        ({"lr": {**LR, "keys": ["model.num_features"]}}, {}, "model.num_features is not searchable"),
        ({"lr": {**LR, "keys": []}}, {}, "keys must be a non-empty list"),
        ({"lr": {**LR, "keys": ["train.stages"]}}, {}, "needs a stage number"),
        ({"lr": {**LR, "distribution": "qrandint", "low": 1, "high": 5}}, {}, "qrandint needs q"),
        ({"lr": {**LR, "q": 0.1}}, {}, "q belongs to the q* distributions"),
        ({"lr": {**LR, "bound": 1}}, {}, "unknown field 'bound'"),
        ({"a": LR, "b": LR}, {}, "train.stages.2.lr is set by both 'a' and 'b'"),
        ({"lr": LR}, {"start_points": [{"lr": 1e-4, "x": 1}]}, "start_points.1 must give exactly the params"),
        ({"lr": LR}, {"asha": {"grace_steps": 0}}, "asha.grace_steps must be an integer >= 1"),
        ({"lr": LR}, {"asha": {"reduction_factor": 1}}, "asha.reduction_factor must be an integer >= 2"),
        ({"lr": LR}, {"trial_overrides": ["train.stages.2.lr=1e-3"]}, "which 'lr' searches"),
        ({"lr": LR}, {"trial_overrides": ["train.val_every"]}, "expected KEY=VALUE"),
        ({"lr": LR}, {"sampler": "tpe"}, "unknown field 'sampler'"),
    ],
)
def test_bad_spaces_are_named(params, extra, message):
    with pytest.raises(SpaceError, match=re.escape(message)) as err:
        _space(params, **extra)
    assert str(err.value).startswith("test.yaml")


def test_values_that_make_an_invalid_config_are_caught_before_running():
    base = load_config("demo")  # batch 16, one worker
    ratio = _space({"ratio": {"distribution": "choice", "values": [0.5, 1.0], "keys": ["data.ratio_2d"]}})
    with pytest.raises(SpaceError, match=r"params\.ratio = 1\.0 gives an invalid config: .*data\.ratio_2d"):
        check_space(ratio, base)
    steps = _space({"s": {"distribution": "randint", "low": -2, "high": 5, "keys": ["train.stages.3.steps"]}})
    with pytest.raises(SpaceError, match=r"params\.s = -2\.0 gives an invalid config"):
        check_space(steps, base)
    missing = _space({"lr": LR})
    with pytest.raises(SpaceError, match="no such file, and not a packaged search space"):
        load_space("no-such-space")
    check_space(missing, base)


def test_a_search_may_weigh_the_sources_of_a_side_but_not_move_them():
    base = load_config("demo", ["data.set_2d=[wild, coco]"])
    weight = {"distribution": "uniform", "low": 0.0, "high": 3.0}
    space = _space({"coco": {**weight, "keys": ["data.set_2d.2.weight"]}})
    check_space(space, base)
    cfg = apply_overrides(base.to_dict(), space.overrides({"coco": 2.5}))
    assert [s.weight for s in cfg.data.set_2d] == [1.0, 2.5]
    with pytest.raises(SpaceError, match=re.escape("data.set_2d.2.path is not searchable")):
        _space({"p": {"distribution": "choice", "values": ["x"], "keys": ["data.set_2d.2.path"]}})
    third = _space({"w": {**weight, "keys": ["data.set_2d.3.weight"]}})  # the base lists two
    with pytest.raises(SpaceError, match=re.escape("data.set_2d has 2 item(s), no item 3")):
        check_space(third, base)


# --- trials -------------------------------------------------------------------------------------


def _plan(tmp_path, space=None, variants=None):
    from tune.plan import Plan

    base = load_config("demo", [
        "data.val_3d=/v", "train.val_every=2", "train.stages.2.steps=250", "train.stages.3.steps=100",
        "train.stages.3.lr=2.5e-4", "data.batch_size=16", "train.stages.3.geo=0.01", "scaling.num_workers=1",
    ]).to_dict()  # fmt: skip
    return Plan(
        kind="ablation" if variants else "search", name="exp", storage=str(tmp_path), base=base, samples=4,
        space=space.raw if space else None, variants=variants, init_checkpoint="/ckpt/stage1",
    )  # fmt: skip


def test_a_trial_runs_stages_2_and_3_from_the_stage1_checkpoint_under_the_experiment(tmp_path):
    from tune.trial import trial_config, trial_setup

    space = _space({"lr": LR, "geo": {**LR, "keys": ["train.stages.3.geo"]}})
    plan = _plan(tmp_path, space=space)
    cfg = trial_config({"lr": 5e-4, "geo": 2e-4}, trial_setup(plan), "abc123")
    assert [st.steps for st in cfg.train.stages] == [0, 250, 100]
    assert cfg.train.init_from == "/ckpt/stage1"
    assert cfg.run.name == "trial-abc123"
    assert cfg.run.storage_path == str(tmp_path / "exp" / "runs")
    assert cfg.train.stages[1].lr == pytest.approx(5e-4) and cfg.train.stages[2].geo == pytest.approx(2e-4)
    assert cfg.train.stages[2].lr == pytest.approx(2.5e-4)  # not searched: the config's


def test_each_seed_of_a_configuration_has_its_seed_and_its_own_stage1(tmp_path):
    from tune.driver import build_tuner, expected_trials, stage1_config
    from tune.trial import knobs, trial_config, trial_setup

    space = _space({"lr": LR})
    plan = _plan(tmp_path, space=space)
    plan.seeds, plan.base["train"]["seed"] = 3, 7
    plan.seed_checkpoints = {"1": "/ckpt/stage1-seed1", "2": "/ckpt/stage1-seed2"}
    setup = trial_setup(plan)
    # A search's seed index comes from Tune's Repeater, an ablation's from its grid.
    configs = [trial_config({"lr": 5e-4, "__trial_index__": i}, setup, f"t{i}") for i in range(3)]
    assert [c.train.seed for c in configs] == [7, 8, 9]
    assert [c.train.init_from for c in configs] == [
        "/ckpt/stage1",
        "/ckpt/stage1-seed1",
        "/ckpt/stage1-seed2",
    ]
    assert (
        trial_config({"variant": "x", "seed_index": 2}, {**setup, "variants": {"x": {}}}, "v").train.seed == 9
    )
    assert knobs({"lr": 1.0, "__trial_index__": 1, "seed_index": 0}) == {"lr": 1.0}
    # Each seed's stage 1 runs with that seed, in its own run folder.
    assert [(stage1_config(plan, i).train.seed, stage1_config(plan, i).run.name) for i in (0, 2)] == [
        (7, "stage1"), (9, "stage1-seed2")
    ]  # fmt: skip
    assert expected_trials(plan) == 4 * 3
    tuner = build_tuner(plan, 2)
    assert type(tuner._local_tuner._tune_config.search_alg).__name__ == "Repeater"
    # --init: one stage 1 for every seed.
    plan.init_given = True
    assert (
        trial_config({"lr": 5e-4, "__trial_index__": 2}, trial_setup(plan), "t").train.init_from
        == "/ckpt/stage1"
    )


def test_ablation_variants_follow_decisions_1(tmp_path):
    from tune.trial import trial_config, trial_setup

    variants = ablation.variant_overrides(load_config("demo", ["train.stages.3.geo=0.01"]))
    assert list(variants) == ["3D/wo geo", "3D/w geo", "3D+2D/wo geo", "3D+2D/w geo"]
    setup = trial_setup(_plan(tmp_path, variants=variants))
    got = {}
    for name in variants:
        cfg = trial_config({"variant": name}, setup, "t")
        got[name] = (cfg.rows_per_worker(), cfg.train.stages[2].geo, cfg.loss.geo_rows)
    # Batch 16 on one worker: ratio 0 -> 16 3D rows; ratio 0.5 -> 8 + 8. λ_geo 0.01 from the demo config.
    assert got == {
        "3D/wo geo": ((16, 0), 0.0, "2d"),
        "3D/w geo": ((16, 0), 0.01, "all"),
        "3D+2D/wo geo": ((8, 8), 0.0, "2d"),
        "3D+2D/w geo": ((8, 8), 0.01, "2d"),
    }
    with pytest.raises(ValueError, match="train.stages.3.geo is 0"):
        ablation.variant_overrides(load_config("demo", ["train.stages.3.geo=0"]))


def test_an_ablation_can_vary_a_sources_weight(tmp_path):
    from tune.trial import trial_config, trial_setup

    base = load_config("demo", ["data.set_2d=[wild, coco]", "train.stages.3.geo=0.01"])
    variants = ablation.variant_overrides(base, {"data.set_2d.2.weight": [0, 1]})
    # The 3D-only variants draw no 2D row: a 2D source's weight cannot change them, they run once.
    assert list(variants) == [
        "3D/wo geo", "3D/w geo",
        "3D+2D/wo geo [data.set_2d.2.weight=0]", "3D+2D/wo geo [data.set_2d.2.weight=1]",
        "3D+2D/w geo [data.set_2d.2.weight=0]", "3D+2D/w geo [data.set_2d.2.weight=1]",
    ]  # fmt: skip
    plan = _plan(tmp_path, variants=variants)
    plan.base["data"]["set_2d"] = base.to_dict()["data"]["set_2d"]
    setup = trial_setup(plan)
    without = trial_config({"variant": "3D+2D/w geo [data.set_2d.2.weight=0]"}, setup, "t")
    assert [s.weight for s in without.data.set_2d] == [1.0, 0.0] and without.data.sources("set_2d")[0][0] == 0
    # The table keeps the paper's order, each varied row under its variant.
    rows = {name: {} for name in reversed(list(variants))}
    rows[ablation.BASELINE_ROW] = {}
    body = [line.split(" | ")[0][2:] for line in ablation.to_markdown(rows).splitlines()[4:11]]
    assert body == [*variants, ablation.BASELINE_ROW]


def test_concurrency_from_gpus_and_cpus():
    from tune.driver import derive_concurrency

    demo = load_config(
        "demo",
        [
            "scaling.num_workers=1",
            "scaling.cpus_per_worker=1",
            "data.preprocess_actors=1",
            "data.epochs_per_pass=1",
        ],
    ).to_dict()  # 1 worker x 1 CPU, 1 preprocessing actor per dataset, one read per pass
    # Per trial: 1 (Tune) + 1 (worker) + 2 datasets x (1 actor + 1 read) = 6 CPUs.
    assert derive_concurrency(demo, {"CPU": 8}, datasets=2) == 1
    assert derive_concurrency(demo, {"CPU": 12}, datasets=2) == 2
    assert derive_concurrency(demo, {"CPU": 12}, datasets=1) == 3  # 1 + 1 + 2 = 4 per trial
    assert derive_concurrency(demo, {"CPU": 2}, datasets=2) == 1  # never below one
    paper = load_config("paper").to_dict()  # 1 GPU worker with 4 CPUs, 4 actors per dataset
    # Per trial: 1 GPU; 1 + 4 + 2 x (4 + 1) = 15 CPUs.
    assert derive_concurrency(paper, {"CPU": 64, "GPU": 8}, datasets=2) == 4
    assert derive_concurrency(paper, {"CPU": 160, "GPU": 8}, datasets=2) == 8
    # Four epochs chained into one pass: four reads per dataset, 1 + 1 + 2 x (1 + 4) = 12 CPUs a trial.
    chained = {**demo, "data": {**demo["data"], "epochs_per_pass": 4}}
    assert derive_concurrency(chained, {"CPU": 24}, datasets=2) == 2


class _Queue:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


def test_only_validated_reports_reach_tune_and_nan_ranks_last():
    from tune.plan import DIVERGED_MPJPE
    from tune.trial import ValidatedReportCallback

    cb = ValidatedReportCallback.__new__(ValidatedReportCallback)  # its __init__ needs a Tune session
    cb._training_actor_item_queue = _Queue()

    class _Ckpt:
        path = "/runs/trial-x/checkpoint_1"

    cb.after_report(None, [{"global_step": 3, "loss_total": 1.0}], None)
    cb.after_report(None, [{"global_step": 4, "val_mpjpe": 120.0}], _Ckpt())
    cb.after_report(None, [{"global_step": 6, "val_mpjpe": math.nan}], None)
    items = cb._training_actor_item_queue.items
    assert [i["global_step"] for i in items] == [4, 6]
    assert items[0]["checkpoint_path"] == "/runs/trial-x/checkpoint_1"
    assert items[1]["val_mpjpe"] == DIVERGED_MPJPE and items[1]["diverged"] is True


# --- tables -------------------------------------------------------------------------------------


def test_best_table_ranks_and_marks_trials_stopped_by_asha():
    from tune.best import TrialSummary, format_table

    done = TrialSummary("aaa", "TERMINATED", {"lr": 0.001}, 8, 8, "/r/a", "/r/a/ck", {"val_mpjpe": 101.26})
    stopped = TrialSummary("bbb", "TERMINATED", {"lr": 2e-6}, 2, 8, "/r/b", "/r/b/ck", {"val_mpjpe": 150.0})
    pending = TrialSummary("ccc", "PENDING", {"lr": 3e-5}, 0, 8, "/r/c")
    assert not done.stopped_early and stopped.stopped_early and not pending.stopped_early
    assert pending.score == math.inf and done.score == pytest.approx(101.26)
    lines = format_table([done, stopped, pending]).splitlines()
    assert lines[0].startswith("| rank | trial | state | steps | val MPJPE (mm)")
    assert lines[2] == "| 1 | aaa | completed | 8/8 | 101.3 | - | - | lr=0.001 | /r/a/ck |"
    assert lines[3] == "| 2 | bbb | stopped (ASHA) | 2/8 | 150.0 | - | - | lr=2e-06 | /r/b/ck |"
    assert lines[4] == "| 3 | ccc | pending | 0/8 | - | - | - | lr=3e-05 | - |"


def test_best_ranks_configurations_by_their_mean_over_seeds():
    from tune.best import TrialSummary, config_dict, format_config_table, group_by_config

    def trial(tid, lr, seed, mpjpe, steps=8):
        return TrialSummary(tid, "TERMINATED", {"lr": lr}, steps, 8, f"/r/{tid}", f"/r/{tid}/ck",
                            {"val_mpjpe": mpjpe}, seed=seed)  # fmt: skip

    # lr 1e-3 has the single best run (90) but the worse mean; lr 1e-4 is better on average.
    trials = [
        trial("a", 1e-3, 0, 90.0), trial("b", 1e-3, 1, 130.0), trial("c", 1e-3, 2, 131.0),
        trial("d", 1e-4, 0, 100.0), trial("e", 1e-4, 1, 102.0), trial("f", 1e-4, 2, 104.0, steps=4),
    ]  # fmt: skip
    groups = group_by_config(sorted(trials, key=lambda t: t.score))
    assert [g.params for g in groups] == [{"lr": 1e-4}, {"lr": 1e-3}]
    first = groups[0]
    assert first.val_mpjpe.mean == pytest.approx(102.0) and first.val_mpjpe.n == 3
    assert first.best_trial.trial_id == "d" and [t.seed for t in first.trials] == [0, 1, 2]
    lines = format_config_table(groups).splitlines()
    assert lines[2].startswith(
        "| 1 | lr=0.0001 | 3 (1) | 102.0 ± 5.0 | 2.0 | 0: 100.0, 1: 102.0, 2: 104.0 | trial d |"
    )
    d = config_dict(first, 1)
    assert d["val_mpjpe"]["n"] == 3 and d["best_checkpoint"] == "/r/d/ck" and d["stopped_early"] == 1


def test_the_ablation_over_seeds_gives_intervals_paired_differences_symmetry_and_a_png(tmp_path):
    rng = np.random.default_rng(0)
    offsets = {
        "3D/wo geo": (20.0, 0.0),
        "3D/w geo": (19.5, -3.0),
        "3D+2D/wo geo": (1.0, 8.0),
        "3D+2D/w geo": (0.0, 0.0),
    }
    runs = {}
    for name, (mpjpe_gap, arm_gap) in offsets.items():
        runs[name] = {}
        for seed in range(4):
            shared = 10.0 * seed  # what a seed does to every variant
            runs[name][seed] = {
                "lab_mpjpe": 60 + mpjpe_gap + shared + rng.normal(0, 0.3), "wild_pck2d": 0.9,
                "wild_test_pck3d": 0.6, "wild_test_auc3d": 0.3, "wild_test_mpjpe": 120.0 + shared,
                ablation.symmetry_key("wild_test", "mm", "lower_arm"): 50.0 + arm_gap + rng.normal(0, 0.3),
            }  # fmt: skip
    rows = ablation.aggregate(runs)
    diffs = ablation.paired_differences(runs)
    assert set(diffs) == {"3D/wo geo", "3D/w geo", "3D+2D/wo geo"}
    lab = diffs["3D/wo geo"]["lab_mpjpe"]
    assert lab.mean == pytest.approx(20.0, abs=0.6) and lab.excludes_zero()
    assert rows["3D/wo geo"]["lab_mpjpe"].half_width > 10  # unpaired, the seeds' spread hides it
    md = ablation.to_markdown(rows, ["n"], diffs)
    assert "Mean ± the half-width of the 95 % t-interval over 4 seeds" in md
    assert "### Paired differences against 3D+2D/w geo" in md
    line = next(l for l in md.splitlines() if l.startswith("| 3D/wo geo | +20."))
    assert line.split(" | ")[1].endswith(" *")
    assert (
        "#### wild test set, mm" in md
        and "| the paper, 3D+2D wo → w geo | 42.40 → 37.80 | 60.40 → 50.70" in md
    )
    # 50 + 8 mm of lower-arm asymmetry, +8 mm against the reference and clearly so; no other limb.
    assert re.search(
        r"^\| 3D\+2D/wo geo \| - \| 5[78]\.\d ± 0\.\d \(\+[78]\.\d ± 0\.\d \*\) \| - \| - \|$", md, re.M
    )
    md_path, json_path = ablation.write_report(str(tmp_path), {"rows": rows, "differences": diffs}, ["n"])
    png = (tmp_path / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    data = json.loads(open(json_path).read())
    assert data["rows"]["3D/wo geo"]["lab_mpjpe"]["n"] == 4
    assert data["differences"]["3D/wo geo"]["lab_mpjpe"]["ci95_half_width"] > 0


def _rows():
    def row(lab, pck2d, pck3d, auc, mpjpe):
        return {"lab_mpjpe": lab, "wild_pck2d": pck2d, "wild_test_pck3d": pck3d, "wild_test_auc3d": auc,
                "wild_test_mpjpe": mpjpe}  # fmt: skip

    # Given out of the paper's order on purpose.
    return {
        "3D+2D/w geo": row(60.0, 0.9, 0.70, 0.33, 120.0),
        "3D/wo geo": row(80.0, 0.5, 0.30, 0.18, 180.0),
        "3D+2D/wo geo": row(61.0, 0.88, 0.65, 0.32, 118.5),
        "3D/w geo": row(79.0, math.nan, 0.35, 0.20, 170.0),
        ablation.BASELINE_ROW: row(150.0, math.nan, 0.10, 0.05, 250.0),
    }


def test_ablation_table_has_the_papers_layout():
    md = ablation.to_markdown(_rows(), notes=["a note"])
    lines = md.splitlines()
    assert lines[2] == (
        "| Method | Lab MPJPE (mm) | Wild 2D PCK (%) | Wild-test 3DPCK (%) | Wild-test AUC (%) "
        "| Wild-test MPJPE (mm) |"
    )
    body = lines[4:9]
    assert [line.split(" | ")[0] for line in body] == [
        "| 3D/wo geo", "| 3D/w geo", "| 3D+2D/wo geo", "| 3D+2D/w geo", f"| {ablation.BASELINE_ROW}"
    ]  # fmt: skip
    assert body[0] == "| 3D/wo geo | 80.0 | 50.0 | 30.0 | 18.0 | 180.0 |"
    assert body[1] == "| 3D/w geo | 79.0 | - | 35.0 | 20.0 | 170.0 |"
    # Winners on the wild test set: 3DPCK 70.0 vs 65.0 -> 5.0 points; MPJPE 118.5 vs 120.0 -> 1.5 mm.
    assert "- Best on Wild-test 3DPCK: **3D+2D/w geo** (70.0, 5.0 points ahead of 3D+2D/wo geo)." in lines
    assert "- Best on Wild-test MPJPE: **3D+2D/wo geo** (118.5, 1.5 mm ahead of 3D+2D/w geo)." in lines
    assert "| 3D+2D/w geo | 64.90 | 91.62 | 69.20 | 32.50 | - |" in lines  # the paper's own row
    assert lines[-1] == "- a note"


def test_ablation_winner_ignores_the_baseline_and_scores_rows_from_evaluations():
    rows = _rows()
    rows[ablation.BASELINE_ROW]["wild_test_pck3d"] = 0.99
    w = ablation.winner(rows, "wild_test_pck3d")
    assert w["variant"] == "3D+2D/w geo" and w["margin"] == pytest.approx(0.05)
    evals = {
        "lab_test": {"model": {"mpjpe": 70.0, "pck2d": 0.8}},
        "wild_2d": {"model": {"mpjpe": math.nan, "pck2d": 0.75}},
        "wild_test": {"model": {"mpjpe": 130.0, "pck3d": 0.6, "auc3d": 0.3}},
    }
    evals["wild_test"]["bone_symmetry"] = {"pred_mm": {"lower_arm": 50.0}, "pred_px": {"lower_arm": None}}
    row = ablation.scores_row(evals)
    assert {k: v for k, v in row.items() if not k.startswith("sym_")} == {
        "lab_mpjpe": 70.0, "wild_pck2d": 0.75, "wild_test_pck3d": 0.6, "wild_test_auc3d": 0.3,
        "wild_test_mpjpe": 130.0,
    }  # fmt: skip
    assert row["sym_wild_test_mm_lower_arm"] == 50.0 and math.isnan(row["sym_wild_test_px_lower_arm"])
    assert math.isnan(row["sym_wild_2d_px_upper_arm"])
    no_wild = ablation.scores_row({"lab_test": evals["lab_test"], "wild_2d": None, "wild_test": None})
    assert math.isnan(no_wild["wild_test_pck3d"]) and no_wild["lab_mpjpe"] == 70.0


def test_ablation_report_files(tmp_path):
    import json

    md, js = ablation.write_report(str(tmp_path), {"rows": _rows(), "variants": {}}, ["n"])
    data = json.loads(open(js).read())
    assert data["rows"]["3D/w geo"]["wild_pck2d"] is None  # NaN -> null
    assert data["winner_wild_test_pck3d"]["variant"] == "3D+2D/w geo"
    assert open(md).read().startswith("## Ablation")


def _ablation_plan(tmp_path, name, seeds, first_seed=0, **overrides):
    from tune.plan import Plan

    cfg = load_config("demo", [f"train.seed={first_seed}", *(f"{k}={v}" for k, v in overrides.items())])
    return Plan(
        kind="ablation", name=name, storage=str(tmp_path), base=cfg.to_dict(), samples=1,
        variants=ablation.variant_overrides(cfg), seeds=seeds,
        eval_sets={"lab_test": "lab", "wild_2d": "wild", "wild_test": "wt"},
    )  # fmt: skip


def test_ablations_that_differ_only_in_their_seeds_pool_into_one_report(tmp_path):
    from types import SimpleNamespace

    first = _ablation_plan(tmp_path, "a", seeds=3)  # seeds 0, 1, 2
    more = _ablation_plan(tmp_path, "b", seeds=2, first_seed=3)  # seeds 3, 4
    assert ablation.pooling_conflicts([first, more]) == []

    def trial(name, v, s):
        failed = name == "b" and s == 4 and v == "3D/w geo"
        return SimpleNamespace(
            params={"variant": v}, seed=s, best_checkpoint=None if failed else f"{name}/{v}/{s}"
        )

    trials = {
        "a": [trial("a", v, s) for v in ablation.VARIANTS for s in (0, 1, 2)],
        "b": [trial("b", v, s) for v in ablation.VARIANTS for s in (3, 4)],
    }
    checkpoints, notes = ablation.pooled_checkpoints([(first, trials["a"]), (more, trials["b"])])
    assert sorted(checkpoints["3D+2D/w geo"]) == [0, 1, 2, 3, 4]
    assert checkpoints["3D+2D/w geo"][3] == "b/3D+2D/w geo/3"
    assert sorted(checkpoints["3D/w geo"]) == [0, 1, 2, 3]
    assert notes == ["3D/w geo, seed 4: no checkpoint (the trial failed)"]


def test_ablations_that_cannot_share_a_report_say_why():
    from pathlib import Path

    tmp = Path("/nonexistent")
    first = _ablation_plan(tmp, "a", seeds=3)
    overlap = _ablation_plan(tmp, "b", seeds=2, first_seed=2)  # seeds 2, 3
    other_data = _ablation_plan(tmp, "c", seeds=1, first_seed=7, **{"data.batch_size": 8})
    search = _ablation_plan(tmp, "d", seeds=1, first_seed=9)
    search.kind = "search"
    other_lr = _ablation_plan(tmp, "e", seeds=1, first_seed=10, **{"train.stages.2.lr": 0.5})
    shared_stage1 = _ablation_plan(tmp, "f", seeds=1, first_seed=11)
    shared_stage1.init_given, shared_stage1.init_checkpoint = True, "/ckpt/stage1"
    problems = ablation.pooling_conflicts([first, overlap, other_data, search, other_lr, shared_stage1])
    lr = first.base["train"]["stages"][1]["lr"]
    assert problems == [
        "seed 2 is in both /nonexistent/a and /nonexistent/b",
        "/nonexistent/c: data.batch_size is 8, /nonexistent/a has 16",
        "/nonexistent/d: a search, not an ablation (pose3d best ranks a search)",
        f"/nonexistent/e: train.stages.2.lr is 0.5, /nonexistent/a has {lr!r}",
        "/nonexistent/f: another stage 1 than /nonexistent/a (--init)",
    ]


def test_ablation_report_cli_refuses_experiments_it_cannot_pool(tmp_path, capsys):
    from pose3d.cli.main import main
    from tune.plan import save_plan

    save_plan(_ablation_plan(tmp_path, "a", seeds=3))
    save_plan(_ablation_plan(tmp_path, "b", seeds=2, first_seed=1))
    assert main(["ablation-report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["ablation-report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot share one report" in err and "seed 1 is in both" in err and "seed 2 is in both" in err
    assert (
        main(["ablation-report", str(tmp_path / "a"), str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    )
    assert "not a pose3d search" in capsys.readouterr().err


def test_ablation_report_pools_experiments_where_they_are_now(tmp_path, monkeypatch, capsys):
    """Experiments copied away from where they ran are read where they are, every seed's run is
    scored, and the report lands in --out."""
    import shutil
    from types import SimpleNamespace

    from pose3d.cli.main import main
    from tune import best
    from tune.plan import save_plan

    ran = tmp_path / "ran"
    save_plan(_ablation_plan(ran, "a", seeds=2))
    save_plan(_ablation_plan(ran, "b", seeds=1, first_seed=2))
    now = tmp_path / "now"
    shutil.copytree(ran, now)
    shutil.rmtree(ran)
    collected, scored = [], {}

    def collect(experiment):
        collected.append(experiment)
        seeds = (0, 1) if experiment.endswith("/a") else (2,)
        ckpt = lambda v, s: f"{experiment}/{v}/{s}"  # noqa: E731
        return [SimpleNamespace(params={"variant": v}, seed=s, best_checkpoint=ckpt(v, s))
                for v in ablation.VARIANTS for s in seeds]  # fmt: skip

    def evaluate(checkpoints, sets, **kw):
        scored.update(checkpoints=checkpoints, sets=sets)
        return {"rows": _rows(), "differences": {}, "variants": {}, "runs": {}, "baselines": {}}

    monkeypatch.setattr(best, "collect", collect)
    monkeypatch.setattr(ablation, "evaluate_variants", evaluate)
    out = tmp_path / "pooled"
    assert main(["ablation-report", str(now / "a"), str(now / "b"), "--out", str(out)]) == 0
    assert collected == [str(now / "a"), str(now / "b")]
    assert scored["checkpoints"]["3D+2D/w geo"] == {
        s: f"{now}/{'a' if s < 2 else 'b'}/3D+2D/w geo/{s}" for s in (0, 1, 2)
    }
    assert scored["sets"] == {"lab_test": "lab", "wild_2d": "wild", "wild_test": "wt"}
    report = json.loads((out / "ablation.json").read_text())
    assert any(f"in {now / 'b'}" in note and "seeds" not in note for note in report["notes"])
    assert (out / "ablation.md").is_file() and not (now / "a" / "ablation.md").exists()
    assert "written:" in capsys.readouterr().out


# --- the command line ---------------------------------------------------------------------------


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    from pose3d.cli.main import main

    assert main(["tune", "--preset", "ablation", "--search", "demo"]) == 2
    assert "drop --search and --samples" in capsys.readouterr().err
    assert main(["tune", "--config", "demo"]) == 2
    assert "give --search SPACE" in capsys.readouterr().err
    assert main(["tune", "--preset", "ablation", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err
    assert main(["tune", "--search", "demo", "data.val_3d=''"]) == 2
    assert "data.val_3d is empty" in capsys.readouterr().err
    assert main(["best", str(tmp_path / "nothing")]) == 2
    assert "not a pose3d search" in capsys.readouterr().err
    assert main(["tune", "--resume", "--storage", str(tmp_path), "--name", "x"]) == 2
    assert "not a pose3d search" in capsys.readouterr().err


class _Storage:
    def __init__(self, folder):
        import pyarrow.fs as pafs

        self.storage_filesystem = pafs.LocalFileSystem()
        self.trial_fs_path = str(folder)
        self.trial_dir_name = folder.name
        self.experiment_fs_path = str(folder.parent)


class _Trial:
    def __init__(self, trial_id, folder, results=()):
        import json

        folder.mkdir(parents=True, exist_ok=True)
        if results:
            lines = [json.dumps({"global_step": s, "val_mpjpe": m}) for s, m in results]
            (folder / "result.json").write_text("\n".join(lines) + "\n")
        self.trial_id, self.storage = trial_id, _Storage(folder)


def test_asha_rungs_are_rebuilt_from_reported_results_on_resume(tmp_path, caplog):
    import logging

    from ray.tune.schedulers import TrialScheduler

    from tune.asha import ResumableASHA

    def scheduler():
        return ResumableASHA(
            time_attr="global_step", metric="val_mpjpe", mode="min", max_t=8, grace_period=2,
            reduction_factor=2, stop_last_trials=False,
        )  # fmt: skip

    # Two trials finished before an interruption, at 530 and 540 mm at step 2 (the first rung).
    done = [
        _Trial("a", tmp_path / "a", [(2, 530.0), (4, 500.0), (8, 480.0)]),
        _Trial("b", tmp_path / "b", [(2, 540.0), (4, 520.0), (8, 510.0)]),
    ]
    asha = scheduler()
    for t in done:
        asha.on_trial_add(None, t)
    new, good = _Trial("c", tmp_path / "c"), _Trial("d", tmp_path / "d")
    new.storage.trial_dir_name = None  # a trial Tune has just created has no folder yet
    asha.on_trial_add(None, new)
    asha.on_trial_add(None, good)
    # The rung's cutoff is the median of 530 and 540 = 535 mm: 593 stops, 520 goes on.
    with caplog.at_level(logging.INFO, logger="pose3d.tune"):
        assert asha.on_trial_result(None, new, {"global_step": 2, "val_mpjpe": 593.0}) == TrialScheduler.STOP
    why = "val_mpjpe 593 is worse than the cutoff 535 of the rung at step 2, set by 2 trial(s)"
    assert f"ASHA stops trial c: at step 2, {why}" in caplog.text
    assert asha.on_trial_result(None, good, {"global_step": 2, "val_mpjpe": 520.0}) == TrialScheduler.CONTINUE
    # With empty rungs (what plain ASHA has after a restore) the first trial at a rung always goes on.
    fresh = scheduler()
    fresh.on_trial_add(None, new)
    assert fresh.on_trial_result(None, new, {"global_step": 2, "val_mpjpe": 593.0}) == TrialScheduler.CONTINUE


def test_asha_replays_checkpointed_results_tune_never_logged(tmp_path):
    """Interrupted between Train registering a checkpoint and Tune logging its report: on resume the
    checkpoint's validation is replayed, and a result ASHA would have stopped stops the trial."""
    import yaml
    from ray.tune.schedulers import TrialScheduler

    from pose3d.train.checkpoint import METRICS_FILE
    from tune.asha import ResumableASHA

    def checkpoint(trial_id, step, mpjpe):
        folder = tmp_path / "runs" / f"trial-{trial_id}" / f"checkpoint_{step}"
        folder.mkdir(parents=True)
        (folder / METRICS_FILE).write_text(yaml.safe_dump({"global_step": float(step), "val_mpjpe": mpjpe}))

    asha = ResumableASHA(
        time_attr="global_step", metric="val_mpjpe", mode="min", max_t=8, grace_period=2,
        reduction_factor=2, stop_last_trials=False,
    )  # fmt: skip
    for t in (_Trial("a", tmp_path / "a", [(2, 530.0)]), _Trial("b", tmp_path / "b", [(2, 540.0)])):
        checkpoint(t.trial_id, 2, 999.0)  # already in the log: the log's value counts, not this
        asha.on_trial_add(None, t)
    checkpoint("bad", 2, 593.0)
    checkpoint("good", 2, 520.0)
    (tmp_path / "runs" / "trial-torn" / "checkpoint_2").mkdir(parents=True)  # an upload cut off
    bad, good, torn = (_Trial(i, tmp_path / i) for i in ("bad", "good", "torn"))
    for t in (bad, good, torn):
        asha.on_trial_add(None, t)
    # Cutoff at step 2: median(530, 540) = 535 mm. 593 would have been stopped: it is, at its
    # first result after resume, whatever that says; 520 goes on.
    assert asha.on_trial_result(None, bad, {"global_step": 4, "val_mpjpe": 100.0}) == TrialScheduler.STOP
    assert asha.on_trial_result(None, good, {"global_step": 4, "val_mpjpe": 500.0}) == TrialScheduler.CONTINUE
    # The torn checkpoint replays nothing: the trial is judged at step 2 like a new one.
    assert asha.on_trial_result(None, torn, {"global_step": 2, "val_mpjpe": 600.0}) == TrialScheduler.STOP
