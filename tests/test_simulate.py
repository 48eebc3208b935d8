"""bps.simulate: names like the bucket's, deterministic pixels, realistic intensities and physics."""

from collections import Counter

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from bps import simulate
from bps.meta import CONDITION_COLUMNS, FILENAME_PATTERN, read_meta, with_groups

SAMPLES = 40  # images per condition for the statistical checks
FOCUS_THRESHOLD = 250  # grey levels above the local median level that make a focus


def _foci(image: np.ndarray) -> int:
    """Count bright spots: connected pixels well above their neighbourhood's median.

    The local median is taken over ~10×10 pixels on a 2× subsampled image (fast, and blind to
    spots a few pixels wide), then blown back up to full size.
    """
    image = image.astype(float)
    local = ndimage.median_filter(image[::2, ::2], size=5)
    local = np.repeat(np.repeat(local, 2, axis=0), 2, axis=1)[: image.shape[0], : image.shape[1]]
    return ndimage.label(image - local > FOCUS_THRESHOLD)[1]


def _border_median(image: np.ndarray) -> float:
    return float(np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))


STUDIED = [("X-ray", 1.0, 4), ("X-ray", 1.0, 48), ("X-ray", 0.0, 4), ("Fe", 0.82, 4), ("Fe", 0.82, 48), ("Fe", 0.0, 4)]


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, float, int], list[np.ndarray]]:
    """SAMPLES simulated images for each studied condition (seed 0)."""
    plan = simulate.plan_dataset(SAMPLES, [4, 48], seed=0)
    images = {}
    for (particle, dose, hours), rows in plan.groupby(CONDITION_COLUMNS):
        if (particle, dose, hours) in STUDIED:
            images[(particle, dose, hours)] = [
                simulate.simulate_image(name, particle, dose, hours, seed=0) for name in rows["filename"]
            ]
    assert set(images) == set(STUDIED)
    return images


# --- the plan: names, plates, conditions ---------------------------------------------------


def test_plan_names_match_the_bucket_pattern():
    plan = simulate.plan_dataset(30, [4, 24, 48], seed=0)
    assert all(FILENAME_PATTERN.fullmatch(name) for name in plan["filename"])
    assert plan["filename"].is_unique
    assert plan["filename"].is_monotonic_increasing
    # The plan is a valid meta.csv table as is.
    checked = read_meta(plan.to_csv(index=False).encode())
    assert len(checked) == len(plan)


def test_plan_has_the_real_conditions():
    plan = simulate.plan_dataset(5, [4, 24, 48], seed=0)
    conditions = set(plan[CONDITION_COLUMNS].itertuples(index=False, name=None))
    assert len(conditions) == 17
    assert ("Fe", 0.3, 48) not in conditions
    expected = {
        (particle, dose, hours)
        for particle, doses in (("Fe", (0.0, 0.3, 0.82)), ("X-ray", (0.0, 0.1, 1.0)))
        for dose in doses
        for hours in (4, 24, 48)
    } - {("Fe", 0.3, 48)}
    assert conditions == expected


def test_plan_counts_per_condition():
    plan = simulate.plan_dataset(7, [4, 48], seed=3)
    counts = plan.groupby(CONDITION_COLUMNS).size()
    assert len(counts) == 11  # 6 conditions at 4 h, 5 at 48 h
    assert (counts == 7).all()
    assert set(plan["hr_post_exposure"]) == {4, 48}


def test_one_plate_per_condition():
    plan = with_groups(simulate.plan_dataset(20, [4, 24, 48], seed=0))
    conditions_per_plate = plan.groupby("plate")[CONDITION_COLUMNS].nunique()
    assert (conditions_per_plate == 1).all().all()
    plates_per_condition = plan.groupby(CONDITION_COLUMNS)["plate"].nunique()
    assert (plates_per_condition == 1).all()
    assert plan["plate"].nunique() == 17
    # The plates are the real ones: Fe 0.82 Gy at 4 h lives on P242, like the real file.
    fe_high_4h = plan[(plan["particle_type"] == "Fe") & (plan["dose_Gy"] == 0.82) & (plan["hr_post_exposure"] == 4)]
    assert set(fe_high_4h["plate"]) == {"P242"}


def test_plan_is_deterministic_and_seeded():
    first = simulate.plan_dataset(30, [4], seed=0)
    assert first.equals(simulate.plan_dataset(30, [4], seed=0))
    assert not first["filename"].equals(simulate.plan_dataset(30, [4], seed=1)["filename"])


def test_plan_spreads_images_over_wells():
    plan = with_groups(simulate.plan_dataset(60, [4], seed=0))
    wells_per_plate = plan.groupby("plate")["well"].nunique()
    assert (wells_per_plate >= 5).all()  # 8 wells per plate, 60 images: nearly all used


# --- single images ---------------------------------------------------------------------------


