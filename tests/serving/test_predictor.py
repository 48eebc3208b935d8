"""bps.serving.predictor and `python -m bps predict`: new TIFFs through a saved model's own preprocessing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps.classical.features import prepare_with_features
from bps.core.errors import PipelineError
from bps.core.params import BaselineParams, FeatureParams, PreprocessParams
from bps.data.arrays import prepare_images
from bps.data.images import ImageError, prepare
from bps.models import pixel_mlp, sklearn_io
from bps.models.card import ModelCard, write_card
from bps.models.inference import predict_proba
from bps.models.networks import LeNet5, load_checkpoint, save_checkpoint
from bps.serving.commands import predict as predict_cli
from bps.serving.predictor import Predictor, find_tiffs
from bps.sim.render import DEFLATE, plan_dataset, simulate_image
from tests.support.model_cards import finished_card

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["Fe", "X-ray"]
# What the model was trained with (32 px): not the default size, not params.yaml.
STORED = PreprocessParams(image_size=32, normalize="percentile")


def _write_tiff(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, compression=DEFLATE)
    return path


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory) -> list[Path]:
    """Five simulated nuclei (both particles, sham included) as Deflate TIFFs, in name order."""
    folder = tmp_path_factory.mktemp("images")
    table = plan_dataset(1, [4], seed=3).iloc[:5]
    return [
        _write_tiff(folder / name, simulate_image(name, particle, dose, hours, seed=3))
        for name, dose, particle, hours in table.itertuples(index=False)
    ]


@pytest.fixture(scope="module")
def lenet_folder(tmp_path_factory) -> Path:
    """A saved LeNet-5 checkpoint folder (untrained: only the plumbing is under test)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "lenet"
    config = finished_card("lenet", 1, STORED.image_size, CLASSES, preprocess=STORED)
    save_checkpoint(folder, LeNet5(1, len(CLASSES), STORED.image_size), config)
    return folder


def _expected_lenet(folder: Path, paths: list[Path]) -> np.ndarray:
    """What the pipeline's own preprocess + evaluate steps give for these files."""
    model, config = load_checkpoint(folder)
    images = prepare_images(paths, config.preprocess).images
    return predict_proba(model, images, torch.device("cpu"))


def _check_table(table: pd.DataFrame, paths: list[Path], proba: np.ndarray) -> None:
    assert list(table.columns) == ["file", "predicted", *[f"p_{c}" for c in CLASSES]]
    assert table["file"].tolist() == [str(p) for p in paths]
    got = table[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, proba, rtol=1e-5, atol=1e-6)
    assert table["predicted"].tolist() == [CLASSES[i] for i in proba.argmax(axis=1)]


# --- Predictor -------------------------------------------------------------------------------


def test_predictor_matches_the_pipelines_preprocess_and_predict(lenet_folder, tiffs):
    predictor = Predictor(lenet_folder)
    table = predictor.predict_files(tiffs)
    assert len(table) == len(tiffs)
    expected = _expected_lenet(lenet_folder, tiffs)
    assert expected.shape == (len(tiffs), 2)
    _check_table(table, tiffs, expected)
    assert table[["p_Fe", "p_X-ray"]].nunique().min() > 1  # distinct images, distinct outputs


def test_a_model_trained_with_the_foci_channel_gets_it_from_its_card(tiffs, tmp_path):
    stored = STORED.model_copy(update={"foci_channel": True})
    torch.manual_seed(0)
    folder = tmp_path / "lenet"
    save_checkpoint(folder, LeNet5(2, len(CLASSES), stored.image_size),
                    finished_card("lenet", 2, stored.image_size, CLASSES, preprocess=stored))
    prepared, _ = prepare_with_features(tiffs, stored, FeatureParams())  # what the preprocess stage writes
    assert prepared.images.shape[1] == 2
    expected = predict_proba(load_checkpoint(folder)[0], prepared.images, torch.device("cpu"))
    _check_table(Predictor(folder).predict_files(tiffs), tiffs, expected)


def test_stored_preprocessing_wins_over_params_yaml(lenet_folder, tiffs, tmp_path, monkeypatch):
    # A project whose params.yaml asks for something else entirely.
    (tmp_path / "params.yaml").write_text("preprocess:\n  image_size: 48\n  normalize: fixed\n")
    monkeypatch.chdir(tmp_path)
    predictor = Predictor(lenet_folder)
    assert predictor.preprocess == STORED
    prepared = predictor.prepare(tiffs[0])
    assert prepared.shape == (1, 32, 32)
    assert prepared.dtype == np.uint8
    np.testing.assert_array_equal(prepared[0], prepare(tiffs[0], STORED))
    # The stored normalisation, not the project's fixed window: the check can tell them apart.
    assert not np.array_equal(prepared[0], prepare(tiffs[0], PreprocessParams(image_size=32, normalize="fixed")))
    # An open binary file works as well as a path.
    with open(tiffs[0], "rb") as stream:
        np.testing.assert_array_equal(predictor.prepare(stream, "upload.tif"), prepared)


def test_baseline_folder_predicts(tmp_path, tiffs):
    rng = np.random.default_rng(0)
    flat = pixel_mlp.flatten(rng.integers(0, 256, (40, 1, STORED.image_size, STORED.image_size), dtype=np.uint8))
    labels = rng.integers(0, 2, 40)
    scaler = StandardScaler().fit(flat)
    mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[8], lr=1e-2, batch_size=16))
    pixel_mlp.fit_epoch(mlp, scaler.transform(flat), labels, np.arange(2))
    pipeline = make_pipeline(scaler, mlp)
    folder = tmp_path / "baseline"
    info = finished_card("mlp", 1, STORED.image_size, CLASSES, preprocess=STORED)
    sklearn_io.save(folder, pipeline, info)

    table = Predictor(folder).predict_files(tiffs)

    images = prepare_images(tiffs, STORED).images
    _check_table(table, tiffs, pipeline.predict_proba(pixel_mlp.flatten(images)))


