"""The scikit-learn stages stay light: they never import torch (~500 MB and seconds of start-up).

Each runs in a fresh interpreter: the stage's whole import closure, then what the stages do
lazily (saving a scikit-learn model and loading it back, through skops), then a look at
sys.modules. skops lists its trusted types by walking every scikit-learn package, one of which
imports torch when it is installed (bps/models/sklearn_io.py keeps it out).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The stages that fit or compute with scikit-learn, numpy and scipy only: preprocess (which computes
# the classical features), train-baseline (and its control), train-appearance and train-foci.
LIGHT_STAGES = ("stages.preprocess", "stages.train_baseline", "stages.train_classical")
RUN = """
import importlib, json, sys
from pathlib import Path
import numpy as np
from sklearn.linear_model import LogisticRegression
from bps.core.params import PreprocessParams
from bps.models import sklearn_io
from bps.models.card import ModelCard
importlib.import_module(sys.argv[1])
folder, x = Path(sys.argv[2]), np.eye(4)
model = LogisticRegression().fit(x, [0, 1, 0, 1])
card = ModelCard(kind="classical", architecture="foci", target="particle", classes=["Fe", "X-ray"],
                 preprocess=PreprocessParams(), training={})
sklearn_io.save(folder, model, card)
same = bool(np.array_equal(sklearn_io.load(folder).predict_proba(x), model.predict_proba(x)))
print(json.dumps({"torch": sorted(name for name in sys.modules if name.partition(".")[0] == "torch"), "same": same}))
"""

pytestmark = pytest.mark.slow  # a fresh interpreter per stage: seconds each


@pytest.mark.parametrize("stage", LIGHT_STAGES)
def test_a_light_stage_and_its_model_files_import_no_torch(stage, tmp_path):
    done = subprocess.run([sys.executable, "-c", RUN, stage, str(tmp_path / "model")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"torch": [], "same": True}


def test_torch_stays_importable_after_skops_was_imported_without_it():
    code = ("import sys; from bps.models import sklearn_io; sklearn_io._skops_io(); import torch; "
            "print(torch.ones(2).sum().item(), sys.meta_path[0].__class__.__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "2.0" and done.stdout.split()[1] != "_NoTorch"
