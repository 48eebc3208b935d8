"""bps.core.params: defaults, the repo's params.yaml and runtime.yaml, and one readable line per bad key."""

from pathlib import Path

import pytest
import yaml

from bps.core.params import Params, ParamsError, load_params, parse_params, with_key

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _error(raw) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


def test_defaults_validate():
    params = parse_params({})
    assert params == Params()
    assert params.split.group_by == "well"
    assert (params.split.train, params.split.val, params.split.test) == (0.7, 0.15, 0.15)
    assert params.preprocess.fixed_range == (200, 3000)
    assert params.task.target == "particle"
    assert params.data.hours == [4, 24, 48]


def test_none_is_the_defaults():
    # An empty params.yaml loads as None.
    assert parse_params(None) == Params()


def test_repo_params_yaml_validates():
    params = load_params(REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    # Spot-check that the file's values, not just the defaults, came through.
    assert params.split.group_by == raw["split"]["group_by"]
    assert params.preprocess.image_size == raw["preprocess"]["image_size"]
    assert params.data.source == raw["data"]["source"]
    assert params.train.optimizer == raw["train"]["optimizer"]


def test_the_committed_files_hold_the_code_defaults():
    """One source of defaults: params.yaml and runtime.yaml say what bps/core/params.py says (the
    layout block, read only by the datasets pipeline, lives in each dataset's folder)."""
    assert load_params(REPO_PARAMS) == Params()


def test_runtime_settings_live_in_runtime_yaml_and_nowhere_else(tmp_path):
    (tmp_path / "params.yaml").write_text("preprocess: {image_size: 32}\n")
    (tmp_path / "runtime.yaml").write_text("preprocess: {workers: 2}\ndata: {s3: {retries: 1}}\n")
    params = load_params(tmp_path / "params.yaml")
    assert (params.preprocess.image_size, params.preprocess.workers, params.data.s3.retries) == (32, 2, 1)
    (tmp_path / "params.yaml").write_text("preprocess: {workers: 2}\n")
    with pytest.raises(ParamsError, match=r"params.yaml: preprocess.workers changes speed, not results: set it in "
                                          r"runtime.yaml"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "runtime.yaml").write_text("split: {seed: 3}\n")
    with pytest.raises(ParamsError, match=r"runtime.yaml: split.seed changes results, not speed: set it in params"):
        load_params(tmp_path / "params.yaml")


def test_load_params_reads_a_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("preprocess:\n  image_size: 32\ntask:\n  target: condition\n")
    params = load_params(path)
    assert params.preprocess.image_size == 32
    assert params.task.target == "condition"
    assert params.split == Params().split


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("split: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_load_params_error_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("task:\n  target: dose\n")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: task.target:")


def test_unknown_top_level_key_lists_allowed_keys():
    message = _error({"splt": {"train": 0.7}})
    allowed = ("seed, data, split, preprocess, task, baseline, train, features, appearance, foci, fusion, evaluate, "
               "lr_find")
    assert message == f"params.yaml: splt: unknown key (allowed: {allowed})"


def test_unknown_nested_key_names_dotted_key_and_allowed_keys():
    message = _error({"split": {"grop_by": "well"}})
    allowed = "protocol, group_by, test_hour, val_unit, train, val, test"
    assert message == f"params.yaml: split.grop_by: unknown key (allowed: {allowed})"


def test_unknown_deeply_nested_key():
    message = _error({"data": {"s3": {"bucket_name": "x"}}})
    assert message.startswith("params.yaml: data.s3.bucket_name: unknown key (allowed: bucket, prefix, region,")
    assert "endpoint_url" in message


def test_wrong_type():
    message = _error({"train": {"epochs": "ten"}})
    assert message.startswith("params.yaml: train.epochs: ")
    assert "integer" in message
    assert "'ten'" in message


def test_block_of_wrong_type():
    message = _error({"split": 5})
    assert message.startswith("params.yaml: split: ")
    assert "(got 5)" in message


def test_out_of_range_value():
    message = _error({"preprocess": {"image_size": 8}})
    assert message == "params.yaml: preprocess.image_size: Input should be greater than or equal to 16 (got 8)"


def test_bad_literal_names_allowed_values():
    message = _error({"task": {"target": "dose"}})
    assert message.startswith("params.yaml: task.target: ")
    for allowed in ("'particle'", "'particle_dose'", "'condition'"):
        assert allowed in message
    assert "(got 'dose')" in message


def test_bad_list_item_names_its_index():
    message = _error({"data": {"hours": [4, 12]}})
    assert message.startswith("params.yaml: data.hours.1: ")
    assert "(got 12)" in message


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.5, "val": 0.15, "test": 0.15},
        {"train": 0.8, "val": 0.15, "test": 0.15},
    ],
)
def test_split_fractions_must_sum_to_one(fractions):
    message = _error({"split": fractions})
    assert message.startswith("params.yaml: split: ")
    assert "sum to 1" in message


def test_split_fraction_must_be_positive():
    assert "must each be > 0" in _error({"split": {"train": 0.85, "val": 0.15, "test": 0.0}})


