"""data.source layout: params, templates, fixtures, download (folder and S3), grouped split, preprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from s3_server import s3_client
from tiff_bombs import header_only_png

from bps.core.params import (
    DataParams,
    LayoutParams,
    ParamsError,
    PreprocessParams,
    S3Params,
    load_params,
    merged,
    parse_params,
)
from bps.core.stage import stage_name
from bps.data.images import ImageError, ImageTooLargeError
from bps.data.layouts import split as layout_split
from bps.data.layouts.channels import NotAPngError, prepare_samples, read_channel
from bps.data.layouts.meta import (
    IS_CONTROL,
    LABEL,
    SAMPLE,
    LayoutError,
    class_names,
    files_of,
    normalise,
    read_metadata,
    resolve,
    with_controls,
)
from bps.data.layouts.source import download_layout, load_layout
from bps.data.layouts.toy import HPA_CLASSES, RXRX1_COLUMNS, write_hpa, write_png, write_rxrx1
from bps.training.batches import RandomAugment

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("hpa", "rxrx1")
OWN = {name: yaml.safe_load((ROOT / "datasets" / name / "params.yaml").read_text()) for name in DATASETS}
# What a stage in datasets/<name>/ reads: the project's params.yaml with the folder's laid over it.
PRESETS = {name: merged(yaml.safe_load((ROOT / "params.yaml").read_text()), OWN[name]) for name in DATASETS}


def layout_of(preset: str, root: Path | str, **changes) -> LayoutParams:
    return LayoutParams(**{**PRESETS[preset]["data"]["layout"], "root": str(root), **changes})


def data_of(preset: str, root: Path | str, **changes) -> DataParams:
    return DataParams(source="layout", layout=layout_of(preset, root, **changes))


@pytest.fixture(scope="module")
def hpa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hpa")
    write_hpa(root)
    return root


@pytest.fixture(scope="module")
def rxrx1(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rxrx1")
    write_rxrx1(root)
    return root


# ------------------------------------------------------------------------------------------ params


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


def test_a_dataset_folder_holds_only_what_differs_and_validates_over_the_project_params():
    for name in DATASETS:
        assert {block: sorted(keys) for block, keys in OWN[name].items()} == {
            "data": ["layout", "source"], "split": ["group_by"], "preprocess": ["normalize"], "task": ["target"]}
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
    message = _error({"data": rxrx1, "split": {"group_by": "well"}})
    assert "split.group_by 'well' is not one of ['experiment', 'plate', 'none']" in message
    assert "split.protocol leave_hour_out needs BPS metadata" in _error(
        {"data": rxrx1, "split": {"group_by": "plate", "protocol": "leave_hour_out"}}
    )
    assert "split.group_by 'plate' is not one of ['well', 'field', 'none']" in _error({"split": {"group_by": "plate"}})
    labels = {"target": "labels"}
    assert parse_params({"data": rxrx1, "split": {"group_by": "plate"}, "task": labels}).split.group_by == "plate"


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


# ------------------------------------------------------------------------------ metadata, templates


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


def test_channels_of_different_sizes_in_one_sample_are_refused_naming_the_files(tmp_path):
    square, wide = tmp_path / "dna.png", tmp_path / "actin.png"
    write_png(square, np.full((64, 64), 7, np.uint8))
    write_png(wide, np.full((512, 37), 7, np.uint8))
    params = PreprocessParams(size=16, workers=1, on_error="fail")
    with pytest.raises(ImageError, match=rf"^{wide}: channels of one sample differ in size: {square} \(64×64\), "
                                         rf"{wide} \(512×37\)"):
        prepare_samples([(square, wide)], ["s"], 2, 8, params)
    prepared = prepare_samples([(square, square), (square, wide)], ["a", "b"], 2, 8,
                               params.model_copy(update={"on_error": "skip"}))
    assert prepared.kept == [0] and "differ in size" in prepared.failures["b"]


def test_hpa_numeric_classes_sort_as_numbers(hpa):
    layout = layout_of("hpa", hpa)
    table = normalise(read_metadata((hpa / "train.csv").read_bytes(), layout), layout)
    assert class_names(table, layout) == list(HPA_CLASSES)


# ---------------------------------------------------------------------------------------- fixtures


def test_fixture_writers_use_the_real_names_and_columns(hpa, rxrx1):
    train = pd.read_csv(hpa / "train.csv", dtype=str)
    assert list(train.columns) == ["Id", "Target"] and len(train) == 120
    assert train["Id"].str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-11e8-[0-9a-f]{4}-[0-9a-f]{12}").all()
    labels = train["Target"].str.split(" ")
    assert labels.map(len).between(1, 3).all() and set(labels.explode()) == set(HPA_CLASSES)
    files = sorted(path.name for path in (hpa / "train").iterdir())
    assert files[:4] == [f"{train['Id'].min()}_{c}.png" for c in ("blue", "green", "red", "yellow")]
    assert len(files) == 4 * len(train)

    meta = pd.read_csv(rxrx1 / "metadata.csv", dtype=str)
    assert tuple(meta.columns) == RXRX1_COLUMNS and len(meta) == 152
    assert set(meta["well_type"]) == {"treatment", "negative_control", "positive_control"}
    assert meta.groupby(["experiment", "plate"]).ngroups == 4 and set(meta["site"]) == {"1", "2"}
    row = meta.iloc[0]
    for w in range(1, 7):
        path = rxrx1 / "images" / row.experiment / f"Plate{row.plate}" / f"{row.well}_s{row.site}_w{w}.png"
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 64))


def test_fixtures_are_deterministic_and_carry_a_plate_batch_effect(tmp_path, rxrx1):
    write_rxrx1(tmp_path / "again")
    assert (tmp_path / "again" / "metadata.csv").read_bytes() == (rxrx1 / "metadata.csv").read_bytes()
    some = next((rxrx1 / "images").rglob("*_w3.png")).relative_to(rxrx1)
    assert (tmp_path / "again" / some).read_bytes() == (rxrx1 / some).read_bytes()
    meta = pd.read_csv(rxrx1 / "metadata.csv", dtype=str)
    negatives = meta[meta["well_type"] == "negative_control"]

    def brightness(r) -> float:
        path = rxrx1 / "images" / r.experiment / f"Plate{r.plate}" / f"{r.well}_s{r.site}_w2.png"
        return float(np.asarray(Image.open(path), dtype=float).mean())

    means = {key: np.mean([brightness(r) for r in rows.itertuples()])
             for key, rows in negatives.groupby(["experiment", "plate"])}
    assert max(means.values()) - min(means.values()) > 5  # the same (empty) wells, plate by plate apart


# ---------------------------------------------------------------------------------------- download


def test_download_from_a_folder_copies_every_file_keeping_paths(rxrx1, tmp_path):
    folder = tmp_path / "raw"
    table = download_layout(folder, data_of("rxrx1", rxrx1))
    assert len(files_of(table)) == 152 * 6
    for name in files_of(table)[:12]:
        assert (folder / name).read_bytes() == (rxrx1 / name).read_bytes()
    assert (folder / "metadata.csv").read_bytes() == (rxrx1 / "metadata.csv").read_bytes()
    assert download_layout(folder, data_of("rxrx1", rxrx1)).equals(table)  # a re-run copies nothing new


def test_a_missing_channel_file_is_named_before_anything_is_copied(hpa, tmp_path):
    root = tmp_path / "hpa"
    write_hpa(root, images=6)
    victim = sorted((root / "train").glob("*_yellow.png"))[2]
    victim.unlink()
    with pytest.raises(LayoutError, match=rf"{victim} \(sample '{victim.name[:-11]}', channel 'yellow'\) does not "
                                          r"exist; 1 of 24 files are missing"):
        download_layout(tmp_path / "raw", data_of("hpa", root))
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_channel_file_that_links_outside_the_root_is_refused_before_anything_is_copied(tmp_path, link):
    root = tmp_path / "hpa"
    write_hpa(root, images=6)
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for data/raw")
    victim = sorted((root / "train").glob("*_yellow.png"))[2]
    if link == "file":
        victim.unlink()
        victim.symlink_to(secret)
        words = rf"^data.layout: {victim} is a symbolic link \(to {secret}\)"
    else:  # a real folder beside the root, reached through a linked folder inside it
        for path in (root / "train").iterdir():
            (secret.parent / path.name).write_bytes(path.read_bytes())
        (root / "train").rename(tmp_path / "moved")
        (root / "train").symlink_to(secret.parent)
        words = rf"^data.layout: {root}/train/(\S+) resolves to {secret.parent}/\1, outside the root {root};"
    with pytest.raises(LayoutError, match=words):
        download_layout(tmp_path / "raw", data_of("hpa", root))
    assert not (tmp_path / "raw").exists()


@pytest.fixture
def rxrx1_bucket(moto_server, aws_env, rxrx1) -> str:
    """The RxRx1 fixture uploaded under s3://<bucket>/rxrx1/; returns the bucket."""
    bucket = f"layouts-{uuid.uuid4().hex[:12]}"
    client = s3_client(moto_server)
    client.create_bucket(Bucket=bucket)
    for path in rxrx1.rglob("*"):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"rxrx1/{path.relative_to(rxrx1).as_posix()}", Body=path.read_bytes())
    return bucket


