"""The typed config: packaged configs load, overrides apply, bad input is named."""

import re

import pytest

from pose3d.train import schedule
from pose3d.train.config import ConfigError, config_from_dict, load_config, packaged_configs


def test_packaged_configs_load_and_validate():
    assert {"paper", "demo"} <= set(packaged_configs())
    paper = load_config("paper")
    assert paper.model.num_stacks == 2 and paper.model.num_features == 256 and paper.model.input_size == 256
    assert [st.steps for st in paper.train.stages] == [240000, 200000, 40000]
    assert paper.train.stages[2].lr == pytest.approx(2.5e-5)
    assert (paper.train.stages[1].reg, paper.train.stages[2].geo) == (0.1, 0.01)
    assert paper.optim.alpha == 0.99 and paper.optim.eps == 1e-8 and paper.optim.momentum == 0


def test_overrides_use_stage_numbers_and_yaml_values():
    cfg = load_config(
        "demo", ["train.stages.3.steps=7", "data.ratio_2d=0.25", "train.stages.2.lr_drop_step=5"]
    )
    assert cfg.train.stages[2].steps == 7
    assert cfg.train.stages[1].lr_drop_step == 5
    assert cfg.data.ratio_2d == 0.25
    assert cfg.rows_per_worker() == (12, 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stages.4.steps=1", "stage number 1..3"),
        ("data.bogus=1", "unknown key data.bogus"),
        ("data.ratio_2d=1.5", "data.ratio_2d"),
        ("train.stages.1.steps=abc", "train.stages.1.steps: expected an integer"),
        ("loss.geo_rows=some", "loss.geo_rows"),
        ("scaling.num_workers=3", "not divisible by 3 workers"),
        ("model.input_size=100", "4 x output_size"),
        ("nonsense", "expected key=value"),
        ("run.ray_train_log_level=LOUD", "run.ray_train_log_level must be DEBUG"),
        # Values that would break later, in a worker, refused up front:
        ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got 0"),
        ("train.val_every=-5", "train.val_every must be >= 1, got -5"),
        ("train.log_every=0", "train.log_every must be >= 1"),
        ("data.shuffle_buffer=-1", "data.shuffle_buffer must be >= 0"),
        ("data.preprocess_actors=0", "data.preprocess_actors must be >= 1"),
        ("run.keep_checkpoints=0", "run.keep_checkpoints must be >= 1"),
        ("train.stages.2.lr=nan", "train.stages.2.lr must be a finite number, got nan"),
        ("train.stages.3.geo=inf", "train.stages.3.geo must be a finite number"),
        ("data.augment.scale=nan", "data.augment.scale must be a finite number"),
        ("scaling.cpus_per_worker=0", "scaling.cpus_per_worker must be > 0"),
        ("train.stages.1.lr_drop=0", "train.stages.1.lr_drop must be > 0"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("demo", [override])


def test_missing_config_names_itself(tmp_path):
    with pytest.raises(ConfigError, match="no-such-config"):
        load_config("no-such-config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(str(bad))


def test_schedule_positions_and_lr_drop():
    cfg = load_config("demo", ["train.stages.1.steps=3", "train.stages.2.steps=4", "train.stages.3.steps=2",
                               "train.stages.2.lr_drop_step=2", "train.stages.2.lr=1.0"])  # fmt: skip
    assert schedule.stage_starts(cfg) == [0, 3, 7, 9] and schedule.total_steps(cfg) == 9
    assert schedule.stage_lengths(cfg) == [3, 4, 2] and schedule.describe_lengths(cfg) == "3 + 4 + 2"
    assert [schedule.position(cfg, g) for g in (0, 2, 3, 6, 7, 8)] == [
        schedule.StagePosition(1, 0), schedule.StagePosition(1, 2), schedule.StagePosition(2, 0),
        schedule.StagePosition(2, 3), schedule.StagePosition(3, 0), schedule.StagePosition(3, 1),
    ]  # fmt: skip
    assert schedule.position(cfg, 9) is None
    assert [schedule.learning_rate(cfg, 2, s) for s in range(4)] == [1.0, 1.0, 0.1, 0.1]
    assert not schedule.uses_depth(1) and schedule.uses_depth(2) and schedule.uses_depth(3)
    assert schedule.NUM_STAGES == len(cfg.train.stages) == len(schedule.STAGES)
    assert schedule.steps_key(3) == "train.stages.3.steps"
    with pytest.raises(ValueError, match="1..3"):
        schedule.stage_steps(cfg, 4)


def test_stage_weights_and_the_geometric_stage():
    cfg = load_config("paper")
    assert schedule.uses_geometry(cfg, schedule.GEOMETRIC_STAGE)
    assert not schedule.uses_geometry(cfg, 1) and not schedule.uses_geometry(cfg, 2)
    w = schedule.loss_weights(cfg, 3)
    assert (w.reg, w.geo, w.geo_rows) == (0.1, 0.01, cfg.loss.geo_rows)


def test_augment_section_is_the_data_layers_params():
    import dataclasses

    from pose3d.data.augment import AugmentParams

    demo = load_config("demo").data.augment
    cfg = load_config("demo", ["data.augment.flip=false", "data.augment.scale=0.1"])
    assert isinstance(cfg.data.augment, AugmentParams)
    assert cfg.data.augment == dataclasses.replace(demo, scale=0.1, flip=False)
    assert cfg.to_dict()["data"]["augment"] == dataclasses.asdict(cfg.data.augment)
    with pytest.raises(ConfigError, match=r"data\.augment\.scale: expected a number"):
        load_config("demo", ["data.augment.scale=big"])
    with pytest.raises(ConfigError, match=r"unknown key data\.augment\.shear"):
        load_config("demo", ["data.augment.shear=1"])
    # A whole section may be given as a mapping (the rest of it at its defaults).
    assert load_config("demo", ["data.augment={flip: false}"]).data.augment == AugmentParams(flip=False)


def test_one_override_engine_for_the_cli_and_tune():
    from pose3d.train.config import apply_override, apply_overrides, parse_override

    tree = load_config("demo").to_dict()
    apply_override(tree, *parse_override("train.stages.2.lr=0.001"))
    apply_override(tree, "train.val_every", 7)
    assert tree["train"]["stages"][1]["lr"] == 0.001 and tree["train"]["val_every"] == 7
    cfg = apply_overrides(tree, {"data.ratio_2d": 0.25})
    assert cfg.data.ratio_2d == 0.25 and tree["data"]["ratio_2d"] != 0.25  # the base is left as it is
    for key, message in [
        ("train.stages.4.lr", "needs a stage number 1..3"),
        ("train.stages", "needs a stage number 1..3"),
        ("data.bogus", "unknown key data.bogus"),
        ("train.val_every.x", "train.val_every is not a section"),
    ]:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            apply_override(tree, key, 1)


def test_local_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    from pose3d.train.config import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        "demo",
        ["data.set_3d=shards/lab", "data.set_2d=s3://bucket/wild",
         "train.init_from=runs/stage1/checkpoint_1", "run.storage_path=~/runs"],
    )  # fmt: skip
    absolute_paths(cfg)
    assert [s.path for s in cfg.data.set_3d] == [str(tmp_path / "shards/lab")]
    assert [s.path for s in cfg.data.set_2d] == ["s3://bucket/wild"]
    assert cfg.data.val_2d == ""
    assert cfg.train.init_from == str(tmp_path / "runs/stage1/checkpoint_1")
    assert cfg.run.storage_path.startswith("/") and "~" not in cfg.run.storage_path


def test_checkpoint_score_ranks_validated_then_unvalidated_then_diverged():
    from pose3d.train.loop import checkpoint_score

    validated = checkpoint_score(180.0, True, 900)
    unvalidated = checkpoint_score(None, True, 920)
    diverged = checkpoint_score(float("nan"), True, 940)
    assert validated == 180.0 < unvalidated < diverged
    assert checkpoint_score(None, False, 20) < checkpoint_score(None, False, 10)  # stage 1: recency


def test_a_side_takes_one_path_or_weighted_sources():
    from pose3d.train.config import Source

    one = load_config("demo", ["data.set_2d=wild"])
    assert one.data.set_2d == [Source("wild", 1.0)]
    assert one.data.target_shares("set_2d") == [1.0]
    # A list of paths and {path, weight}; then one source's weight by number, as a search sets it.
    many = load_config("demo", ["data.set_2d=[wild, {path: coco, weight: 3}]", "data.set_2d.1.weight=1"])
    assert many.data.set_2d == [Source("wild", 1.0), Source("coco", 3.0)]
    assert many.data.target_shares("set_2d") == [0.25, 0.75]
    # Weight 0 leaves a source out of the draw but keeps its number.
    off = load_config("demo", ["data.set_2d=[wild, {path: coco, weight: 0}]"])
    assert off.data.sources("set_2d") == [(0, Source("wild", 1.0))]
    # The saved form (a checkpoint's config) loads back as it was.
    from pose3d.train.config import config_from_dict

    assert config_from_dict(many.to_dict()).data.set_2d == many.data.set_2d
    # An old checkpoint's config, with a plain path, still loads.
    old = many.to_dict()
    old["data"]["set_2d"] = "wild"
    assert config_from_dict(old).data.set_2d == [Source("wild", 1.0)]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.set_2d=[a, a]", "data.set_2d.2: a is listed twice"),
        ("data.set_2d=[{path: a, weight: -1}]", "data.set_2d.1.weight must be >= 0"),
        ("data.set_2d=[{path: a, weight: 0}]", "data.set_2d: every source has weight 0"),
        ("data.set_2d=[{weight: 2}]", "data.set_2d.1.path is empty"),
        ("data.set_2d=[{path: a, wieght: 2}]", "unknown key data.set_2d.1.wieght"),
        ("data.set_2d.3.weight=2", "data.set_2d has 1 item(s), no item 3"),
        ("data.set_2d=5", "data.set_2d: expected a shard path or a list"),
        ("data.set_2d=[{path: a, weight: .nan}]", "data.set_2d.1.weight must be a finite number"),
    ],
)
def test_bad_sources_are_refused_by_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("demo", [override])


