"""The CNN's input from one decode: the image channel, and the optional foci channel beside it."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from bps.classical.features import model_input, prepare_with_features
from bps.core.params import FeatureParams, PreprocessParams
from bps.data.images import prepare_image
from bps.sim.render import DEFLATE, plan_dataset, simulate_image

FOCI = PreprocessParams(image_size=32, foci_channel=True)


def _nucleus(spot: tuple[int, int] | None, gain: float = 1.0) -> np.ndarray:
    """A flat, soft-edged, slightly noisy 128 px nucleus on a dim background, with one 5 px wide focus at ``spot``."""
    rows, cols = np.mgrid[:128, :128]
    image = 300 + ndimage.gaussian_filter(900.0 * (((rows - 64) ** 2 + (cols - 64) ** 2) < 45**2), 6)
    if spot is not None:
        image = image + 400 * np.exp(-((rows - spot[0]) ** 2 + (cols - spot[1]) ** 2) / (2 * 2.1**2))
    image = image + np.random.default_rng(0).normal(0, 5, image.shape)
    return np.round(gain * image).astype(np.uint16)


def test_without_the_foci_channel_the_input_is_the_image_alone():
    image = _nucleus((50, 70))
    params = PreprocessParams(image_size=32)
    assert model_input(image, params).shape == (1, 32, 32)
    np.testing.assert_array_equal(model_input(image, params)[0], prepare_image(image, params))


def test_the_foci_channel_lights_up_at_the_focus_and_nowhere_else():
    with_focus, without = model_input(_nucleus((48, 80)), FOCI), model_input(_nucleus(None), FOCI)
    assert with_focus.shape == (2, 32, 32) and with_focus.dtype == np.uint8
    row, col = np.unravel_index(np.argmax(with_focus[1]), (32, 32))
    assert (abs(row - 12) <= 1, abs(col - 20) <= 1) == (True, True)  # 48 / 4, 80 / 4
    assert with_focus[1].max() > 60 and without[1].max() < with_focus[1].max() / 1.5  # the rim answers a little


def test_the_foci_channel_is_cut_to_the_image_s_nucleus_box():
    params = PreprocessParams(image_size=32, foci_channel=True, scale="nucleus")
    image = np.pad(_nucleus((48, 80)), 60, constant_values=300)  # a wide margin: the box is far from the crop
    both = model_input(image, params)
    row, col = np.unravel_index(np.argmax(both[1]), (32, 32))
    brightest = np.unravel_index(np.argmax(both[0]), (32, 32))
    assert abs(row - brightest[0]) <= 1 and abs(col - brightest[1]) <= 1  # the focus, where the image has it


def test_a_plates_staining_gain_does_not_reach_the_foci_channel():
    dim, bright = model_input(_nucleus((48, 80)), FOCI), model_input(_nucleus((48, 80), gain=2.5), FOCI)
    assert np.abs(dim.astype(int) - bright.astype(int)).max() <= 2


@pytest.mark.parametrize("foci_channel", [False, True])
def test_preprocess_writes_one_channel_per_input(tmp_path, foci_channel):
    paths = []
    for name, dose, particle, hours in plan_dataset(1, [4], seed=1).iloc[:3].itertuples(index=False):
        paths.append(tmp_path / name)
        tifffile.imwrite(paths[-1], simulate_image(name, particle, dose, hours, seed=1), compression=DEFLATE)
    params = PreprocessParams(image_size=32, foci_channel=foci_channel)
    prepared, features = prepare_with_features(paths, params, FeatureParams())
    assert prepared.images.shape == (3, 1 + foci_channel, 32, 32) and len(features) == 3