@pytest.mark.slow
def test_download_from_s3_fetches_every_file_and_resumes(rxrx1_bucket, moto_server, rxrx1, tmp_path):
    data = DataParams(source="layout", layout=layout_of("rxrx1", f"s3://{rxrx1_bucket}/rxrx1"),
                      s3=S3Params(endpoint_url=moto_server, anonymous=False, region="us-east-1", workers=8, retries=1))
    folder = tmp_path / "raw"
    table = download_layout(folder, data)
    names = files_of(table)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == sorted(names)
    assert all((folder / name).read_bytes() == (rxrx1 / name).read_bytes() for name in names[::37])
    (folder / names[5]).unlink()
    download_layout(folder, data)
    assert (folder / names[5]).read_bytes() == (rxrx1 / names[5]).read_bytes()
    s3_client(moto_server).delete_object(Bucket=rxrx1_bucket, Key=f"rxrx1/{names[7]}")
    with pytest.raises(LayoutError, match=rf"s3://{rxrx1_bucket}/rxrx1/{names[7]} \(sample '.+', channel '2'\) "
                                          "does not exist"):
        download_layout(tmp_path / "other", data)


# ------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("group_by", ["experiment", "plate", "well", "none"])
def test_no_group_ever_straddles_two_splits(rxrx1, seed, group_by):
    layout = layout_of("rxrx1", rxrx1, group_columns=["experiment", "plate", "well"])
    table = with_controls(normalise(read_metadata((rxrx1 / "metadata.csv").read_bytes(), layout), layout), "exclude")
    if group_by == "experiment":  # two experiments cannot fill three splits
        with pytest.raises(Exception, match="2 group\\(s\\) by experiment, too few"):
            layout_split.assign_splits(layout_split.layout_groups(table, layout.group_columns, group_by),
                                       group_by, (0.7, 0.15, 0.15), seed)
        return
    groups = layout_split.layout_groups(table, layout.group_columns, group_by)
    split = layout_split.assign_splits(groups, group_by, (0.7, 0.15, 0.15), seed)
    assert set(split) == {"train", "val", "test"}
    assert (split.groupby(groups).nunique() == 1).all()
    if group_by == "plate":  # plate 1 of both experiments are two groups
        assert groups.nunique() == 4
        assert (split.groupby([table["experiment"], table["plate"]]).nunique() == 1).all()