def test_simulate_image_is_deterministic_for_name_and_seed():
    name = "P280_73668439105-A7_012_001_proj.tif"
    first = simulate.simulate_image(name, "X-ray", 1.0, 4, seed=0)
    again = simulate.simulate_image(name, "X-ray", 1.0, 4, seed=0)
    np.testing.assert_array_equal(first, again)
    other_seed = simulate.simulate_image(name, "X-ray", 1.0, 4, seed=1)
    other_name = simulate.simulate_image(name.replace("_001_", "_002_"), "X-ray", 1.0, 4, seed=0)
    assert first.shape != other_seed.shape or not np.array_equal(first, other_seed)
    assert first.shape != other_name.shape or not np.array_equal(first, other_name)


def test_simulate_image_rejects_unknown_dose():
    with pytest.raises(ValueError, match="no dose 0.5"):
        simulate.simulate_image("P280_73668439105-A7_012_001_proj.tif", "X-ray", 0.5, 4, seed=0)


def test_image_type_and_geometry(rendered):
    images = [image for images in rendered.values() for image in images]
    assert all(image.dtype == np.uint16 and image.ndim == 2 for image in images)
    sides = np.array([image.shape for image in images])
    assert sides.min() >= 90 and sides.max() <= 256
    assert len(set(map(tuple, sides))) > len(images) // 2  # crop sizes vary


def test_background_like_the_real_data(rendered):
    for condition, images in rendered.items():
        borders = np.array([_border_median(image) for image in images])
        # Neighbouring nuclei sometimes cover a border, so look at the typical image.
        assert 250 <= np.median(borders) <= 420, condition
        assert np.mean((borders >= 250) & (borders <= 420)) >= 0.8, condition
        darkest = np.array([np.percentile(image, 2) for image in images])
        assert darkest.min() >= 200 and darkest.max() <= 420, condition


def test_foci_intensities_like_the_real_data(rendered):
    peaks = {condition: np.array([int(image.max()) for image in images]) for condition, images in rendered.items()}
    everything = np.concatenate(list(peaks.values()))
    assert everything.max() <= 4500  # nowhere near saturation: the real crop peaks at 2470
    # Fe 0.82 Gy at 4 h is the real file's condition (max 2470).
    assert 1500 <= np.median(peaks[("Fe", 0.82, 4)]) <= 4000
    assert np.median(peaks[("X-ray", 1.0, 4)]) >= 1200
    assert np.median(peaks[("Fe", 0.82, 4)]) > np.median(peaks[("Fe", 0.0, 4)])


def test_foci_follow_dose_and_repair(rendered):
    foci = {condition: np.mean([_foci(image) for image in images]) for condition, images in rendered.items()}
    xray_4h, xray_48h, xray_sham = foci[("X-ray", 1.0, 4)], foci[("X-ray", 1.0, 48)], foci[("X-ray", 0.0, 4)]
    # About 20 foci per Gy at 4 h, most repaired by 48 h, a few spontaneous ones on sham.
    assert xray_4h > 2 * xray_48h
    assert xray_4h > 4 * xray_sham
    assert xray_4h >= 8
    assert xray_sham <= 3
    # Fe damage is clustered and repaired slowly: a larger fraction persists to 48 h than for X-rays.
    fe_4h, fe_48h, fe_sham = foci[("Fe", 0.82, 4)], foci[("Fe", 0.82, 48)], foci[("Fe", 0.0, 4)]
    assert fe_4h > 3 * fe_sham
    assert fe_48h / fe_4h > xray_48h / xray_4h + 0.1


def test_focus_counter_counts_spots():
    # The counter used above, on a hand-made image with three spots on a flat nucleus.
    image = np.full((60, 60), 500.0)
    for row, col in ((10, 10), (30, 40), (50, 20)):
        image[row - 1 : row + 2, col - 1 : col + 2] += 1000
    assert _foci(image.astype(np.uint16)) == 3
    assert _foci(np.full((60, 60), 500, dtype=np.uint16)) == 0


# --- files -----------------------------------------------------------------------------------


def test_written_tiff_is_deflate_and_round_trips(tmp_path):
    name = "P242_73665006707-A6_003_013_proj.tif"
    image = simulate.simulate_image(name, "Fe", 0.82, 4, seed=0)
    path = tmp_path / name
    simulate.write_tiff(path, image)
    with tifffile.TiffFile(path) as tiff:
        assert len(tiff.pages) == 1
        assert tiff.pages[0].compression == simulate.DEFLATE == 32946
        np.testing.assert_array_equal(tiff.pages[0].asarray(), image)
    assert list(tmp_path.iterdir()) == [path]  # no .part leftovers


def test_write_images_writes_every_file_of_a_table(tmp_path):
    plan = simulate.plan_dataset(2, [4], seed=0)  # 6 conditions × 2
    folder = tmp_path / "raw"
    simulate.write_images(folder, plan, seed=0, workers=2)
    assert sorted(p.name for p in folder.iterdir()) == sorted(plan["filename"])
    name, dose, particle, hours = plan.iloc[3]
    written = tifffile.imread(folder / name)
    expected = simulate.simulate_image(name, particle, dose, hours, seed=0)
    np.testing.assert_array_equal(written, expected)
    assert Counter(plan["particle_type"]) == {"Fe": 6, "X-ray": 6}
