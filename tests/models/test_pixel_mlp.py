"""bps.models.networks and bps.models.pixel_mlp: network shapes, weights-only checkpoints, the MLP baseline."""

import copy
import json
import math
import pickle
import time

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from bps.core.params import BaselineParams
from bps.models import pixel_mlp, sklearn_io
from bps.models.card import ModelCard
from bps.models.networks import LeNet5, build_model, load_checkpoint, save_checkpoint
from tests.support.model_cards import finished_card


def _config(in_channels: int = 1, size: int = 32, classes: tuple[str, ...] = ("Fe", "X-ray")) -> ModelCard:
    """A model card shaped like the one stages/train_lenet.py writes."""
    return finished_card("lenet", in_channels, size, classes)


# --- LeNet-5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 50, 64])
@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("n_classes", [2, 6])
def test_lenet_output_shape(size, in_channels, n_classes):
    torch.manual_seed(0)
    model = LeNet5(in_channels, n_classes, size)
    out = model(torch.rand(3, in_channels, size, size))
    assert out.shape == (3, n_classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [15, 12, 8, 4])
def test_lenet_too_small_raises(size):
    with pytest.raises(ValueError, match="16"):
        LeNet5(1, 2, size)


def test_lenet_rejects_wrong_channel_count():
    model = LeNet5(1, 2, 32)
    with pytest.raises(RuntimeError):
        model(torch.rand(2, 4, 32, 32))


def test_build_model_follows_config():
    model = build_model(_config(in_channels=4, size=64, classes=("sham", "a", "b", "c", "d")))
    assert isinstance(model, LeNet5)
    assert model(torch.rand(2, 4, 64, 64)).shape == (2, 5)