# -------------------------------------------------------------------------------------- preprocess


@pytest.mark.parametrize(("preset", "channels"), [("hpa", 4), ("rxrx1", 6)])
def test_preprocess_gives_n_by_c_arrays_normalised_per_channel(preset, channels, hpa, rxrx1, tmp_path):
    root = {"hpa": hpa, "rxrx1": rxrx1}[preset]
    table = download_layout(tmp_path, data_of(preset, root)).head(10)
    files = [tuple(tmp_path / name for name in row) for row in table.filter(like="file_").itertuples(index=False)]
    params = PreprocessParams(size=32, normalize="percentile", percentiles=(0.5, 99.9), workers=1)
    prepared = prepare_samples(files, table[SAMPLE].tolist(), channels, 8, params)
    assert prepared.images.shape == (10, channels, 32, 32) and prepared.images.dtype == np.uint8
    # The stated method, computed independently: each channel's own 0.5 and 99.9 percentiles of
    # the raw image map to 0 and 1, applied to the area-resized (box filter) channel.
    for row in (0, 9):
        for channel, path in enumerate(files[row]):
            raw = np.asarray(Image.open(path), dtype=np.float32)
            low, high = np.percentile(raw, (0.5, 99.9))
            small = np.asarray(Image.fromarray(raw, mode="F").resize((32, 32), Image.Resampling.BOX))
            expected = np.round(np.clip((small - low) / (high - low), 0, 1) * 255).astype(np.uint8)
            assert np.array_equal(prepared.images[row, channel], expected), (path, channel)
    shared = np.percentile(np.asarray(Image.open(files[0][0]), dtype=np.float32), (0.5, 99.9))
    own = np.percentile(np.asarray(Image.open(files[0][-1]), dtype=np.float32), (0.5, 99.9))
    assert not np.allclose(shared, own)  # channels really do get windows of their own


