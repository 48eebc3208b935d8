"""Toy HPA and RxRx1 copies, written once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from bps.data.layouts.toy import write_hpa, write_rxrx1


@pytest.fixture(scope="module")
def hpa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hpa")
    write_hpa(root)
    return root


@pytest.fixture(scope="module")
def rxrx1(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rxrx1")
    write_rxrx1(root)
    return root
