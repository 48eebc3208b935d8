"""A sample's channel files to one C×size×size input, each channel normalised on its own."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bps.core.params import PreprocessParams
from bps.data.images import ImageError, ImageTooLargeError
from bps.data.layouts.channels import NotAPngError, prepare_samples, read_channel
from bps.data.layouts.meta import (
    SAMPLE,
)
from bps.data.layouts.source import download_layout
from bps.data.layouts.toy import write_png
from bps.training.batches import RandomAugment
from stages.layouts.preprocess import normalisation
from tests.support.layouts import data_of
from tests.support.tiff_bombs import header_only_png


@pytest.mark.parametrize(("preset", "channels"), [("hpa", 4), ("rxrx1", 6)])
def test_preprocess_gives_n_by_c_arrays_normalised_per_channel(preset, channels, hpa, rxrx1, tmp_path):
    root = {"hpa": hpa, "rxrx1": rxrx1}[preset]
    table = download_layout(tmp_path, data_of(preset, root)).head(10)
    files = [tuple(tmp_path / name for name in row) for row in table.filter(like="file_").itertuples(index=False)]
    params = PreprocessParams(scale="fit", image_size=32, normalize="percentile", percentiles=(0.5, 99.9), workers=1)
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
    params = PreprocessParams(scale="fit", image_size=16, normalize="percentile", workers=1, on_error="skip")
    prepared = prepare_samples([(good, good), (good, corrupt)], ["a", "b"], 2, 8, params)
    assert prepared.kept == [0] and list(prepared.failures) == ["b"] and str(corrupt) in prepared.failures["b"]
    with pytest.raises(ImageError, match=f"{corrupt}: cannot read the PNG"):
        prepare_samples([(good, corrupt)], ["b"], 2, 8, params.model_copy(update={"on_error": "fail"}))


def test_sixteen_bit_tiff_channels(tmp_path):
    import tifffile

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"c{k}.tif")
        tifffile.imwrite(paths[-1], np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * (k + 1))
    params = PreprocessParams(scale="fit", image_size=20, normalize="minmax", workers=1)
    prepared = prepare_samples([tuple(paths)], ["s"], 3, 16, params)
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


def test_channels_of_different_sizes_in_one_sample_are_refused_naming_the_files(tmp_path):
    square, wide = tmp_path / "dna.png", tmp_path / "actin.png"
    write_png(square, np.full((64, 64), 7, np.uint8))
    write_png(wide, np.full((512, 37), 7, np.uint8))
    params = PreprocessParams(scale="fit", image_size=16, workers=1, on_error="fail")
    with pytest.raises(ImageError, match=rf"^{wide}: channels of one sample differ in size: {square} \(64×64\), "
                                         rf"{wide} \(512×37\)"):
        prepare_samples([(square, wide)], ["s"], 2, 8, params)
    prepared = prepare_samples([(square, square), (square, wide)], ["a", "b"], 2, 8,
                               params.model_copy(update={"on_error": "skip"}))
    assert prepared.kept == [0] and "differ in size" in prepared.failures["b"]


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
    params = PreprocessParams(scale="fit", image_size=16, workers=1, on_error="skip")
    prepared = prepare_samples([(good,), (bomb,), (cut,), (jpeg,)], list("abcd"), 1, 8, params)
    assert prepared.kept == [0] and list(prepared.failures) == list("bcd")
    assert all(str(path) in prepared.failures[name] for name, path in zip("bcd", (bomb, cut, jpeg)))


@pytest.mark.parametrize("method", PreprocessParams.model_fields["normalize"].annotation.__args__)
def test_report_states_the_window_of_every_normalisation(method):
    report = normalisation(PreprocessParams(normalize=method), ["nucleus", "protein"])
    assert report["method"] == method and set(report["per_channel"]) == {"nucleus", "protein"}
    assert all(window.startswith("0..1 = ") and "{" not in window for window in report["per_channel"].values())
