"""Decompression bombs in TIFFs: refused or bounded before they cost memory, in the library, preprocess and CLI.

Peak memory is measured in a fresh process (``ru_maxrss`` of that process alone), since this
one's high-water mark is already set by whatever ran before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from bps.core.params import PreprocessParams
from bps.data.arrays import prepare_images
from bps.data.images import CompressionError, ImageError, read_tiff
from bps.models.networks import LeNet5, save_checkpoint
from bps.sim.render import DEFLATE, simulate_image
from tests.support.model_cards import finished_card
from tests.support.tiff_bombs import deflate_bomb, jpeg_bomb, lzw_bomb, packbits_bomb, png_bomb, zstd_bomb

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20
BOUND_MIB = 32  # a 64×64 header allows 8 kB of pixels; the bombs below decode to 16-256 MiB

# name: (bomb, expected outcome): refused before decoding, refused when the stream overflows the
# declared size, or (LZW, which stops at the declared size) decoded to the declared 64×64.
BOMBS = {
    "PNG 16000x16000": (png_bomb, "TIFF compression PNG (34933) is not accepted"),
    "JPEG 8000x8000": (jpeg_bomb, "TIFF compression JPEG (7) is not accepted"),
    "Deflate 256 MiB": (deflate_bomb, "cannot decode TIFF pixel data"),
    "Zstd 64 MiB": (zstd_bomb, "cannot decode TIFF pixel data"),
    "PackBits 256 MiB": (packbits_bomb, "cannot decode TIFF pixel data"),
    "LZW 16 MiB": (lzw_bomb, "decoded (64, 64)"),
}

READ_AND_MEASURE = """
import json, resource, sys
from bps.data.images import read_tiff
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    outcome = f"decoded {read_tiff(sys.argv[1]).shape}"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcome": outcome, "growth_kib": growth}))
"""


@pytest.fixture(scope="module")
def bomb_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    paths = {}
    for index, (name, (make, _)) in enumerate(BOMBS.items()):
        paths[name] = folder / f"bomb{index}.tif"
        paths[name].write_bytes(make())
    return paths


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("crops")
    names = ["P242_73665006707-A6_001_003_proj.tif", "P280_73668439105-D5_012_001_proj.tif"]
    for name, particle, dose in zip(names, ["Fe", "X-ray"], [0.82, 1.0]):
        tifffile.imwrite(folder / name, simulate_image(name, particle, dose, 4, seed=0), compression=DEFLATE)
    return [folder / name for name in names]


@pytest.mark.parametrize("kind", BOMBS, ids=list(BOMBS))
def test_bomb_is_refused_or_bounded_with_little_memory(bomb_files, kind):
    path = bomb_files[kind]
    assert path.stat().st_size < 5 * MIB  # small on disk: that is what makes it a bomb
    command = [sys.executable, "-c", READ_AND_MEASURE, str(path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    measured = json.loads(result.stdout)
    assert BOMBS[kind][1] in measured["outcome"]
    if "decoded" not in measured["outcome"]:
        assert str(path) in measured["outcome"]  # names the file
    assert measured["growth_kib"] < BOUND_MIB * 1024, measured


@pytest.mark.parametrize("kind", ["PNG 16000x16000", "JPEG 8000x8000"])
def test_image_codecs_are_refused_as_a_compression_error(bomb_files, kind):
    with pytest.raises(CompressionError, match="allowed: none \\(1\\), LZW \\(5\\), Deflate \\(8 or 32946\\)"):
        read_tiff(bomb_files[kind])


@pytest.mark.parametrize("compression", ["none", "lzw", "zlib", "deflate", "packbits", "zstd"])
def test_every_allowed_compression_still_reads(tmp_path, compression):
    image = (np.arange(50 * 70) % 3000).astype(np.uint16).reshape(50, 70)
    path = tmp_path / f"{compression}.tif"
    codec = {"none": None, "deflate": DEFLATE}.get(compression, compression)
    tifffile.imwrite(path, image, compression=codec)
    np.testing.assert_array_equal(read_tiff(path), image)


def test_preprocess_names_a_bomb_or_skips_and_lists_it(bomb_files, crops):
    bomb = bomb_files["PNG 16000x16000"]
    paths = [crops[0], bomb, crops[1]]
    with pytest.raises(ImageError, match=f"{bomb}: TIFF compression PNG") as caught:
        prepare_images(paths, PreprocessParams(image_size=32, workers=1, on_error="fail"), desc="test")
    assert "on_error: skip" in str(caught.value)
    prepared = prepare_images(paths, PreprocessParams(image_size=32, workers=1, on_error="skip"), desc="test")
    assert prepared.kept == [0, 2]
    assert list(prepared.failures) == [str(bomb)]
    assert "not accepted" in prepared.failures[str(bomb)]


def run_measured(command: list[str]) -> tuple[int, str, str, int]:
    """Run a process to the end; its exit code, stdout, stderr and its own peak RSS in MiB (from wait4)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.stdout.read(), process.stderr.read()  # small outputs: no pipe fills up
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, out, err, usage.ru_maxrss // 1024


@pytest.mark.slow
def test_predict_cli_refuses_a_bomb_in_one_line_with_the_memory_of_a_normal_file(bomb_files, crops, tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "lenet"
    save_checkpoint(model, LeNet5(1, 2, 32), finished_card("lenet", size=32))
    predict = [sys.executable, "-m", "bps", "predict", str(model)]
    code, out, _, normal_mib = run_measured([*predict, str(crops[0]), "--out", str(tmp_path / "ok.csv")])
    assert code == 0 and "1 images" in out
    bomb = bomb_files["PNG 16000x16000"]
    code, out, err, bomb_mib = run_measured([*predict, str(bomb), "--out", str(tmp_path / "bomb.csv")])
    assert code == 1
    messages = [line for line in err.splitlines() if line.strip() and not line.startswith("prepare:")]  # no tqdm bar
    assert len(messages) == 1, err  # one line, no traceback
    assert messages[0].startswith(f"error: {bomb}: TIFF compression PNG (34933) is not accepted")
    assert not (tmp_path / "bomb.csv").exists()
    assert bomb_mib < normal_mib + BOUND_MIB, (bomb_mib, normal_mib)
