"""Input-gradient saliency maps for a CNN: which pixels move its prediction.

For a fixed, seeded sample of test nuclei per true class, the map is |∂ log p(predicted class) /
∂ pixel| (Simonyan et al. 2014), plain gradients rather than gradient × input because the
question is whether the network looks at the nucleus and its foci *or at the background*, and
gradient × input is zero wherever the normalised background is near zero. The picture shows,
per nucleus, the input (contrast-stretched for the eye), the map, and the map over the input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch import nn

from bps.models.inference import to_float
from bps.models.loader import LoadedModel

SCALE = 3  # pixels on screen per input pixel
# Dark to bright, perceptually ordered (close to matplotlib's inferno), for the saliency maps.
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=float)


def sample_per_class(y_true: np.ndarray, per_class: int, seed: int) -> list[int]:
    """Row indices of up to ``per_class`` images of every class, drawn reproducibly, class by class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(y_true):
        rows = np.flatnonzero(y_true == label)
        chosen += sorted(rng.choice(rows, size=min(per_class, len(rows)), replace=False).tolist())
    return chosen


def input_gradients(model: nn.Module, images: np.ndarray, device: torch.device, head_sizes: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Saliency (N×H×W, the largest |gradient| over channels) and outputs (each head's softmax) of uint8 inputs.

    ``head_sizes`` splits the logits into heads (one head: all of them). The heads are trained as
    independent softmaxes, so the predicted class's log probability is the sum of each head's
    largest, and its gradient is the map.
    """
    model.eval()
    inputs = to_float(images).to(device).requires_grad_(True)
    log_probas = [torch.log_softmax(block, dim=1) for block in model(inputs).split(list(head_sizes), dim=1)]
    chosen = sum(log_proba.amax(dim=1).sum() for log_proba in log_probas)
    (gradient,) = torch.autograd.grad(chosen, inputs)
    return gradient.abs().amax(dim=1).cpu().numpy(), torch.cat(log_probas, dim=1).exp().detach().cpu().numpy()


def _stretch(values: np.ndarray) -> np.ndarray:
    """0-1 between the 1st and 99.5th percentile: for display only."""
    low, high = np.percentile(values, [1, 99.5])
    return np.clip((values - low) / max(high - low, 1e-12), 0, 1)


def _colour(values: np.ndarray) -> np.ndarray:
    """0-1 values → RGB uint8 through the dark-to-bright map."""
    positions = np.linspace(0, 1, len(_ANCHORS))
    rgb = [np.interp(values, positions, _ANCHORS[:, channel]) for channel in range(3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def panel(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """One nucleus as three RGB tiles side by side: input, saliency, saliency over the input."""
    grey = _stretch(image.astype(np.float64).max(axis=0))
    heat = _stretch(saliency)
    tiles = [
        np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1),
        _colour(heat),
        (0.5 * grey[..., None] * 255 + 0.5 * _colour(heat)).astype(np.uint8),
    ]
    return np.concatenate([np.kron(t, np.ones((SCALE, SCALE, 1), dtype=np.uint8)) for t in tiles], axis=1)


def render(images: np.ndarray, saliency: np.ndarray, captions: list[str], title: str) -> Image.Image:
    """A column of nucleus panels, each under its caption, under a title."""
    line = 14
    panels = [panel(image, heat) for image, heat in zip(images, saliency)]
    width = max(p.shape[1] for p in panels)
    height = line + sum(p.shape[0] + line for p in panels)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), title, fill="black")
    top = line
    for tile, caption in zip(panels, captions):
        draw.text((2, top + 1), caption, fill="black")
        canvas.paste(Image.fromarray(tile), (0, top + line))
        top += line + tile.shape[0]
    return canvas


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text)


def write_saliency(model: LoadedModel, images: np.ndarray, table: pd.DataFrame, labels: np.ndarray, per_class: int,
                   seed: int, folder: Path) -> list[str]:
    """The CNN's input-gradient maps for a seeded sample of test nuclei, one PNG per true class in ``folder``."""
    target, name = model.target, model.folder.name
    chosen = np.array(sample_per_class(labels, per_class, seed), dtype=int)
    folder.mkdir(parents=True, exist_ok=True)  # a DVC output even when it holds no picture
    if not len(chosen):
        return []
    saliency, outputs = input_gradients(model.network, np.asarray(images[chosen]), model.device, target.head_sizes)
    proba = target.joint(outputs)  # over the target's classes, each head's prediction joined
    written = []
    for label in np.unique(labels[chosen]):
        rows = np.flatnonzero(labels[chosen] == label)
        rows_of = table.iloc[chosen[rows]]
        captions = [f"{p} {d:g} Gy {h} h, {well}: predicted {target.classes[pr.argmax()]} (p={pr.max():.2f})"
                    for p, d, h, well, pr in zip(rows_of["particle_type"], rows_of["dose_Gy"],
                                                 rows_of["hr_post_exposure"], rows_of["well"], proba[rows])]
        title = f"{name}, true class {target.classes[label]}: input | |d log p / d pixel| | overlay"
        path = folder / f"{name}_{slug(target.classes[label])}.png"
        render(np.asarray(images[chosen[rows]]), saliency[rows], captions, title).save(path)
        written.append(str(path))
    return written