def test_workers_a_count_or_an_elastic_range_that_keeps_the_exact_mix():
    fixed = load_config("demo", ["scaling.num_workers=2"])
    assert fixed.scaling.worker_range == (2, 2) and not fixed.scaling.elastic
    elastic = load_config("demo", ["scaling.num_workers=[1, 4]", "data.batch_size=48", "run.max_failures=-1"])
    assert elastic.scaling.worker_range == (1, 4) and elastic.scaling.elastic
    # Whatever the count, one step's batch over all workers is the same 24 + 24 rows.
    for world in (1, 2, 3, 4):
        assert (
            elastic.global_rows(3, world) == (24, 24) and elastic.rows_per_worker(world) == (24 // world,) * 2
        )
        assert elastic.global_rows(1, world) == (24, 24)  # stage 1 of the demo: both sets, half and half
    assert config_from_dict(elastic.to_dict()).scaling.num_workers == [1, 4]
    retry = "run.max_failures=-1"
    with pytest.raises(ConfigError, match=r"cannot keep the exact 3D/2D rows of 1 worker\(s\) on 3 "):
        load_config("demo", ["scaling.num_workers=[1, 4]", "data.batch_size=16", retry])
    # 12 rows at half 2D: 4 workers would take 3 rows each, 1 + 2, so 4 + 8 in all instead of 6 + 6.
    with pytest.raises(ConfigError, match=r"on 4 .* counts that can: 1, 2, 3\."):
        load_config("demo", ["scaling.num_workers=[1, 4]", "data.batch_size=12", retry])
    with pytest.raises(ConfigError, match=r"needs run.max_failures other than 0"):
        load_config("demo", ["scaling.num_workers=[1, 2]", "run.max_failures=0"])
    with pytest.raises(ConfigError, match=r"cannot use STRICT_SPREAD"):
        load_config("demo", ["scaling.num_workers=[1, 2]", retry, "scaling.placement_strategy=STRICT_SPREAD"])
    for bad in ("[2, 1]", "[1, 2, 3]", "[0, 2]"):
        with pytest.raises(ConfigError, match=re.escape("scaling.num_workers must be a count or [min, max]")):
            load_config("demo", [f"scaling.num_workers={bad}"])
