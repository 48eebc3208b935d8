"""bps.data.images and bps.data.arrays: TIFF decode, normalisation, padding, resizing and the split arrays."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from bps.core.params import PreprocessParams
from bps.data.arrays import prepare_images, save_array
from bps.data.images import (
    NUCLEUS_WINDOW,
    ImageError,
    centre_window,
    normalize,
    nucleus_box,
    nucleus_window,
    pad_to_square,
    prepare,
    prepare_image,
    read_tiff,
    resize_area,
    to_uint8,
)
from bps.sim.render import plan_dataset, simulate_image, write_tiff

REAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "bps-real"
REAL_TIFF = REAL_DIR / "P242_73665006707-A6_003_013_proj.tif"


def _params(**changes) -> PreprocessParams:
    return PreprocessParams(**changes)


@pytest.fixture
def tiff_path(tmp_path) -> Path:
    """A small valid uint16 Deflate TIFF with known pixels."""
    image = (np.arange(30 * 40, dtype=np.uint16) + 200).reshape(30, 40)
    path = tmp_path / "valid.tif"
    tifffile.imwrite(path, image, compression="zlib")
    return path


@pytest.fixture
def simulated_folder(tmp_path) -> list[Path]:
    """Six simulated TIFFs (one per 4 h condition), written the way the download stage does."""
    plan = plan_dataset(1, [4], seed=0)
    paths = []
    for name, dose, particle, hours in plan.itertuples(index=False):
        path = tmp_path / "raw" / name
        write_tiff(path, simulate_image(name, particle, dose, hours, seed=0))
        paths.append(path)
    return paths


# --- decoding --------------------------------------------------------------------------------


def test_read_tiff_valid(tiff_path):
    image = read_tiff(tiff_path)
    assert image.shape == (30, 40)
    assert image.dtype == np.uint16
    assert image[0, 0] == 200 and image[-1, -1] == 200 + 30 * 40 - 1


def test_read_tiff_accepts_str_paths(tiff_path):
    assert read_tiff(str(tiff_path)).shape == (30, 40)


def _corrupt_random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _corrupt_truncated(path: Path) -> None:
    image = np.random.default_rng(1).integers(200, 3000, (120, 130), dtype=np.uint16)
    tifffile.imwrite(path, image, compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _corrupt_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("corrupt", [_corrupt_random, _corrupt_truncated, _corrupt_empty])
def test_corrupt_file_raises_image_error_naming_the_file(tmp_path, corrupt):
    path = tmp_path / "P242_73665006707-A6_003_013_proj.tif"
    corrupt(path)
    with pytest.raises(ImageError) as caught:
        read_tiff(path)
    assert str(path) in str(caught.value)


def test_missing_file_raises_image_error(tmp_path):
    path = tmp_path / "absent.tif"
    with pytest.raises(ImageError, match="absent.tif"):
        read_tiff(path)


def test_multichannel_tiff_is_refused(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((20, 20, 3), dtype=np.uint16), photometric="rgb")
    with pytest.raises(ImageError, match=r"rgb.tif: expected one 2-D single-channel image, got shape \(20, 20, 3\)"):
        read_tiff(path)


def test_singleton_axes_are_squeezed(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, np.ones((1, 20, 25), dtype=np.uint16))
    assert read_tiff(path).shape == (20, 25)


# --- normalisation ---------------------------------------------------------------------------

RAMP = np.array([[0, 200, 900, 1600, 3000, 5000]], dtype=np.uint16)


def test_normalize_fixed_maps_the_window_and_clips():
    result = normalize(RAMP, _params(normalize="fixed", fixed_range=(200, 3000)))
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, [[0.0, 0.0, 0.25, 0.5, 1.0, 1.0]])


def test_normalize_minmax_spans_zero_to_one():
    result = normalize(RAMP, _params(normalize="minmax"))
    np.testing.assert_allclose(result, [[0.0, 0.04, 0.18, 0.32, 0.6, 1.0]], rtol=1e-6)


def test_normalize_percentile():
    image = np.arange(1001, dtype=np.uint16).reshape(7, 143)
    result = normalize(image, _params(normalize="percentile", percentiles=(10.0, 90.0)))
    # The 10th and 90th percentiles of 0..1000 are 100 and 900.
    assert result.min() == 0.0 and result.max() == 1.0
    assert result.flat[500] == pytest.approx(0.5)
    assert result.flat[300] == pytest.approx(0.25)
    assert np.mean(result == 0.0) == pytest.approx(101 / 1001)
    # With 0 and 100 it is min-max.
    full = normalize(image, _params(normalize="percentile", percentiles=(0.0, 100.0)))
    np.testing.assert_allclose(full, normalize(image, _params(normalize="minmax")), atol=1e-6)


def test_normalize_constant_image_does_not_divide_by_zero():
    flat = np.full((8, 8), 700, dtype=np.uint16)
    for method in ("minmax", "percentile", "nucleus"):
        result = normalize(flat, _params(normalize=method))
        assert np.isfinite(result).all()
        assert (result == 0.0).all()


def test_fixed_keeps_absolute_brightness_minmax_does_not():
    rng = np.random.default_rng(0)
    dim = rng.integers(300, 1000, (32, 32)).astype(np.uint16)
    bright = (dim.astype(np.int64) * 2 + 100).astype(np.uint16)  # same picture, brighter
    fixed = _params(normalize="fixed")
    assert normalize(bright, fixed).mean() > normalize(dim, fixed).mean() + 0.15
    minmax = _params(normalize="minmax")
    np.testing.assert_allclose(normalize(bright, minmax), normalize(dim, minmax), atol=1e-6)
    percentile = _params(normalize="percentile")
    np.testing.assert_allclose(normalize(bright, percentile), normalize(dim, percentile), atol=1e-5)


# --- geometry --------------------------------------------------------------------------------


def test_pad_to_square_wide_image_keeps_aspect():
    image = np.full((20, 40), 7.0, dtype=np.float32)
    image[5:15, 10:30] = 100.0
    square = pad_to_square(image)
    assert square.shape == (40, 40)
    assert square.dtype == np.float32
    np.testing.assert_array_equal(square[10:30, :], image)  # centred, not stretched
    assert (square[:10] == 7.0).all() and (square[30:] == 7.0).all()  # filled with the border median


def test_pad_to_square_tall_odd_image():
    image = np.arange(9 * 4, dtype=np.float32).reshape(9, 4)
    square = pad_to_square(image)
    assert square.shape == (9, 9)
    # 5 columns of padding: 2 on the left, 3 on the right.
    np.testing.assert_array_equal(square[:, 2:6], image)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert (square[:, :2] == np.median(border)).all()
    assert (square[:, 6:] == np.median(border)).all()


def test_pad_to_square_leaves_square_images_alone():
    image = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    np.testing.assert_array_equal(pad_to_square(image), image)


def test_centre_window_cuts_a_large_crop_and_pads_a_small_one_at_native_scale():
    large = np.arange(150 * 120, dtype=np.uint16).reshape(150, 120)
    window = centre_window(large, 64)
    assert window.shape == (64, 64) and window.dtype == np.float32
    np.testing.assert_array_equal(window, pad_to_square(large)[43:107, 43:107])  # the square's centre
    np.testing.assert_array_equal(window[:, 3:61], large[43:107, 31:89])  # pixels unshrunk
    small = np.full((20, 30), 5, dtype=np.uint16)
    small[8:12, 13:17] = 900
    padded = centre_window(small, 64)
    assert padded.shape == (64, 64)
    np.testing.assert_array_equal(padded[22:42, 17:47], small)  # centred
    assert (padded[:22] == 5).all() and (padded[:, :17] == 5).all()  # the border's median around it


def test_native_scale_keeps_a_focus_at_its_real_width():
    """A 5 px wide focus in a 150 px crop stays 5 px wide at native scale; fit shrinks it to ~2 px."""
    crop = np.full((150, 150), 300, dtype=np.uint16)
    crop[73:78, 73:78] = 2900
    native = prepare_image(crop, _params(image_size=64, scale="native"))
    fit = prepare_image(crop, _params(image_size=64, scale="fit"))
    assert (native > 200).sum() == 25
    assert (fit > 200).sum() <= 4


def test_window_scale_shrinks_every_crop_by_one_factor():
    """The same 8 px focus in a 100 px and a 200 px crop: fit shows it at two widths, window at one."""
    def focus_width(side: int, **scale) -> int:
        crop = np.full((side, side), 300, dtype=np.uint16)
        middle = side // 2
        crop[middle - 4 : middle + 4, middle - 4 : middle + 4] = 2900
        return int((prepare_image(crop, _params(image_size=40, **scale))[20] > 100).sum())

    assert focus_width(100, scale="fit") > focus_width(200, scale="fit")
    assert focus_width(100, scale="window", window_px=160) == focus_width(200, scale="window", window_px=160) == 2


def _disc_crop(centre: tuple[int, int], radius: int, shape=(150, 140)) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
    return (300 + 600 * ndimage.gaussian_filter(disc.astype(float), 2)).astype(np.uint16)


def test_nucleus_box_is_the_nucleus_with_a_margin():
    image = _disc_crop((75, 70), 30)
    rows, cols = nucleus_box(image)
    for cut, centre in ((rows, 75), (cols, 70)):  # 60 px wide, a margin of about 6 on each side
        assert centre - 30 - 10 <= cut.start <= centre - 30 - 3 and centre + 30 + 3 <= cut.stop <= centre + 30 + 10
    image[5:15, 5:15] = 900  # a speck as bright as the nucleus, in a corner, is not it
    assert nucleus_box(image) == (rows, cols)


def test_nucleus_box_takes_the_largest_component_off_centre_and_the_whole_of_a_flat_crop():
    image = _disc_crop((40, 40), 25)
    image[110:120, 110:120] = 900
    rows, cols = nucleus_box(image)
    assert rows.start < 15 < 65 < rows.stop < 80 and cols.start < 15 < 65 < cols.stop < 80
    flat = np.full((50, 60), 400, dtype=np.uint16)
    assert nucleus_box(flat) == (slice(0, 50), slice(0, 60))


def test_nucleus_window_runs_from_the_background_to_a_multiple_of_the_nucleus_contrast():
    image = _disc_crop((75, 70), 30)  # background 300, nucleus 900
    low, high = nucleus_window(image)
    assert low == pytest.approx(300, abs=5)
    assert high == pytest.approx(300 + NUCLEUS_WINDOW * 600, rel=0.02)
    image[70:73, 60:63] = 2400  # a focus of 3.5 times the contrast moves neither level and is not clipped
    assert nucleus_window(image) == pytest.approx((low, high), rel=0.01)
    assert 0.8 < normalize(image, _params(normalize="nucleus"))[71, 61] < 1.0


def test_nucleus_window_cancels_a_plates_gain_and_offset_and_keeps_a_focus_relative_brightness():
    """Where percentile divides by the top of the crop, often a focus, the nucleus window keeps a bright
    focus brighter than a dim one, on a plate of any staining gain and offset."""
    dim_focus, bright_focus = _disc_crop((75, 70), 30), _disc_crop((75, 70), 30)
    dim_focus[69:74, 59:64], bright_focus[69:74, 59:64] = 1300, 2400  # 25 px: above the 99.9th percentile
    nucleus, percentile = _params(normalize="nucleus"), _params(normalize="percentile")
    for gain, offset in ((1.0, 0), (1.7, -150), (0.6, 400)):
        restained = [(crop.astype(np.float64) * gain + offset).astype(np.float32) for crop in (dim_focus, bright_focus)]
        dim, bright = (normalize(crop, nucleus) for crop in restained)
        np.testing.assert_allclose(dim, normalize(dim_focus.astype(np.float32), nucleus), atol=0.01)
        assert bright[71, 61] > dim[71, 61] + 0.2
        assert bright[85, 80] == pytest.approx(dim[85, 80], abs=0.01) == pytest.approx(0.25, abs=0.02)
    dim, bright = (normalize(crop, percentile) for crop in (dim_focus, bright_focus))
    assert bright[85, 80] < dim[85, 80] - 0.1  # percentile: the brighter focus darkens the nucleus


def test_scale_nucleus_shows_the_nucleus_larger_at_the_same_size():
    image = _disc_crop((75, 70), 30)
    fit, nucleus = (prepare_image(image, _params(image_size=32, scale=scale)) for scale in ("fit", "nucleus"))
    assert fit.shape == nucleus.shape == (32, 32)
    covered = [(prepared > 128).mean() for prepared in (fit, nucleus)]
    assert covered[1] > 2 * covered[0]  # about (150 / 72)² times the area


def test_resize_area_of_constant_stays_constant():
    image = np.full((150, 150), 0.37, dtype=np.float32)
    result = resize_area(image, 64)
    assert result.shape == (64, 64)
    np.testing.assert_allclose(result, 0.37, rtol=1e-6)


def test_resize_area_of_checkerboard_gives_its_mean():
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    for size in (32, 16, 8):
        np.testing.assert_allclose(resize_area(board, size), 0.5, atol=1e-6)


def test_resize_area_averages_blocks():
    image = np.array([[0, 2, 4, 4], [2, 0, 4, 4], [1, 1, 8, 0], [1, 1, 0, 8]], dtype=np.float32)
    np.testing.assert_allclose(resize_area(image, 2), [[1.0, 4.0], [1.0, 4.0]], atol=1e-6)


def test_resize_area_float64_input_is_not_reinterpreted():
    image = np.full((20, 30), 1.0)  # float64
    np.testing.assert_allclose(resize_area(image, 8), 1.0, rtol=1e-6)


def test_to_uint8():
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0, 0.2], dtype=np.float32)), [0, 128, 255, 51])


def test_prepare_shape_dtype_and_values(tmp_path):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.full((90, 120), 1600, dtype=np.uint16), compression="zlib")
    result = prepare(path, _params(image_size=32, normalize="fixed", fixed_range=(200, 3000)))
    assert result.shape == (32, 32)
    assert result.dtype == np.uint8
    assert (result == 128).all()  # (1600 - 200) / 2800 = 0.5 → round(127.5) = 128


def test_prepare_simulated_image(simulated_folder):
    result = prepare(simulated_folder[0], _params(image_size=64))
    assert result.shape == (64, 64) and result.dtype == np.uint8
    assert result.max() > result.min()


# --- whole splits ----------------------------------------------------------------------------


def test_prepare_images_on_simulated_folder(simulated_folder):
    params = _params(image_size=32, workers=2)
    prepared = prepare_images(simulated_folder, params, desc="test")
    assert prepared.images.shape == (6, 1, 32, 32)
    assert prepared.images.dtype == np.uint8
    assert prepared.kept == list(range(6))
    assert prepared.failures == {}
    for index in (0, 5):  # row for row with the input paths
        np.testing.assert_array_equal(prepared.images[index, 0], prepare(simulated_folder[index], params))


def test_prepare_images_fail_on_corrupt_file(simulated_folder):
    bad = simulated_folder[2]
    _corrupt_truncated(bad)
    with pytest.raises(ImageError) as caught:
        prepare_images(simulated_folder, _params(image_size=32, workers=2, on_error="fail"), desc="test")
    assert str(bad) in str(caught.value)
    assert "on_error: skip" in str(caught.value)


def test_prepare_images_skip_corrupt_file(simulated_folder):
    bad = simulated_folder[2]
    _corrupt_random(bad)
    params = _params(image_size=32, workers=2, on_error="skip")
    prepared = prepare_images(simulated_folder, params, desc="test")
    assert prepared.kept == [0, 1, 3, 4, 5]
    assert prepared.images.shape == (5, 1, 32, 32)
    assert list(prepared.failures) == [str(bad)]
    assert str(bad) in prepared.failures[str(bad)]
    # The image after the skipped one sits in the next free slot.
    np.testing.assert_array_equal(prepared.images[2, 0], prepare(simulated_folder[3], params))


def test_prepare_images_of_nothing():
    prepared = prepare_images([], _params(image_size=16, workers=1), desc="test")
    assert prepared.images.shape == (0, 1, 16, 16)
    assert prepared.kept == []


def test_save_array_is_memory_mappable(tmp_path):
    array = np.arange(2 * 1 * 16 * 16, dtype=np.uint8).reshape(2, 1, 16, 16)
    path = tmp_path / "prepared" / "train_images.npy"
    save_array(path, array)
    loaded = np.load(path, mmap_mode="r")
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == np.uint8 and loaded.shape == (2, 1, 16, 16)
    np.testing.assert_array_equal(loaded, array)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train_images.npy"]  # no .part left


# --- the real file ---------------------------------------------------------------------------


def test_real_bps_file():
    if not REAL_TIFF.exists():
        pytest.skip(f"real BPS reference file not present ({REAL_TIFF})")
    image = read_tiff(REAL_TIFF)
    assert image.shape == (141, 149)
    assert image.dtype == np.uint16
    assert int(image.min()) == 257
    assert int(image.max()) == 2470
    prepared = prepare(REAL_TIFF, _params(image_size=64))
    assert prepared.shape == (64, 64) and prepared.dtype == np.uint8
