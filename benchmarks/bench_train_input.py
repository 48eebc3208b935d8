"""Training input: the project's loader vs a study-style per-image Dataset vs compute alone.

All three run the same LeNet-5 training step on the same images; only how batches are made
differs. Compute-only feeds batches already in memory as tensors: the limit of any loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import Row, best_of_each, simulated_tiffs, timed
from bps.core.params import PreprocessParams
from bps.data.arrays import prepare_images, save_array
from bps.models.networks import LeNet5
from bps.training.batches import RandomAugment, iterate_batches

BATCH = 64
SIZE = 64


class StudyDataset(Dataset):
    """One TIFF read, scaled, resized and augmented per ``__getitem__``, as the study did."""

    def __init__(self, paths: list[Path], labels: np.ndarray) -> None:
        self.paths, self.labels = paths, labels
        self.augment = transforms.Compose(
            [
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
                transforms.RandomCrop(SIZE, padding=4, padding_mode="reflect"),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = tifffile.imread(self.paths[index]).astype(np.float32)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        image = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BOX))
        return self.augment(torch.from_numpy(image.copy())[None]), int(self.labels[index])


def _step(model, optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()


def _epoch(batches) -> None:
    torch.manual_seed(0)
    model = LeNet5(1, 2, SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    for images, labels in batches:
        _step(model, optimizer, images, labels)


def run(workdir: Path, quick: bool) -> list[Row]:
    count = 384 if quick else 3072
    folder = workdir / "train-tiffs"
    table = simulated_tiffs(folder, count)
    paths = [folder / name for name in table["filename"]]
    labels = (table["particle_type"] == "Fe").to_numpy().astype(np.int64)
    array_path = workdir / "train_images.npy"
    save_array(array_path, prepare_images(paths, PreprocessParams(image_size=SIZE)).images)
    images = np.load(array_path, mmap_mode="r")
    in_memory = list(iterate_batches(images, labels, BATCH))

    def project() -> None:
        generator = torch.Generator().manual_seed(0)
        _epoch(iterate_batches(images, labels, BATCH, generator, RandomAugment(generator, 4)))

    def study() -> None:
        _epoch(DataLoader(StudyDataset(paths, labels), batch_size=BATCH, shuffle=True, num_workers=0))

    repeats = 1 if quick else 3
    best = best_of_each({"compute": lambda: _epoch(in_memory), "project": project}, repeats)
    compute, ours = best["compute"], best["project"]
    seed_style = timed(study)  # the slow one, once
    return [
        Row("train_input_vs_seed_loader", seed_style / ours, "x", f"{count} images, LeNet-5 epoch, batch {BATCH}"),
        Row("train_input_vs_compute_limit", ours / compute, "x", "project epoch time / in-memory tensors epoch time"),
        Row(
            "train_images_per_s",
            count / ours,
            "images/s",
            f"compute-only {count / compute:.0f}/s, study-style {count / seed_style:.0f}/s",
        ),
    ]
