"""bps.evaluation.experiments on the `dvc exp show --json` of a real, tiny DVC project with queued
seeds (slow), and the plate-drift stress test's grouping and intervals on the same JSON's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from dvclive import Live

from bps.evaluation.experiments import (
    committed,
    experiments,
    grouped,
    kept_epoch_scores,
    print_rows,
    print_stress,
    row_name,
    seed_table,
    spread,
    stress,
    varied_params,
    where,
)
from tests.support.dvc_project import PROJECT_ROOT, dvc, git, isolated_env

FAKE_TRAIN = """\
import json, pathlib, yaml
seed = yaml.safe_load(open("params.yaml"))["train"]["seed"]
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"lenet": {"accuracy": 0.6 + seed / 100, "protocol": "grouped by well",
                     "control": {"leakage": seed / 50}}}, open("metrics/evaluate.json", "w"))
"""


@pytest.fixture(scope="module")
def shown(tmp_path_factory) -> list[dict]:
    """`dvc exp show --json` after three queued experiments (seeds 1-3) ran."""
    base = tmp_path_factory.mktemp("exp-summary")
    env = isolated_env(base / "sandbox")
    repo = base / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(FAKE_TRAIN)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"seed": 0, "lr": 0.001}}))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": "python train.py", "deps": ["train.py"], "params": ["train"],
        "metrics": [{"metrics/evaluate.json": {"cache": False}}]}}}))
    git(repo, env, "init", "-q")
    dvc(repo, env, "init", "-q")
    dvc(repo, env, "repro")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "seed 0")
    dvc(repo, env, "exp", "run", "--queue", "-S", "train.seed=range(1,4)")  # the README's queued command
    dvc(repo, env, "exp", "run", "--run-all", "-j", "1")
    (base / "shown.json").write_text(dvc(repo, env, "exp", "show", "--json").stdout)
    return json.loads((base / "shown.json").read_text())


@pytest.mark.slow
def test_every_queued_experiment_is_read_once_with_its_seed(shown):
    found = experiments(shown, "metrics/evaluate.json")
    assert sorted(e["params"]["train.seed"] for e in found) == [1, 2, 3]
    assert varied_params(found) == {"train.seed": [e["params"]["train.seed"] for e in found]}
    rows = {row["metric"]: row for row in spread(found)}
    assert set(rows) == {"lenet.accuracy", "lenet.control.leakage"}  # the protocol string is not a number
    assert rows["lenet.accuracy"]["n"] == 3
    assert rows["lenet.accuracy"]["mean"] == pytest.approx(0.62)
    assert rows["lenet.accuracy"]["sd"] == pytest.approx(0.01)  # SD of 0.61, 0.62, 0.63 with n − 1
    assert rows["lenet.control.leakage"]["mean"] == pytest.approx(0.04)


@pytest.mark.slow
def test_the_script_prints_mean_and_sd(shown, tmp_path):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    result = subprocess.run([sys.executable, "-m", "bps", "exp-summary", "--json", str(saved),
                             "--file", "metrics/evaluate.json", "--metrics", "accuracy"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert "3 experiments" in result.stdout and "train.seed" in result.stdout
    assert "lenet.accuracy" in result.stdout and "0.6200 ± 0.0100" in result.stdout


def _rev(sha: str, params: dict, metrics: dict) -> dict:
    """One experiment's rev as `dvc exp show --json` (DVC 3) writes it."""
    return {"rev": sha, "name": f"exp-{sha}", "error": None, "experiments": None,
            "data": {"rev": sha, "timestamp": "2026-12-02T03:46:32", "meta": {}, "deps": {}, "outs": {},
                     "params": {"params.yaml": {"data": params}},
                     "metrics": {"metrics/headline.json": {"data": metrics}}}}


