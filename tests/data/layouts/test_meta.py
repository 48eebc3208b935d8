"""A layout's params and metadata: keys checked against the metadata, templates, labels and classes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from bps.core.params import (
    ParamsError,
    load_params,
    parse_params,
)
from bps.core.stage import stage_name
from bps.data.layouts.meta import (
    IS_CONTROL,
    LABEL,
    SAMPLE,
    LayoutError,
    class_names,
    normalise,
    read_metadata,
    resolve,
    with_controls,
)
from bps.data.layouts.source import load_layout
from bps.data.layouts.toy import HPA_CLASSES
from tests.support.layouts import DATASETS, OWN, PRESETS, ROOT, data_of, layout_of


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


def test_a_dataset_folder_holds_only_what_differs_and_validates_over_the_project_params():
    for name in DATASETS:
        assert {block: sorted(keys) for block, keys in OWN[name].items()} == {
            "data": ["layout", "source"], "split": ["group_by"], "preprocess": ["normalize", "scale"],
            "task": ["target"]}
        params = parse_params(PRESETS[name])
        assert params.data.source == "layout" and params.task.target == "labels"
        assert params.train == parse_params(yaml.safe_load((ROOT / "params.yaml").read_text())).train


def test_a_pipeline_folder_inherits_the_project_params(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text("train: {epochs: 3, lr: 0.01}\ndata: {hours: [4, 24]}\n")
    folder = tmp_path / "datasets" / "hpa"
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(OWN["hpa"]) + "train: {epochs: 5}\n")
    monkeypatch.chdir(folder)
    params = load_params()
    assert (params.train.epochs, params.train.lr) == (5, 0.01)  # the folder's key wins, the rest is inherited
    assert params.data.hours == [4, 24] and params.data.source == "layout"
    monkeypatch.chdir(tmp_path)
    assert load_params().data.source == "synthetic"  # the project root reads its own file only


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({"file_template": "train/{Id}.png"}, "data.layout: file_template 'train/{Id}.png' must contain {channel}"),
        ({"file_template": "{Id:08d}_{channel}.png"}, "placeholder {Id:08d} must be a plain column name"),
        ({"file_template": "{Id_{channel}.png"}, "is malformed"),
        ({"channels": ["red", "red"]}, "channels lists a value twice"),
        ({"control_column": "well_type"}, "control_column and control_values go together"),
        ({"metadata": "../train.csv"}, "metadata '../train.csv' must be a path inside root"),
        ({"metadata": "meta.csv"}, "metadata may not be 'meta.csv'"),
        ({"bit_depth": 12}, "data.layout.bit_depth: Input should be 8 or 16"),
        ({"label_separator": ","}, "data.layout.label_separator: Input should be ' ' or '|'"),
        ({"controls": "keep"}, "data.layout.controls: Input should be 'exclude' or 'class'"),
        ({"colour": "red"}, "data.layout.colour: unknown key (allowed: root, metadata, id_columns"),
    ],
)
def test_bad_layout_params_name_the_key(layout, expected):
    assert expected in _error({"data": {"source": "layout", "layout": layout}})


def test_group_by_must_be_a_layout_group_column_and_the_protocol_grouped():
    rxrx1 = {"source": "layout", "layout": {"group_columns": ["experiment", "plate"]}}
    fit = {"scale": "fit"}
    message = _error({"data": rxrx1, "split": {"group_by": "well"}, "preprocess": fit})
    assert "split.group_by 'well' is not one of ['experiment', 'plate', 'none']" in message
    assert "split.protocol leave_hour_out needs BPS metadata" in _error(
        {"data": rxrx1, "split": {"group_by": "plate", "protocol": "leave_hour_out"}, "preprocess": fit}
    )
    assert "split.group_by 'plate' is not one of ['well', 'field', 'none']" in _error({"split": {"group_by": "plate"}})
    labels = {"target": "labels"}
    assert parse_params({"data": rxrx1, "split": {"group_by": "plate"}, "task": labels,
                         "preprocess": fit}).split.group_by == "plate"


def test_a_placeholder_that_is_not_a_metadata_column_fails_naming_it(hpa):
    data = data_of("hpa", hpa, file_template="train/{Id}_{colour}_{channel}.png")
    with pytest.raises(LayoutError, match=r"data.layout.file_template placeholder \{colour\}: 'colour' is not a column "
                                          r"of train.csv \(its columns: Id, Target\)"):
        load_layout(data)
    with pytest.raises(LayoutError, match="data.layout.group_columns: 'plate' is not a column"):
        load_layout(data_of("hpa", hpa, group_columns=["plate"]))


@pytest.mark.slow
def test_check_params_stops_on_a_missing_column(hpa, tmp_path):
    params = {**PRESETS["hpa"], "data": {**PRESETS["hpa"]["data"], "layout": {
        **PRESETS["hpa"]["data"]["layout"], "root": str(hpa), "label_column": "Label"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    check = subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 1
    assert check.stderr.startswith("error: data.layout.label_column: 'Label' is not a column of train.csv")


def test_task_target_labels_goes_with_layouts_only():
    assert "task.target 'particle' is not allowed with data.source layout (allowed: labels)" in _error(
        {**PRESETS["hpa"], "task": {"target": "particle"}})
    assert ("task.target 'labels' is not allowed with data.source synthetic (allowed: particle, particle_dose, "
            "condition, particle+dose)") in _error({"task": {"target": "labels"}})
    assert "task.threshold: Input should be 'global' or 'per_label'" in _error(
        {**PRESETS["hpa"], "task": {"target": "labels", "threshold": "best"}})


def test_stage_names_follow_dvc_yaml():
    assert stage_name(["/p/stages/train_lenet.py", "--control"]) == "train-lenet-control"
    assert stage_name(["/p/stages/evaluate.py"]) == "evaluate"






def test_templates_resolve_metadata_columns_and_refuse_escapes():
    row = {"experiment": "HEPG2-01", "plate": "1", "well": "B02", "site": "2"}
    template = PRESETS["rxrx1"]["data"]["layout"]["file_template"]
    assert resolve(template, row, "3") == "images/HEPG2-01/Plate1/B02_s2_w3.png"
    with pytest.raises(LayoutError, match="not a path below data.layout.root"):
        resolve("{well}/{channel}.png", {"well": "../.."}, "1")
    with pytest.raises(LayoutError, match="not a path below data.layout.root"):
        resolve("{well}_{channel}.png", {"well": "/etc/x"}, "1")


def test_normalised_table_columns_controls_and_classes(rxrx1):
    layout = layout_of("rxrx1", rxrx1)
    table = normalise(read_metadata((rxrx1 / "metadata.csv").read_bytes(), layout), layout)
    assert list(table.columns) == [SAMPLE, "experiment", "plate", "well", LABEL, IS_CONTROL,
                                   *(f"file_{c}" for c in "123456")]
    assert table[SAMPLE].iloc[0].endswith("_1") and table[SAMPLE].is_unique
    assert set(table.loc[table[IS_CONTROL], LABEL]) == {"EMPTY", "s501308", "s35651"}
    assert class_names(table, layout) == sorted(["s21721", "s20894", "s18582", "s24929", "s7128", "s3447"])
    kept = layout.model_copy(update={"controls": "class"})
    assert class_names(table, kept)[-1] == "control"
    assert set(with_controls(table, "class").loc[table[IS_CONTROL], LABEL]) == {"control"}
    assert not with_controls(table, "exclude")[IS_CONTROL].any()


def test_duplicate_samples_and_unknown_classes_are_named(rxrx1, hpa):
    layout = layout_of("rxrx1", rxrx1, id_columns=["well_id"])
    with pytest.raises(LayoutError, match=r"sample 'HEPG2-01_1_\w+' appears twice; data.layout.id_columns"):
        normalise(read_metadata((rxrx1 / "metadata.csv").read_bytes(), layout), layout)
    layout = layout_of("hpa", hpa, classes=["0", "2"])
    with pytest.raises(LayoutError, match=r"has label '(5|7|23|25)', which is not in data.layout.classes \(0, 2\)"):
        normalise(read_metadata((hpa / "train.csv").read_bytes(), layout), layout)


def test_hpa_numeric_classes_sort_as_numbers(hpa):
    layout = layout_of("hpa", hpa)
    table = normalise(read_metadata((hpa / "train.csv").read_bytes(), layout), layout)
    assert class_names(table, layout) == list(HPA_CLASSES)


def test_labels_joined_by_the_other_separator_are_refused(hpa):
    layout = layout_of("hpa", hpa)
    metadata = read_metadata((hpa / "train.csv").read_bytes(), layout)
    piped = metadata.assign(Target=metadata["Target"].str.replace(" ", "|"))
    first = piped.loc[piped["Target"].str.contains("|", regex=False)].iloc[0]
    with pytest.raises(LayoutError, match=rf"^train.csv: sample '{first['Id']}' has label '{first['Target']}', which "
                                          r"contains '\|' but data.layout.label_separator is ' '; set label_separator"):
        normalise(piped, layout)
    piped_layout = layout_of("hpa", hpa, label_separator="|")
    assert class_names(normalise(piped, piped_layout), piped_layout) == list(HPA_CLASSES)
