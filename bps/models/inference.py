"""Running a trained network: the device, uint8 arrays to tensors, probabilities per head or label.

Shared by training (validation after every epoch), evaluation, saliency and the prediction
service, so a model is read the same way wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from bps.core.errors import PipelineError

# Images per forward pass when predicting. On CPU a batch of 64 stays in the caches, where 512's
# buffers are mapped afresh from the kernel each pass: a process predicting ten 3,243-image splits
# with LeNet-5 took 0.52× the wall time at 64 (whole-process medians), outputs the same to the bit.
# A GPU wants large batches.
EVAL_BATCH_SIZES = {"cpu": 64, "cuda": 512}


def pick_device(requested: str) -> torch.device:
    """``auto`` takes the GPU when there is one; ``cuda`` without one is an error, not a fallback."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device is cuda but no CUDA device is available (use auto or cpu)")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``: on a GPU through pinned memory with an asynchronous copy (the
    host goes on to the next batch while the copy runs); on CPU the tensor itself, untouched."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 0-255 → float32 0-1."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


def head_softmax(logits: torch.Tensor, head_sizes: Sequence[int] = ()) -> torch.Tensor:
    """Probabilities: a softmax over all the logits, or over each head's slice for several heads."""
    if len(head_sizes) <= 1:
        return torch.softmax(logits, dim=1)
    return torch.cat([torch.softmax(block, dim=1) for block in logits.split(list(head_sizes), dim=1)], dim=1)


def probabilities(logits: torch.Tensor, head_sizes: Sequence[int] = (), multilabel: bool = False) -> torch.Tensor:
    """What the outputs mean: each label's sigmoid for a multi-label target, else :func:`head_softmax`."""
    return torch.sigmoid(logits) if multilabel else head_softmax(logits, head_sizes)


def dihedral_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """The batch under the 8 flips and 90° rotations of a square (4 flips when not square): nuclei
    have no preferred orientation, so each view is as plausible as the image itself."""
    if batch.shape[-1] != batch.shape[-2]:
        return [batch, batch.flip(-1), batch.flip(-2), batch.flip(-1, -2)]
    turned = [torch.rot90(batch, k, dims=(-2, -1)) for k in range(4)]
    return [view for image in turned for view in (image, image.flip(-1))]


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, device: torch.device, head_sizes: Sequence[int] = (),
                  multilabel: bool = False, tta: bool = False) -> np.ndarray:
    """Class probabilities for every image of a split, in order (see :func:`probabilities`); with
    ``tta`` (test-time augmentation, ``train.tta``) the mean over the :func:`dihedral_views`."""
    model.eval()

    def proba(batch: torch.Tensor) -> torch.Tensor:
        if not tta:
            return probabilities(model(batch), head_sizes, multilabel)
        views = dihedral_views(batch)
        return torch.stack([probabilities(model(view), head_sizes, multilabel) for view in views]).mean(dim=0)

    return _in_batches(proba, images, device)


def last_linear(model: nn.Module) -> nn.Linear:
    """The network's last linear layer: its input is the network's own description of a nucleus."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1]


@contextmanager
def last_linear_inputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """A list that, while the context is open, receives what the last linear layer reads on each forward pass."""
    seen: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0]))
    try:
        yield seen
    finally:
        hook.remove()


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """What the network's last linear layer reads for every image of a split, in order (N × its
    ``in_features``): the CNN's own description of a nucleus, which a fused model reads beside the
    foci features (bps/classical/families.py)."""
    model.eval()
    with last_linear_inputs(model) as seen:
        def features(batch: torch.Tensor) -> torch.Tensor:
            model(batch)
            return seen.pop()

        return _in_batches(features, images, device)


def _in_batches(run: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device) -> np.ndarray:
    """``run`` over the images in evaluation batches (uint8 → float on ``device``), rows concatenated."""
    step = EVAL_BATCH_SIZES.get(device.type, EVAL_BATCH_SIZES["cpu"])
    chunks = [
        run(to_device(to_float(np.array(images[start : start + step])), device)).float().cpu().numpy()
        for start in range(0, len(images), step)
    ]
    return np.concatenate(chunks) if chunks else np.empty((0, 0), dtype=np.float32)