# --- checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(("in_channels", "size"), [(1, 32), (4, 64)])
def test_checkpoint_round_trip(tmp_path, in_channels, size):
    torch.manual_seed(1)
    config = _config(in_channels=in_channels, size=size, classes=("sham", "Fe 0.3 Gy", "X-ray 1 Gy"))
    model = LeNet5(in_channels, 3, size).eval()
    folder = tmp_path / "models" / "lenet"  # does not exist yet: save_checkpoint creates it
    save_checkpoint(folder, model, config)

    loaded, loaded_config = load_checkpoint(folder)
    assert isinstance(loaded, LeNet5)
    assert not loaded.training  # rebuilt in eval mode
    assert loaded_config == config
    x = torch.rand(5, in_channels, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # Both files written under their final names, no .part leftovers.
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pt"]


def test_checkpoint_weights_load_weights_only(tmp_path):
    torch.manual_seed(2)
    model = LeNet5(1, 2, 32)
    save_checkpoint(tmp_path, model, _config())
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name

    info = json.loads((tmp_path / "model.json").read_text())
    assert info["architecture"] == "lenet"
    assert info["classes"] == ["Fe", "X-ray"]
    assert info["image_size"] == 32
    assert info["in_channels"] == 1


class _NotATensor:
    """Anything a pickle could rebuild (and so run code from), other than tensors."""


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    save_checkpoint(tmp_path, LeNet5(1, 2, 32), _config())
    torch.save({"payload": _NotATensor()}, tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path)


def test_checkpoint_for_other_shape_does_not_load(tmp_path):
    # model.json must describe the weights: a config with another size cannot load them.
    save_checkpoint(tmp_path, LeNet5(1, 2, 64), _config(size=64))
    config = json.loads((tmp_path / "model.json").read_text())
    smaller = {**config, "image_size": 32, "preprocess": {**config["preprocess"], "image_size": 32}}
    (tmp_path / "model.json").write_text(json.dumps(smaller))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(tmp_path)


# --- baseline --------------------------------------------------------------------------------


def test_flatten_shape_and_range():
    images = np.arange(2 * 3 * 4 * 5, dtype=np.int64).reshape(2, 3, 4, 5).astype(np.uint8)
    images[0, 0, 0, 0], images[1, 2, 3, 4] = 0, 255
    flat = pixel_mlp.flatten(images)
    assert flat.shape == (2, 60)
    assert flat.dtype == np.float32
    assert flat.min() == 0.0 and flat.max() == 1.0
    # Row-major: row i is image i's C×H×W pixels in order.
    np.testing.assert_allclose(flat, images.reshape(2, -1).astype(np.float64) / 255.0, rtol=1e-6)


def test_flatten_reads_a_memory_map(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(pixel_mlp.flatten(mapped), pixel_mlp.flatten(images))


def test_blockwise_scaler_matches_one_matrix_fit(tmp_path, monkeypatch):
    """Fitting and standardising block by block (a memory map, 3 blocks and a short one) gives the
    one-matrix StandardScaler's means exactly, its variances to the last bits, and its features."""
    monkeypatch.setattr(pixel_mlp, "CHUNK_ROWS", 16)
    images = np.random.default_rng(0).integers(0, 256, (53, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    whole = StandardScaler().fit(pixel_mlp.flatten(images))
    blockwise = pixel_mlp.fit_scaler(mapped)
    assert blockwise.n_samples_seen_ == 53
    np.testing.assert_array_equal(blockwise.mean_, whole.mean_)
    np.testing.assert_allclose(blockwise.var_, whole.var_, rtol=1e-12)
    features = pixel_mlp.standardize(mapped, blockwise)
    assert features.dtype == np.float32 and features.shape == (53, 64)
    np.testing.assert_array_equal(features, whole.transform(pixel_mlp.flatten(images)))


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """1×8×8 uint8 images; class 1 has a brighter top half than bottom half, class 0 the reverse."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 120, (n, 1, 8, 8)).astype(np.uint8)
    bright = np.where(labels == 1, 0, 4)  # row offset of the brightened half
    for i, start in enumerate(bright):
        images[i, 0, start : start + 4] += 120
    return images, labels


def test_mlp_learns_separable_data():
    images, labels = _separable(300, seed=0)
    x = StandardScaler().fit_transform(pixel_mlp.flatten(images))
    mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[16], lr=1e-2, batch_size=32, seed=0))
    classes = np.arange(3)  # a class absent from the data still gets a probability column
    losses, accuracies = [], []
    for _ in range(8):
        pixel_mlp.fit_epoch(mlp, x, labels, classes)
        losses.append(mlp.loss_)
        accuracies.append(float((mlp.predict(x) == labels).mean()))
    assert mlp.t_ == 8 * 300  # fit_epoch is exactly one pass over the training set
    assert mlp.predict_proba(x).shape == (300, 3)
    assert losses[-1] < losses[0]
    assert accuracies[-1] >= 0.95
    assert accuracies[-1] >= accuracies[0]


def test_mlp_is_reproducible_for_a_seed():
    images, labels = _separable(120, seed=1)
    x = pixel_mlp.flatten(images)

    def fitted(seed: int) -> np.ndarray:
        mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[8], lr=1e-2, batch_size=16, seed=seed))
        for _ in range(2):
            pixel_mlp.fit_epoch(mlp, x, labels, np.arange(2))
        return mlp.predict_proba(x)

    np.testing.assert_array_equal(fitted(0), fitted(0))
    assert not np.array_equal(fitted(0), fitted(1))


def test_baseline_save_load_round_trip(tmp_path):
    images, labels = _separable(100, seed=2)
    x = pixel_mlp.flatten(images)
    scaler = StandardScaler().fit(x)
    mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[8, 8], lr=1e-2, batch_size=16))
    pixel_mlp.fit_epoch(mlp, scaler.transform(x), labels, np.arange(2))
    pipeline = make_pipeline(scaler, mlp)
    card = finished_card("mlp", size=16, training={"epochs": 1})
    folder = tmp_path / "models" / "baseline"  # does not exist yet
    sklearn_io.save(folder, pipeline, card)

    loaded = sklearn_io.load(folder)
    np.testing.assert_array_equal(loaded.predict_proba(x), pipeline.predict_proba(x))
    saved_info = json.loads((folder / "model.json").read_text())
    assert saved_info["target"] == "particle"
    assert saved_info["classes"] == ["Fe", "X-ray"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", sklearn_io.MODEL_FILE]


def test_the_same_baseline_saved_again_elsewhere_and_later_is_the_same_bytes(tmp_path, monkeypatch):
    images, labels = _separable(60, seed=4)
    x = pixel_mlp.flatten(images)
    scaler = StandardScaler().fit(x)
    mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[8], lr=1e-2, batch_size=16))
    pixel_mlp.fit_epoch(mlp, scaler.transform(x), labels, np.arange(2))
    pipeline, card = make_pipeline(scaler, mlp), finished_card("mlp")
    sklearn_io.save(tmp_path / "first", pipeline, card)
    # A copy lives at other addresses, which skops would write as object ids, and a later
    # time, which it would stamp on every zip entry.
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # 2033
    sklearn_io.save(tmp_path / "second", copy.deepcopy(pipeline), card)

    first, second = (tmp_path / folder / sklearn_io.MODEL_FILE for folder in ("first", "second"))
    assert first.read_bytes() == second.read_bytes()
    np.testing.assert_array_equal(sklearn_io.load(tmp_path / "second").predict_proba(x), pipeline.predict_proba(x))


def test_baseline_load_refuses_foreign_types(tmp_path):
    x = np.random.default_rng(3).random((20, 4))
    pipeline = make_pipeline(FunctionTransformer(math.sqrt), StandardScaler().fit(x))
    sklearn_io.save(tmp_path, pipeline, finished_card("mlp"))
    with pytest.raises(ValueError, match="refusing"):
        sklearn_io.load(tmp_path)


def _craft(folder, schema: dict) -> None:
    """Rewrite a saved model's schema.json: what an attacker who controls the file can do."""
    import zipfile

    path = folder / sklearn_io.MODEL_FILE
    with zipfile.ZipFile(path) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    entries[sklearn_io.SCHEMA_FILE] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as target:
        for name, data in entries.items():
            target.writestr(name, data)


def test_a_crafted_model_that_names_runstring_runs_nothing_and_names_file_and_type(tmp_path):
    folder, proof = tmp_path / "model", tmp_path / "pwned"
    sklearn_io.save(folder, make_pipeline(StandardScaler().fit(np.eye(3))), finished_card("mlp"))
    schema = json.loads(__import__("zipfile").ZipFile(folder / sklearn_io.MODEL_FILE).read(sklearn_io.SCHEMA_FILE))
    payload = f"open({str(proof)!r}, 'w').write('ran')"
    text = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(payload),
            "is_json": True}
    schema["content"]["content"]["steps"] = {  # the pipeline's steps: runstring(payload, {}) when built
        "__class__": "runstring", "__module__": "numpy.testing._private.utils",
        "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                    "content": [text, {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                                       "content": {}, "key_types": {"__class__": "list", "__module__": "builtins",
                                                                    "__loader__": "ListNode", "content": []}}]},
    }
    _craft(folder, schema)
    with pytest.raises(sklearn_io.UntrustedModelError) as caught:
        sklearn_io.load(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / sklearn_io.MODEL_FILE) in message
    assert "numpy.testing._private.utils.runstring" in message
    assert not proof.exists()


