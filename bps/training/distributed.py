"""Data-parallel CNN training across processes and machines, through PyTorch's own launcher.

``python -m stages.train_lenet`` with ``train.processes: 1`` runs exactly as it always did: no
process group, no wrapper. With ``train.processes: N > 1`` the stage starts itself again under
``torchrun --standalone --nproc_per_node=N`` (so ``dvc.yaml``'s command never changes and DVC
records the parameter); ``torchrun`` run by hand, across several machines too, works the same.

Every process draws the same shuffled order from the same seed and trains on its rows of each
batch (:class:`bps.training.batches.Shard`); gradients are summed across processes, as the loss is summed
over a batch, so a step sees exactly the one-process batch's gradient up to the order of float
additions. Validation is over the whole split: each process predicts a slice and all of them
gather the slices. Rank 0 alone writes checkpoints and dvclive metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bps.core.errors import PipelineError
from bps.core.stage import LOCK_HELD_BY_PARENT, die_with_parent
from bps.core.workers import usable_cores
from bps.models.inference import predict_proba
from bps.training.batches import Shard
from bps.training.heads import TrainingHead


@dataclass(frozen=True)
class World:
    """This process's place among those training together (torchrun's environment variables)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    launched: bool = False  # started by torchrun (or another launcher setting WORLD_SIZE)

    @classmethod
    def from_env(cls) -> World:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   "WORLD_SIZE" in env)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard | None:
        return Shard(self.rank, self.size) if self.size > 1 else None


def relaunch_under_torchrun(processes: int, module: str, args: list[str] | None = None) -> None:
    """Run ``python -m module [args]`` in ``processes`` local processes under torchrun, and wait.

    ``--standalone`` picks a free local rendezvous port, so two runs never collide. Each process
    gets an equal share of the cores unless OMP_NUM_THREADS says otherwise.
    """
    threads = max(1, usable_cores() // processes)
    env = {"OMP_NUM_THREADS": str(threads), **os.environ, LOCK_HELD_BY_PARENT: "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", module, *(args or [])]
    print(f"train.processes is {processes}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    code = subprocess.run(command, env=env, preexec_fn=die_with_parent).returncode  # torchrun dies with us too
    if code:
        raise PipelineError(f"{module}: {processes} processes under torchrun failed (exit {code}); "
                            "the first failing rank's error is above")


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[torch.device]:
    """Join the launcher's process group for the block (gloo on CPU, NCCL on GPUs, one GPU per
    local process); yields this process's device. A world of one joins nothing."""
    if world.size == 1:
        yield device
        return
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        if local > torch.cuda.device_count():
            raise PipelineError(f"{local} processes per machine but {torch.cuda.device_count()} CUDA devices: "
                                "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _allreduce_sum(state, bucket):  # unannotated: DDP rejects string annotations (this module's __future__)
    """DDP's default hook without its division by the world size: the loss is a sum over the batch."""
    del state
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda done: done.value()[0])


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The model DistributedDataParallel-wrapped with summed gradients; itself in a world of one."""
    if world.size == 1:
        return model
    wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    wrapped.register_comm_hook(None, _allreduce_sum)
    return wrapped


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper and a training-only head (what checkpoints hold)."""
    while isinstance(model, (DistributedDataParallel, TrainingHead)):
        model = model.module
    return model


def predict_whole_split(model: nn.Module, images: np.ndarray, device: torch.device, world: World,
                        head_sizes: tuple[int, ...] = (), multilabel: bool = False) -> np.ndarray:
    """Every image's output probabilities (per head: ``head_sizes``; per label: ``multilabel``), in
    order, on every process: each predicts a slice.

    Buffers (BatchNorm statistics) are first taken from rank 0, so all slices come from one model.
    """
    network = unwrap(model)
    if world.size == 1:
        return predict_proba(network, images, device, head_sizes, multilabel)
    for buffer in network.buffers():
        dist.broadcast(buffer, 0)
    bounds = np.linspace(0, len(images), world.size + 1).astype(int)
    mine = predict_proba(network, images[bounds[world.rank] : bounds[world.rank + 1]], device, head_sizes,
                         multilabel)
    parts: list[np.ndarray | None] = [None] * world.size
    dist.all_gather_object(parts, mine)
    return np.concatenate([part for part in parts if part is not None and len(part)])


def sum_over_ranks(value: float, world: World, device: torch.device) -> float:
    """The sum of each process's ``value`` (e.g. its part of the mean training loss)."""
    if world.size == 1:
        return value
    total = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item()


class SilentLive:
    """The dvclive logger of ranks other than 0: accepts everything, writes nothing."""

    def __init__(self) -> None:
        self.summary: dict = {}

    def __enter__(self) -> SilentLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log_params(self, params: dict) -> None:
        del params

    def log_metric(self, name: str, value: float) -> None:
        del name, value

    def next_step(self) -> None:
        return None