def _stress_shown() -> list[dict]:
    """Four finished experiments (plate_effect 0 and 0.3, seeds 0 and 1) and one still
    running in the workspace, whose metrics are the workspace's old ones."""
    finished = [{"executor": None, "name": f"exp-{plate}{seed}", "revs": [_rev(f"{plate}{seed}", {
        "seed": seed, "data": {"synthetic": {"plate_effect": plate}, "hours": [4, 24, 48]},
        "split": {"protocol": "leave_hour_out"}, "preprocess": {"normalize": "fixed"}},
        {"lenet": {"sham": 0.5 + plate + seed / 10}})]} for plate in (0, 0.3) for seed in (0, 1)]
    running = {"executor": {"state": "running", "name": "workspace", "local": {"pid": 1}}, "name": "busy",
               "revs": [_rev("workspace", {"seed": 2, "data": {"synthetic": {"plate_effect": 0.3}}},
                             {"lenet": {"sham": 0.0}})]}
    return [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
            {"rev": "885e831", "name": "main", "data": {}, "experiments": [running, *finished]}]


def _evaluation(sham: float, control: float) -> dict:
    """The slice of metrics/evaluate.json the stress test reads, with ±0.1 intervals."""
    def scored(key: str, value: float) -> dict:
        return {key: value, f"{key}_ci95_low": value - 0.1, f"{key}_ci95_high": value + 0.1}

    return {"lenet": {**scored("irradiated_accuracy", 0.7), **scored("sham_accuracy", sham),
                      "control": scored("accuracy", control)}, "paired": {"lenet_vs_foci": {"p": 0.5}}}


def test_running_experiments_are_left_out_and_params_keep_their_names():
    found = experiments(_stress_shown(), "metrics/headline.json")
    assert [e["rev"] for e in found] == ["00", "01", "0.30", "0.31"]  # not the one running in the workspace
    assert found[0]["params"]["preprocess.normalize"] == "fixed" and found[0]["params"]["data.hours"] == (4, 24, 48)
    groups = grouped(found, ["data.synthetic.plate_effect"])
    assert {key: [e["rev"] for e in group] for key, group in groups.items()} == {(0,): ["00", "01"],
                                                                                (0.3,): ["0.30", "0.31"]}
    assert varied_params(groups[(0.3,)]) == {"seed": [0, 1]}


def test_stress_counts_the_seeds_whose_interval_holds_chance():
    (row,) = stress([_evaluation(sham=0.5, control=0.45), _evaluation(sham=0.8, control=0.55)])
    assert row["model"] == "lenet" and row["n"] == 2
    assert row["irradiated"] == pytest.approx((0.7, 0.0))
    assert row["sham"][0] == pytest.approx(0.65) and row["sham_holds_chance"] == 1  # 0.8 ± 0.1 misses 0.5
    assert row["control"][0] == pytest.approx(0.5) and row["control_holds_chance"] == 2


def test_a_model_only_later_experiments_scored_is_summarised_over_those():
    older = _evaluation(sham=0.5, control=0.45)
    newer = {**_evaluation(sham=0.6, control=0.5), "hybrid": _evaluation(sham=0.7, control=0.5)["lenet"]}
    rows = {row["model"]: row for row in stress([older, newer, newer])}
    assert rows["lenet"]["n"] == 3 and rows["hybrid"]["n"] == 2
    assert rows["hybrid"]["sham"] == pytest.approx((0.7, 0.0))


def test_the_stress_table_reads_each_experiments_evaluation(capsys):
    found = experiments(_stress_shown(), "metrics/headline.json")
    evaluations = {e["rev"]: _evaluation(e["metrics"]["lenet.sham"], 0.5) for e in found}
    print_stress(grouped(found, ["data.synthetic.plate_effect"]), ["data.synthetic.plate_effect"], evaluations.get)
    printed = capsys.readouterr().out
    assert "data.synthetic.plate_effect=0.3: 2 experiments (seed = [0, 1])" in printed
    assert "0.850 ± 0.071   0/2" in printed  # sham 0.8 and 0.9 (± 0.1): no interval holds 0.5


def test_the_rows_of_the_trained_network_name_it_when_it_is_not_lenet():
    lenet, cnn = {"params": {"train.model": "lenet"}}, {"params": {"train.model": "cnn"}}
    assert row_name("lenet", [lenet, lenet]) == "lenet" and row_name("hybrid", [lenet]) == "hybrid"
    assert row_name("lenet", [cnn, cnn]) == "lenet (cnn)" and row_name("hybrid", [cnn]) == "hybrid (cnn)"
    assert row_name("foci", [cnn]) == "foci"
    assert row_name("lenet", [lenet, cnn]) == "lenet (cnn/lenet)"