def test_fixed_range_must_increase():
    assert "low < high" in _error({"preprocess": {"fixed_range": [3000, 200]}})


def test_one_line_per_problem():
    message = _error(
        {
            "preprocess": {"image_size": 8, "normalize": "zscore"},
            "task": {"target": "dose"},
            "split": {"grop_by": "well"},
        }
    )
    lines = message.splitlines()
    assert len(lines) == 4
    keys = sorted(line.split(": ")[1] for line in lines)
    assert keys == ["preprocess.image_size", "preprocess.normalize", "split.grop_by", "task.target"]
    assert all(line.startswith("params.yaml: ") for line in lines)


def test_params_are_frozen():
    params = Params()
    with pytest.raises(ValueError):
        params.split.seed = 3


def test_split_protocol_defaults_and_choices():
    assert (Params().split.protocol, Params().split.test_hour) == ("grouped", 24)
    message = _error({"split": {"protocol": "by_plate"}})
    assert "split.protocol" in message and "'leave_hour_out'" in message and "'leave_wells_out'" in message
    assert "split.test_hour" in _error({"split": {"test_hour": 12}})


def test_held_out_hour_must_be_a_selected_hour():
    message = _error({"split": {"protocol": "leave_hour_out", "test_hour": 48}, "data": {"hours": [4, 24]}})
    assert message.count("\n") == 0
    assert "split.test_hour (48) must be one of data.hours [4, 24]" in message
    only = _error({"split": {"protocol": "leave_hour_out", "test_hour": 24}, "data": {"hours": [24]}})
    assert "needs another of data.hours" in only
    # Other protocols never read the hour.
    assert parse_params({"split": {"test_hour": 48}, "data": {"hours": [4]}}).split.test_hour == 48


def test_feature_and_classical_blocks():
    params = parse_params({})
    assert params.features.thresholds == (0.25, 0.5) and params.appearance.max_iter == 200 and params.foci.C == 1.0
    assert "thresholds must be [dim, bright] with dim < bright" in _error({"features": {"thresholds": [0.5, 0.25]}})
    assert "foci.C" in _error({"foci": {"C": 0}}) and "fusion.C" in _error({"fusion": {"C": 0}})
    assert "appearance.max_leaf_nodes" in _error({"appearance": {"max_leaf_nodes": 1}})
def test_bootstrap_unit_is_well_or_plate():
    message = _error({"evaluate": {"bootstrap_unit": "image"}})
    assert message == "params.yaml: evaluate.bootstrap_unit: Input should be 'well' or 'plate' (got 'image')"


def test_more_processes_than_cores_or_gpus_is_refused_unless_forced():
    from bps.core.params import cuda_gpus
    from bps.core.workers import usable_cores

    too_many = max(usable_cores(), cuda_gpus()) + 1
    message = _error({"train": {"processes": too_many}})
    assert "\n" not in message
    assert message.startswith(f"params.yaml: train.processes: {too_many} is more than this machine has")
    assert "train.force_processes: true" in message
    assert parse_params({"train": {"processes": too_many, "force_processes": True}}).train.processes == too_many
    assert parse_params({"train": {"processes": usable_cores()}}).train.processes == usable_cores()


def test_an_mlp_too_large_for_memory_is_refused_naming_the_key():
    message = _error({"baseline": {"hidden_layers": [100000, 100000]}})
    assert message == ("params.yaml: baseline.hidden_layers: [100000, 100000] on 1600 inputs (1 channels × "
                       "preprocess.image_size 40²) is 10,160,200,000 parameters; at most 50,000,000")
    layout = {"data": {"source": "layout"}, "task": {"target": "labels"}, "split": {"group_by": "none"},
              "preprocess": {"image_size": 256, "scale": "fit"},
              "baseline": {"hidden_layers": [100]}}  # 4 channels × 256² × 100 ≈ 26 M
    assert parse_params(layout).baseline.hidden_layers == [100]
    message = _error(layout | {"baseline": {"hidden_layers": [200]}})
    assert message.startswith("params.yaml: baseline.hidden_layers: [200] on 262144 inputs (4 channels × ")


def test_one_seed_seeds_the_study_and_train_seed_the_training_alone():
    study = parse_params({"seed": 3})
    assert (study.data.sample_seed, study.data.synthetic.seed, study.split.seed, study.evaluate.seed) == (3, 3, 3, 3)
    assert (study.train.seed, study.baseline.seed, study.appearance.seed) == (3, 3, 3)
    sweep = parse_params({"seed": 3, "train": {"seed": 7}})
    assert (sweep.split.seed, sweep.data.synthetic.seed, sweep.evaluate.seed) == (3, 3, 3)
    assert (sweep.train.seed, sweep.baseline.seed, sweep.appearance.seed) == (7, 7, 7)
    assert parse_params({"seed": 3, "train": {"seed": None}}) == study


@pytest.mark.parametrize("key", ["data.sample_seed", "data.synthetic.seed", "split.seed", "evaluate.seed",
                                 "baseline.seed", "appearance.seed"])