def test_a_corrupt_or_wrong_depth_channel_names_the_file(tmp_path):
    good, corrupt, deep = tmp_path / "good.png", tmp_path / "corrupt.png", tmp_path / "deep.png"
    write_png(good, np.full((16, 16), 7, np.uint8))
    corrupt.write_bytes(good.read_bytes()[:40])
    Image.fromarray(np.full((16, 16), 700, np.uint16)).save(deep)
    assert read_channel(good, 8).dtype == np.uint8
    with pytest.raises(ImageError, match=f"{corrupt}: cannot read the PNG"):
        read_channel(corrupt, 8)
    with pytest.raises(ImageError, match=f"{deep}: uint16 pixels, but data.layout.bit_depth is 8"):
        read_channel(deep, 8)
    assert read_channel(deep, 16).max() == 700
    params = PreprocessParams(size=16, normalize="percentile", workers=1, on_error="skip")
    prepared = prepare_samples([(good, good), (good, corrupt)], ["a", "b"], 2, 8, params)
    assert prepared.kept == [0] and list(prepared.failures) == ["b"] and str(corrupt) in prepared.failures["b"]
    with pytest.raises(ImageError, match=f"{corrupt}: cannot read the PNG"):
        prepare_samples([(good, corrupt)], ["b"], 2, 8, params.model_copy(update={"on_error": "fail"}))


def png_cut_short(path: Path) -> Path:
    """A 64×64 PNG missing its last 20 bytes (IEND and the end of the pixel stream): Pillow alone decodes it."""
    write_png(path, np.random.default_rng(0).integers(1, 255, (64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    return path


def test_a_png_bomb_a_png_cut_short_and_a_disguised_jpeg_are_refused_naming_the_file(tmp_path):
    good, bomb, cut, jpeg = (tmp_path / f"{name}.png" for name in ("good", "bomb", "cut", "jpeg"))
    write_png(good, np.full((16, 16), 7, np.uint8))
    bomb.write_bytes(header_only_png(20000, 20000))
    assert len(bomb.read_bytes()) < 100
    png_cut_short(cut)
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(ImageTooLargeError, match=f"^{bomb}: image is 20000×20000 px; at most 4096 px a side$"):
        read_channel(bomb, 8)
    with pytest.raises(ImageTooLargeError, match=f"^{bomb}: .*decompression bomb"):  # Pillow's own check, converted
        read_channel(bomb, 8, max_side=10**6)
    with pytest.raises(ImageError, match=f"^{cut}: cannot read the PNG"):
        read_channel(cut, 8)
    with pytest.raises(NotAPngError, match=f"^{jpeg}: not a PNG file"):
        read_channel(jpeg, 8)
    params = PreprocessParams(size=16, workers=1, on_error="skip")
    prepared = prepare_samples([(good,), (bomb,), (cut,), (jpeg,)], list("abcd"), 1, 8, params)
    assert prepared.kept == [0] and list(prepared.failures) == list("bcd")
    assert all(str(path) in prepared.failures[name] for name, path in zip("bcd", (bomb, cut, jpeg)))


def test_sixteen_bit_tiff_channels(tmp_path):
    import tifffile

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"c{k}.tif")
        tifffile.imwrite(paths[-1], np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * (k + 1))
    prepared = prepare_samples([tuple(paths)], ["s"], 3, 16, PreprocessParams(size=20, normalize="minmax", workers=1))
    assert prepared.images.shape == (1, 3, 20, 20)
    assert (prepared.images[0, :, 0, 0] <= 3).all() and (prepared.images[0, :, -1, -1] >= 250).all()


@pytest.mark.parametrize("channels", [4, 6])
def test_augmentation_moves_every_channel_together(channels):
    base = torch.rand(1, 1, 16, 16).repeat(8, channels, 1, 1) * torch.arange(1, channels + 1).view(1, -1, 1, 1)
    out = RandomAugment(torch.Generator().manual_seed(0), pad=3)(base)
    assert out.shape == (8, channels, 16, 16)
    ratio = out / out[:, :1].clamp_min(1e-6)
    assert torch.allclose(ratio[out[:, :1].expand_as(out) > 1e-3],
                          torch.arange(1, channels + 1).float().view(1, -1, 1, 1).expand_as(out)[
                              out[:, :1].expand_as(out) > 1e-3], rtol=1e-4)
    assert not torch.equal(out, base)  # something moved


def test_png_bytes_round_trip(tmp_path):
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    write_png(tmp_path / "x.png", image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO((tmp_path / "x.png").read_bytes()))), image)