def test_corrupt_tiff_is_an_image_error_naming_the_file(lenet_folder, tiffs, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not really a TIFF")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(tiffs[0].read_bytes()[:200])
    predictor = Predictor(lenet_folder)
    for broken in (bad, truncated):
        with pytest.raises(ImageError) as caught:
            predictor.predict_files([tiffs[0], broken])
        assert str(broken) in str(caught.value)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(PipelineError, match="not a model folder"):
        Predictor(tmp_path)


# --- find_tiffs ------------------------------------------------------------------------------


def test_find_tiffs_in_folders_and_files(tmp_path):
    names = ["b/z.tif", "b/a/two.TIFF", "b/a/one.tif", "b/m.tiff", "c/only.tif"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "b/notes.txt").write_text("not an image")
    (tmp_path / "b/a/scan.png").write_bytes(b"")
    loose = tmp_path / "loose.tif"
    loose.write_bytes(b"")

    found = find_tiffs([tmp_path / "b"])
    assert found == [tmp_path / n for n in ("b/a/one.tif", "b/a/two.TIFF", "b/m.tiff", "b/z.tif")]
    # Files as given, folders searched, in the order the sources came.
    assert find_tiffs([str(loose), tmp_path / "c"]) == [loose, tmp_path / "c/only.tif"]
    assert find_tiffs([tmp_path / "c", loose]) == [tmp_path / "c/only.tif", loose]


def test_find_tiffs_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(PipelineError, match="no such file or folder") as caught:
        find_tiffs([tmp_path, missing])
    assert str(missing) in str(caught.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("")
    with pytest.raises(PipelineError, match="no TIFF files"):
        find_tiffs([tmp_path / "empty"])


# --- the CLI ---------------------------------------------------------------------------------
# The CSV run is a real `python -m bps predict` process; the others call the same main()
# in-process, since every fresh process spends seconds importing torch and scikit-learn.


@pytest.mark.slow  # a real process: seconds of imports
def test_cli_writes_csv(lenet_folder, tiffs, tmp_path):
    out = tmp_path / "out" / "x.csv"
    command = [sys.executable, "-m", "bps", "predict", str(lenet_folder), str(tiffs[0].parent), "--out", str(out)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    _check_table(table, tiffs, _expected_lenet(lenet_folder, tiffs))
    assert f"{len(tiffs)} images" in result.stdout


def test_cli_writes_json_records(lenet_folder, tiffs, tmp_path, capsys):
    out = tmp_path / "x.json"
    predict_cli([str(lenet_folder), *map(str, tiffs[3:]), str(tiffs[0]), "--out", str(out)])
    assert f"{len(tiffs[3:]) + 1} images" in capsys.readouterr().out
    records = json.loads(out.read_text())
    assert isinstance(records, list)
    assert all(set(r) == {"file", "predicted", "p_Fe", "p_X-ray"} for r in records)
    paths = [*tiffs[3:], tiffs[0]]  # files keep the order they were given in
    _check_table(pd.DataFrame(records), paths, _expected_lenet(lenet_folder, paths))


def test_cli_on_a_folder_that_is_not_a_model(tiffs, tmp_path, capsys):
    out = tmp_path / "never.csv"
    with pytest.raises(SystemExit) as caught:
        predict_cli([str(tmp_path), str(tiffs[0]), "--out", str(out)])
    assert caught.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert str(tmp_path) in lines[0]
    assert "model.json" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("out", "words"),
    [
        (".", "is a folder"),
        ("predictions.txt", "unknown format '.txt'"),
        ("model.json/p.csv", "is a file, not a folder"),
    ],
    ids=["folder", "suffix", "under a file"],
)
def test_cli_refuses_an_unwritable_out_before_any_work(tiffs, tmp_path, capsys, monkeypatch, out, words):
    (tmp_path / "model.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    # No model folder either: the --out check comes first, before loading anything or reading images.
    with pytest.raises(SystemExit) as caught:
        predict_cli([str(tmp_path / "no-model"), str(tiffs[0]), "--out", out])
    assert caught.value.code == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [f"error: --out {out}: {lines[0].split(': ', 2)[2]}"] and words in lines[0], captured.err
    assert "prepare" not in captured.err  # no image was read


@pytest.mark.parametrize("which", ["input", "--out", "--out folder"])
def test_cli_names_over_255_bytes_are_one_line_errors(lenet_folder, tiffs, tmp_path, capsys, which):
    long = "n" * 300
    inputs, out = [str(tiffs[0])], tmp_path / "p.csv"
    if which == "input":
        inputs.append(str(tmp_path / f"{long}.tif"))
    else:
        out = tmp_path / f"{long}.csv" if which == "--out" else tmp_path / long / "p.csv"
    with pytest.raises(SystemExit) as caught:
        predict_cli([str(lenet_folder), *inputs, "--out", str(out)])
    assert caught.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {which.split()[0]} ")
    assert "a name in it is 30" in lines[0] and "at most 255 bytes" in lines[0]


@pytest.mark.parametrize("kind", ["classical", "fusion"])
def test_a_model_of_whole_crop_features_is_refused_by_predict(tmp_path, kind):
    write_card(tmp_path, ModelCard(kind=kind, architecture="foci" if kind == "classical" else "fusion",
                                   target="particle", classes=["Fe", "X-ray"], training={}, complete=True))
    with pytest.raises(PipelineError, match=r"evaluate scores it\); predict takes models/lenet or models/baseline"):
        Predictor(tmp_path)
