"""Data-parallel training: shards that make up the one-process batches, and torchrun end to end.

The slow tests start real processes with torchrun (gloo backend, CPU) in a copy of the tiny
reproduced project from test_pipeline_dvc.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from bps.training.batches import RandomAugment, Shard, iterate_batches
from bps.training.distributed import World
from tests.support.dvc_project import copy_project, dvc, read_json, reproduced_project, run


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 1, 16, 16), dtype=np.uint8)


def _epoch(images, labels, shard: Shard | None, weights=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    augment = RandomAugment(generator, pad=2)
    return list(iterate_batches(images, labels, 10, generator, augment, weights, shard))


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_shards_are_the_one_process_batches_split_augmentation_included(size, weighted):
    count = 52  # 5 batches of 10 and a last one of 2, which joins the one before for 3 processes
    images, labels = _images(count), np.arange(count, dtype=np.int64)
    weights = np.linspace(1, 2, count) if weighted else None
    whole = _epoch(images, labels, None, weights)
    parts = [_epoch(images, labels, Shard(rank, size), weights) for rank in range(size)]
    assert all(len(part) == len(parts[0]) for part in parts)  # every process takes as many steps
    if size == 3:
        whole = [*whole[:-2], (torch.cat([whole[-2][0], whole[-1][0]]), torch.cat([whole[-2][1], whole[-1][1]]))]
    for step, (batch, target) in enumerate(whole):
        if size == 3 and step == len(whole) - 1:  # the merged batch is re-sorted: compare as sets of labels
            assert sorted(torch.cat([part[step][1] for part in parts]).tolist()) == sorted(target.tolist())
            continue
        for rank in range(size):
            torch.testing.assert_close(parts[rank][step][0], batch[rank::size], rtol=0, atol=0)
            torch.testing.assert_close(parts[rank][step][1], target[rank::size], rtol=0, atol=0)


def test_a_plain_process_is_a_world_of_one(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    world = World.from_env()
    assert (world.rank, world.size, world.launched, world.is_main, world.shard) == (0, 1, False, True, None)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert World.from_env().shard == Shard(1, 2) and not World.from_env().is_main


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_the_pipelines_cnn_like_one_process(tmp_path_factory, tmp_path):
    """The documented command, then train.processes: 2 through dvc: one model folder, rank 0's
    metrics, the same result twice for the same world size, and close to one process."""
    built = reproduced_project(tmp_path_factory)
    env = {**built.env, "OMP_NUM_THREADS": "1"}
    one = read_json(built.root / "metrics/lenet/metrics.json")

    by_hand = copy_project(built.root, tmp_path / "by-hand")
    run(["torchrun", "--standalone", "--nproc_per_node=2", "-m", "stages.train_lenet"], by_hand, env)
    folders = sorted(path.name for path in (by_hand / "models").iterdir() if path.is_dir())
    assert folders == sorted(path.name for path in (built.root / "models").iterdir() if path.is_dir())  # no new one
    assert sorted(path.name for path in (by_hand / "models/lenet").iterdir()) == ["model.json", "model.pt"]
    config = read_json(by_hand / "models/lenet/model.json")
    assert config["world_size"] == 2
    two = read_json(by_hand / "metrics/lenet/metrics.json")
    # Each step sees the one-process batch's summed gradient; only float addition order differs.
    assert abs(two["val_loss"] - one["val_loss"]) < 0.01, (one, two)
    assert abs(two["val_accuracy"] - one["val_accuracy"]) <= 0.1, (one, two)

    through_dvc = copy_project(built.root, tmp_path / "through-dvc")
    params = yaml.safe_load((through_dvc / "params.yaml").read_text())
    params["train"]["processes"] = 2
    (through_dvc / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro = dvc(through_dvc, env, "repro", "train-lenet")
    assert "torch.distributed.run --standalone --nproc_per_node=2" in repro.stdout + repro.stderr
    assert (through_dvc / "models/lenet/model.pt").read_bytes() == (by_hand / "models/lenet/model.pt").read_bytes()
    assert read_json(through_dvc / "metrics/lenet/metrics.json") == two