def test_a_derived_seed_set_by_hand_is_one_line_naming_the_scheme(key):
    assert _error(with_key({}, tuple(key.split(".")), 1)) == (
        f"params.yaml: {key}: one seed scheme: set the top-level `seed` (the whole study), "
        "or train.seed (every model's training alone)")


def test_preprocess_size_is_renamed():
    assert _error({"preprocess": {"size": 32}}) == "params.yaml: preprocess.size: renamed to preprocess.image_size"
    assert parse_params({"preprocess": {"image_size": 32}}).preprocess.image_size == 32


def test_blur_px_is_null_or_a_sigma_from_0_to_4():
    assert Params().train.blur_px == 0.3  # 1.1 native px at 40 px with window
    assert parse_params({"train": {"blur_px": None}}).train.blur_px is None  # 2 × intensity_augment
    assert _error({"train": {"blur_px": -0.1}}).startswith("params.yaml: train.blur_px: Input should be greater")


def test_intensity_augment_is_a_strength_from_0_to_1():
    assert Params().train.intensity_augment == 0.3  # on by default: chosen under plate drift
    assert parse_params({"train": {"intensity_augment": 0.0}}).train.intensity_augment == 0.0
    message = _error({"train": {"intensity_augment": 1.5}})
    assert message == "params.yaml: train.intensity_augment: Input should be less than or equal to 1 (got 1.5)"
    assert _error({"train": {"intensity_augmnet": 0.3}}).startswith("params.yaml: train.intensity_augmnet: unknown key")


def test_the_plate_adversary_is_off_by_default_and_a_weight_from_0_to_10():
    assert Params().train.adversary == 0.0
    assert parse_params({"train": {"adversary": 1.0}}).train.adversary == 1.0
    assert _error({"train": {"adversary": -0.5}}) == (
        "params.yaml: train.adversary: Input should be greater than or equal to 0 (got -0.5)")


def test_texture_augment_is_off_by_default_and_a_strength_from_0_to_1():
    assert Params().train.texture_augment == 0.0
    assert parse_params({"train": {"texture_augment": 0.3}}).train.texture_augment == 0.3
    assert _error({"train": {"texture_augment": -0.1}}) == (
        "params.yaml: train.texture_augment: Input should be greater than or equal to 0 (got -0.1)"
    )


def test_the_foci_channel_the_nucleus_box_and_the_window_are_for_bps_nuclei_only():
    message = _error({"preprocess": {"foci_channel": True}, "baseline": {"hidden_layers": [100000, 100000]}})
    assert "on 3200 inputs (2 channels × preprocess.image_size 40²)" in message
    layout = {"data": {"source": "layout"}, "task": {"target": "labels"}, "split": {"group_by": "none"}}
    assert _error(layout | {"preprocess": {"foci_channel": True}}) == (
        "params.yaml: preprocess.foci_channel: true is for BPS nuclei (one TIFF each); data.source layout has its own "
        "channels")
    assert _error(layout | {"preprocess": {"scale": "nucleus"}}) == (
        "params.yaml: preprocess.scale: nucleus is for BPS nuclei (one TIFF each); data.source layout's channels "
        "would each find their own box")
    assert _error(layout) == (  # the default window would keep a whole image's centre only
        "params.yaml: preprocess.scale: window is for BPS nuclei (crops cut around one nucleus); data.source "
        "layout's whole images want preprocess.scale: fit")
    assert parse_params(layout | {"preprocess": {"scale": "fit"}}).preprocess.scale == "fit"


def test_leaving_shams_out_of_training_or_at_even_odds_is_for_the_particle_target_only():
    for shams in ("exclude", "uniform"):
        assert parse_params({"train": {"shams": shams}}).train.shams == shams
        assert _error({"train": {"shams": shams}, "task": {"target": "particle_dose"}}) == (
            f"params.yaml: train.shams: {shams} is for task.target particle; particle_dose learns from every image")
    assert _error({"train": {"shams": "none"}}) == (
        "params.yaml: train.shams: Input should be 'include', 'exclude' or 'uniform' (got 'none')")


def test_validation_by_plate_is_for_leave_hour_out_and_the_particle_target_only():
    plate = {"split": {"protocol": "leave_hour_out", "val_unit": "plate"}}
    assert parse_params(plate).split.val_unit == "plate"
    assert _error({"split": {"val_unit": "plate"}}) == (
        "params.yaml: split.val_unit: plate is for split.protocol leave_hour_out and task.target particle "
        "(got grouped and particle): a held-out plate is a held-out condition")
    assert "got leave_hour_out and condition" in _error(plate | {"task": {"target": "condition"}})
    assert _error({"split": {"val_unit": "well"}}).startswith("params.yaml: split.val_unit: Input should be 'group' or")


def test_one_training_only_head_at_a_time():
    message = _error({"train": {"adversary": 1.0, "foci_auxiliary": 1.0}})
    assert "train.adversary and train.foci_auxiliary: one training-only head at a time" in message
    assert parse_params({"train": {"foci_auxiliary": 1.0}}).train.foci_auxiliary == 1.0