def test_every_model_the_project_saves_loads_under_the_exact_allow_list(tmp_path):
    """ALLOWED_TYPES was derived from these models; a scikit-learn upgrade that records a new type fails here."""
    from bps.classical.families import make_model
    from bps.core.params import load_params

    rng = np.random.default_rng(0)
    x = rng.random((60, 6))
    params = load_params()
    models = [make_model(family, params) for family in ("appearance", "foci")]
    models = [model.set_params(**({"max_iter": 3} if hasattr(model, "max_iter") else {})) for model in models]
    for classes in (2, 3):
        for index, model in enumerate(copy.deepcopy(models)):
            model.fit(x, np.arange(60) % classes)
            sklearn_io.save(tmp_path / f"{index}-{classes}", model, finished_card("mlp"))
            np.testing.assert_array_equal(sklearn_io.load(tmp_path / f"{index}-{classes}").predict_proba(x),
                                          model.predict_proba(x))
    multilabel = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[4], lr=1e-2, batch_size=16))
    scaler = StandardScaler().fit(x)
    pixel_mlp.fit_epoch(multilabel, scaler.transform(x), (rng.random((60, 3)) > 0.5).astype(int), np.arange(3))
    sklearn_io.save(tmp_path / "multilabel", make_pipeline(scaler, multilabel), finished_card("mlp"))
    sklearn_io.load(tmp_path / "multilabel")