# ------------------------------------------------------------------------------ dvc, end to end


LAYOUT_KEYS = {
    "hpa": ["sample_f1", "macro_f1", "micro_f1", "hamming_loss", "jaccard", "subset_accuracy", "micro_ap", "macro_ap"],
    "rxrx1": ["accuracy", "macro_f1", "top_5_accuracy"],
}


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "shape"), [("hpa", (84, 4, 32, 32)), ("rxrx1", (48, 6, 32, 32))])
def test_dvc_repro_runs_a_dataset_pipeline_beside_the_bps_one(tmp_path, dataset, shape):
    """The documented commands in a fresh git repo: the toy copy, then `dvc repro
    datasets/dvc.yaml:evaluate@<name>`: its stages run in its folder and nowhere else, the project's
    params.yaml is untouched, and evaluate scores both image models with intervals over the groups."""
    from test_pipeline_dvc import dvc, isolated_env, make_project, run, stages_run

    env = isolated_env(tmp_path / "sandbox")
    root = make_project(tmp_path / "project", env)
    folder = root / "datasets" / dataset
    own_params = (root / "params.yaml").read_text()
    run([sys.executable, "-m", "bps", "toy-data", dataset, f"datasets/{dataset}/fixture"], root, env)
    result = dvc(root, env, "repro", f"datasets/dvc.yaml:evaluate@{dataset}")
    pipeline = yaml.safe_load((ROOT / "datasets" / "dvc.yaml").read_text())["stages"]
    assert sorted(stages_run(result)) == sorted(f"datasets/dvc.yaml:{stage}@{dataset}" for stage in pipeline)
    assert (root / "params.yaml").read_text() == own_params
    assert not (root / "data" / "raw").exists() and not (root / "models" / "lenet").exists()
    assert not list(root.rglob("NOT_APPLICABLE.md"))
    images = np.load(folder / "data" / "prepared" / "train_images.npy", mmap_mode="r")
    assert images.shape == shape
    classes = json.loads((folder / "data" / "split" / "summary.json").read_text())["classes"]
    results = json.loads((folder / "metrics" / "evaluate.json").read_text())
    assert sorted(results) == ["baseline", "lenet"]
    assert sorted(path.name for path in (folder / "models").iterdir() if path.is_dir()) == ["baseline", "lenet"]
    for name, scores in results.items():
        card = json.loads((folder / "models" / name / "model.json").read_text())
        assert card["in_channels"] == shape[1] and card["classes"] == classes
        assert card["multilabel"] is (dataset == "hpa")
        assert (card["thresholds"] is not None) is (dataset == "hpa")
        assert scores["protocol"] == f"grouped by {OWN[dataset]['split']['group_by']}"
        for key in LAYOUT_KEYS[dataset]:
            assert scores[key] is not None, (name, key)
        assert "macro_f1_ci95_low" in scores and scores["macro_f1_ci95_low"] <= scores["macro_f1"]
        per_class = pd.read_csv(folder / "metrics" / "per_class" / f"{name}.csv", dtype={"class": str})
        assert per_class["class"].tolist() == classes
    comparison = (folder / "metrics" / "comparison.md").read_text()
    assert "datasets/dvc.yaml" in comparison and "bootstrap replicates" in comparison
    assert dvc(root, env, "status", f"datasets/dvc.yaml:evaluate@{dataset}").stdout.strip().endswith("up to date.")
