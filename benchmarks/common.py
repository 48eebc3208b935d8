"""What every benchmark shares: result rows, timing, generated TIFFs and a loopback S3 server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bps.sim.render import plan_dataset, write_images


@dataclass
class Row:
    name: str
    value: float
    unit: str
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def timed(action: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def best_of_each(actions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each action, taken in turns so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            times[name].append(timed(action))
    return {name: min(runs) for name, runs in times.items()}


def simulated_tiffs(folder: Path, count: int) -> pd.DataFrame:
    """``count`` simulated BPS TIFFs in ``folder`` (spread over all 17 conditions)."""
    per_condition = -(-count // 17)
    table = plan_dataset(per_condition, [4, 24, 48], seed=0).head(count)
    write_images(folder, table, seed=0, workers=2)
    return table


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def loopback_s3() -> Iterator[str]:
    """A real S3 server (moto's server mode) on 127.0.0.1, in its own process; yields its URL.

    Its own process, so that the server's work does not share the benchmark's interpreter lock.
    """
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