def test_where_keeps_the_experiments_with_those_param_values():
    found = experiments(_stress_shown(), "metrics/headline.json")
    assert [e["rev"] for e in where(found, ["data.synthetic.plate_effect=0.3"])] == ["0.30", "0.31"]
    assert [e["rev"] for e in where(found, ["data.synthetic.plate_effect=0", "seed=1"])] == ["01"]
    assert [e["rev"] for e in where(found, ["data.hours=[4, 24, 48]", "preprocess.normalize=fixed"])] == [
        "00", "01", "0.30", "0.31"]
    assert where(found, ["preprocess.normalize=percentile"]) == []
    with pytest.raises(ValueError, match="expected PARAM=VALUE"):
        where(found, ["data.synthetic.plate_effect"])


def test_the_script_names_a_filter_that_left_too_few(tmp_path):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(_stress_shown()))
    command = [sys.executable, "-m", "bps", "exp-summary", "--json", str(saved)]
    result = subprocess.run([*command, "--where", "seed=1", "--where", "data.synthetic.plate_effect=0"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 finished experiment(s) with "
                                                             "metrics/headline.json matching --where seed=1 "
                                                             "data.synthetic.plate_effect=0")
    result = subprocess.run([*command, "--where", "seed"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "expected PARAM=VALUE" in result.stderr
    one = subprocess.run([*command, "--rows", "--where", "seed=1", "--where", "data.synthetic.plate_effect=0"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert one.returncode == 0 and len(one.stdout.strip().splitlines()) == 2  # --rows: a header and its one row
    none = subprocess.run([*command, "--rows", "--where", "seed=9"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert none.returncode == 1 and "error: 0 finished experiment(s)" in none.stderr and "at least 1" in none.stderr


def test_without_dvc_on_the_path_the_script_says_so_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bps", "exp-summary"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: exp-summary reads `dvc exp show --json`, and dvc is not on PATH "
                                     "(activate the project's virtual environment)")


def test_one_row_per_experiment_holds_its_kept_epochs_validation_and_test_figures(capsys):
    found = where(experiments(_stress_shown(), "metrics/headline.json"), ["data.synthetic.plate_effect=0.3"])
    pair = {"accuracy_difference": 0.012, "accuracy_difference_ci95_low": -0.004,
            "accuracy_difference_ci95_high": 0.03}
    fused = {"accuracy_difference": -0.02, "accuracy_difference_ci95_low": -0.03,  # foci − fusion
             "accuracy_difference_ci95_high": -0.01,
             "auc_difference": 0.005, "auc_difference_ci95_low": -0.002, "auc_difference_ci95_high": 0.011}
    tested = {**_evaluation(0.5, 0.5), "fusion": {"irradiated_accuracy": 0.7213, "sham_accuracy": 0.5},
              "paired_irradiated": {"lenet_vs_foci": pair, "foci_vs_fusion": fused}}

    def epochs(key: str, kept: float) -> list[dict]:  # a DVCLive .tsv's rows; epoch 4 was kept, epoch 5 was last
        return [{"step": "3", key: "0.5"}, {"step": "4", key: str(kept)}, {"step": "5", key: "0.66"}]

    files = {("0.30", "metrics/lenet/metrics.json"): {"val_macro_f1": 0.66, "val_accuracy": 0.66, "best_epoch": 4},
             ("0.30", "metrics/lenet/plots/metrics/val_macro_f1.tsv"): epochs("val_macro_f1", 0.61),
             ("0.30", "metrics/lenet/plots/metrics/val_accuracy.tsv"): epochs("val_accuracy", 0.62),
             ("0.30", "metrics/evaluate.json"): tested,
             ("0.31", "metrics/evaluate.json"): _evaluation(0.5004, 0.5)}  # no validation file, no fusion
    print_rows(found, lambda rev, path="metrics/evaluate.json": files.get((rev, path)))
    assert capsys.readouterr().out.splitlines() == [
        "experiment,seed,val_macro_f1,val_accuracy,best_epoch,lenet.irradiated,lenet.sham,lenet-foci.irradiated,"
        "lenet-foci.ci95_low,lenet-foci.ci95_high,lenet-foci.auc,lenet-foci.auc_ci95_low,lenet-foci.auc_ci95_high,"
        "fusion.irradiated,fusion.sham,fusion-foci.irradiated,fusion-foci.ci95_low,fusion-foci.ci95_high,"
        "fusion-foci.auc,fusion-foci.auc_ci95_low,fusion-foci.auc_ci95_high",
        "exp-0.30,0,0.61,0.62,4,0.7,0.5,0.012,-0.004,0.03,,,,0.721,0.5,0.02,0.01,0.03,-0.005,-0.011,0.002",
        "exp-0.31,1,,,,0.7,0.5,,,,,,,,,,,,,,",
    ]


def test_a_row_reads_the_kept_epoch_from_the_files_dvclive_wrote_in_a_commit(tmp_path, monkeypatch):
    env = isolated_env(tmp_path / "sandbox")
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # logged as bps.training.loop.fit logs; epoch 1 is kept, epoch 2 is the last
    with Live("metrics/lenet", dvcyaml=None, save_dvc_exp=False) as live:
        for epoch, (f1, accuracy) in enumerate([(0.4, 0.5), (0.7, 0.72), (0.6, 0.65)]):
            live.log_metric("val_macro_f1", f1)
            live.log_metric("val_accuracy", accuracy)
            if epoch == 1:
                live.summary["best_epoch"] = epoch
            live.next_step()
    git(repo, env, "init", "-q")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "one experiment")
    assert committed("HEAD", "metrics/lenet/metrics.json")["val_macro_f1"] == 0.6  # the last epoch's
    assert kept_epoch_scores("HEAD") == {"val_macro_f1": 0.7, "val_accuracy": 0.72, "best_epoch": 1}
    assert committed("HEAD") is None  # no metrics/evaluate.json in this commit
    assert kept_epoch_scores("HEAD~1") == {"val_macro_f1": None, "val_accuracy": None, "best_epoch": None}


def test_the_seed_table_puts_each_variant_on_a_row_and_each_seed_in_a_column(tmp_path):
    header = ("experiment,seed,lenet.sham,lenet-foci.irradiated,lenet-foci.ci95_low,lenet-foci.ci95_high,"
              "lenet-foci.auc,lenet-foci.auc_ci95_low,lenet-foci.auc_ci95_high\n")
    (tmp_path / "a.csv").write_text(header + "fs0-box,0,0.57,0.014,0.002,0.026,,,\n"  # evaluated before the AUC
                                    "fs1-box,1,0.5,-0.024,-0.03,-0.018,0.05,0.019,0.078\n")
    # an older file: no seed column, interval columns without the pair's name; fs1-box again, read once
    (tmp_path / "b.csv").write_text("experiment,lenet.sham,lenet-foci.irradiated,ci95_low,ci95_high\n"
                                    "fs2-wide,0.21,-0.054,-0.138,0.028\nfs1-box,0.9,0.5,0.4,0.6\n")
    command = [sys.executable, "-m", "bps", "exp-summary", "--seeds", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "| variant | seed 0 | seed 1 | seed 2 |",
        "|---|---|---|---|",
        "| box | +0.014 better (sham 0.57) | -0.024 behind, AUC +0.050 better (sham 0.50) |  |",
        "| wide |  |  | -0.054 tie (sham 0.21) |",
    ]
    result = subprocess.run([*command, "--rename", "wide=box"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.stdout.splitlines()[2:] == [
        "| box | +0.014 better (sham 0.57) | -0.024 behind, AUC +0.050 better (sham 0.50) | -0.054 tie (sham 0.21) |"]
    result = subprocess.run([*command, "--rename", "wide"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "expected VARIANT=ROW" in result.stderr


def test_the_seed_table_refuses_a_name_without_its_seed(tmp_path):
    with pytest.raises(ValueError, match="expected a name fs<seed>-<variant>"):
        seed_table([{"experiment": "nucleus", "lenet.sham": "0.5", "lenet-foci.irradiated": "0",
                     "ci95_low": "-1", "ci95_high": "1"}])
    missing = tmp_path / "missing.csv"
    result = subprocess.run([sys.executable, "-m", "bps", "exp-summary", "--seeds", str(missing)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "--seeds:" in result.stderr and "missing.csv" in result.stderr
    missing.write_text("experiment,lenet.sham\nfs0-box,0.5\n")
    result = subprocess.run([sys.executable, "-m", "bps", "exp-summary", "--seeds", str(missing)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "no column 'lenet-foci.irradiated'" in result.stderr
