"""scripts/sweep.py: the W&B sweep file expanded offline (grid, random), the trials run as subprocesses
and ranked by the sweep's metric; the real smoke sweep end to end through scripts/train.py."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import sweep

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/sweep.py"

#: a stand-in for scripts/train.py: reports --x as val/score, fails for x == 3, records its environment
FAKE_PROGRAM = """
import json, os, sys
x = float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--x=")))
out = os.environ["CV_COURSE_METRICS_FILE"]
names = ("WANDB_MODE", "WANDB_RUN_GROUP", "WANDB_DIR", "WANDB_NAME")
env = {name: os.environ.get(name) for name in names}
env["cwd"], env["argv"] = os.getcwd(), sys.argv[1:]
json.dump(env, open(os.path.join(os.path.dirname(out), "env.json"), "w"))
if x == 3:
    print("boom: x == 3 is not allowed", file=sys.stderr)
    sys.exit(1)
json.dump({"val/score": x, "train/loss": 1.0 / x}, open(out, "w"))
"""


def write_sweep(tmp_path: Path, config: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fake_sweep(tmp_path: Path, values: list, goal: str = "maximize") -> Path:
    program = tmp_path / "fake_train.py"
    program.write_text(FAKE_PROGRAM)
    return write_sweep(
        tmp_path,
        {
            "program": str(program),
            "method": "grid",
            "metric": {"name": "val/score", "goal": goal},
            "parameters": {"x": {"values": values}, "tag": {"value": "fixed"}},
            "command": ["${env}", "${interpreter}", "${program}", "--fixed=1", "${args}"],
        },
    )


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The leaderboard's data rows (cells stripped), header and separator left out."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_grid_is_the_cartesian_product_with_fixed_values_in_every_trial():
    trials = sweep.expand_grid({"a": {"values": [1, 2]}, "b": {"value": "x"}, "c": {"values": [0.1, 0.2, 0.3]}})
    assert len(trials) == 6
    assert {(t["a"], t["c"]) for t in trials} == {(a, c) for a in (1, 2) for c in (0.1, 0.2, 0.3)}
    assert all(t["b"] == "x" for t in trials)
    assert trials[0] == {"a": 1, "b": "x", "c": 0.1}  # file order: the last parameter varies fastest


def test_grid_run_cap_and_count_limit_the_trials(tmp_path):
    config = sweep.load_sweep(
        write_sweep(
            tmp_path,
            {
                "program": "p.py",
                "method": "grid",
                "metric": {"name": "m"},
                "run_cap": 3,
                "parameters": {"a": {"values": [1, 2, 3, 4, 5]}},
            },
        )
    )
    assert [t["a"] for t in sweep.plan_trials(config, None, 0)] == [1, 2, 3]
    assert [t["a"] for t in sweep.plan_trials(config, 2, 0)] == [1, 2]


def test_random_samples_respect_their_distributions_and_the_seed():
    parameters = {
        "u": {"distribution": "uniform", "min": -1.0, "max": 2.0},
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "e": {"distribution": "log_uniform", "min": 0.0, "max": 1.0},
        "n": {"distribution": "int_uniform", "min": 2, "max": 5},
        "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
        "g": {"distribution": "normal", "mu": 10.0, "sigma": 2.0},
        "c": {"values": ["a", "b"]},
        "k": {"value": 7},
    }
    samples = sweep.sample_random(parameters, 400, seed=1)
    column = {name: [s[name] for s in samples] for name in parameters}
    assert all(-1.0 <= v <= 2.0 for v in column["u"])
    assert all(1e-4 <= v <= 1e-1 for v in column["lr"])
    # log-uniform: each decade equally likely, so the median is near the geometric middle 10^-2.5
    assert 10**-2.8 < statistics.median(column["lr"]) < 10**-2.2
    assert all(1.0 <= v <= math.e for v in column["e"])
    assert set(column["n"]) == {2, 3, 4, 5} and all(isinstance(v, int) for v in column["n"])
    assert set(column["q"]) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert 9.5 < statistics.mean(column["g"]) < 10.5 and 1.5 < statistics.stdev(column["g"]) < 2.5
    assert set(column["c"]) == {"a", "b"} and set(column["k"]) == {7}
    assert sweep.sample_random(parameters, 5, seed=1) == samples[:5]
    assert sweep.sample_random(parameters, 5, seed=2) != samples[:5]


def test_bayes_runs_offline_as_seeded_random_search(tmp_path, capsys):
    config = sweep.load_sweep(
        write_sweep(
            tmp_path,
            {
                "program": "p.py",
                "method": "bayes",
                "metric": {"name": "m", "goal": "maximize"},
                "run_cap": 3,
                "parameters": {"lr": {"distribution": "uniform", "min": 0.0, "max": 1.0}},
            },
        )
    )
    trials = sweep.plan_trials(config, None, seed=0)
    assert len(trials) == 3 and trials == sweep.plan_trials(config, None, seed=0)
    assert "random" in capsys.readouterr().err


def test_command_macros_are_substituted_like_the_wandb_agent():
    params = {"model.init_args.lr": 0.001, "trainer.max_epochs": 3}
    argv = sweep.build_command(
        ["${env}", "${interpreter}", "${program}", "fit", "${args}", "${args_no_hyphens}"], "scripts/train.py", params
    )
    env = ["/usr/bin/env"] if Path("/usr/bin/env").exists() else []
    assert argv == [
        *env,
        sys.executable,
        str(REPO / "scripts/train.py"),
        "fit",
        "--model.init_args.lr=0.001",
        "--trainer.max_epochs=3",
        "model.init_args.lr=0.001",
        "trainer.max_epochs=3",
    ]
    assert sweep.build_command(["${program}"], "/abs/train.py", {}) == ["/abs/train.py"]
    assert json.loads(sweep.build_command(["${args_json}"], "p.py", params)[0]) == params


@pytest.mark.parametrize(
    "change, field, message",
    [
        (
            {"method": "grid", "parameters": {"model.init_args.lr": {"distribution": "uniform", "min": 0, "max": 1}}},
            "parameters.model.init_args.lr",
            "grid needs 'values'",
        ),
        ({"method": "hyperband"}, "method", "one of grid, random, bayes"),
        ({"metric": {"goal": "maximize"}}, "metric", "name"),
        ({"metric": {"name": "m", "goal": "up"}}, "metric.goal", "maximize or minimize"),
        ({"program": None}, "program", "required"),
        ({"parameters": {}}, "parameters", "non-empty"),
        (
            {"parameters": {"a": {"distribution": "beta", "min": 0, "max": 1}}},
            "parameters.a.distribution",
            "unsupported",
        ),
        ({"parameters": {"a": {"distribution": "uniform", "min": 0}}}, "parameters.a", "needs 'max'"),
        ({"parameters": {"a": {"values": []}}}, "parameters.a.values", "non-empty list"),
        ({"parameters": {"a": {"distribution": "log_uniform_values", "min": 0, "max": 1}}}, "parameters.a", "> 0"),
        ({"parameters": {"a": 3}}, "parameters.a", "expected a mapping"),
        ({"run_cap": 0}, "run_cap", "positive integer"),
        ({"command": "python train.py"}, "command", "list of strings"),
    ],
)
def test_sweep_file_errors_name_the_file_and_the_field(tmp_path, change, field, message):
    config = {
        "program": "scripts/train.py",
        "method": "random",
        "metric": {"name": "m", "goal": "maximize"},
        "parameters": {"a": {"values": [1, 2]}},
    }
    config.update(change)
    path = write_sweep(tmp_path, {k: v for k, v in config.items() if v is not None}, "x.yaml")
    with pytest.raises(sweep.SweepError) as error:
        sweep.load_sweep(path)
    assert str(error.value).startswith(f"{path}: {field}: ") and message in str(error.value)


def test_the_cli_reports_a_bad_file_with_its_field_and_exit_2(tmp_path):
    path = write_sweep(
        tmp_path,
        {
            "program": "p.py",
            "method": "grid",
            "metric": {"name": "m"},
            "parameters": {"lr": {"distribution": "uniform", "min": 0, "max": 1}},
        },
    )
    result = run_script(str(path), "--offline", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{path}: parameters.lr: grid needs 'values'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_online_creates_the_sweep_and_runs_parallel_wandb_agents(tmp_path, monkeypatch):
    """Logged in: wandb.sweep(file, project, entity), then P `wandb agent --count ceil(N/P)` in the repo root."""
    import wandb

    created, launched = [], []

    class FakeAgent:
        def __init__(self, argv, cwd):
            launched.append((argv, cwd))

        def wait(self):
            return 1 if len(launched) == 1 else 0  # one agent failing does not fail the sweep

    monkeypatch.setattr(sweep, "is_logged_in", lambda: True)
    monkeypatch.setattr(
        wandb, "sweep", lambda config, project, entity: created.append((config, project, entity)) or "abc123"
    )
    monkeypatch.setattr(sweep.subprocess, "Popen", FakeAgent)
    path = write_sweep(
        tmp_path,
        {
            "program": "scripts/train.py",
            "method": "random",
            "metric": {"name": "m"},
            "run_cap": 5,
            "parameters": {"a": {"values": [1, 2]}},
        },
    )
    assert sweep.main([str(path), "--parallel", "2", "--project", "p", "--entity", "e"]) == 0
    assert created == [(yaml.safe_load(path.read_text()), "p", "e")]
    assert len(launched) == 2 and all(cwd == sweep.REPO_ROOT for _, cwd in launched)
    assert launched[0][0][1:] == ["-m", "wandb", "agent", "--count", "3", "--project", "p", "--entity", "e", "abc123"]
    monkeypatch.setattr(sweep, "run_offline", lambda config, sweep_file, args: 7)
    assert sweep.main([str(path), "--offline"]) == 7 and len(created) == 1  # --offline never touches W&B


@pytest.mark.parametrize("goal, expected", [("maximize", [5, 2, 1, 3]), ("minimize", [1, 2, 5, 3])])
def test_rank_orders_by_the_goal_and_puts_failures_last(goal, expected):
    results = [
        sweep.TrialResult(i, {"x": x}, "ok" if x != 3 else "failed: exit 1", None if x == 3 else float(x), 1.0, "")
        for i, x in enumerate([1, 3, 2, 5])
    ]
    assert [r.params["x"] for r in sweep.rank(results, goal)] == expected


def test_offline_sweep_runs_every_trial_ranks_them_and_reports_the_failed_one(tmp_path):
    out = tmp_path / "out"
    result = run_script(str(fake_sweep(tmp_path, [1, 3, 2, 5])), "--offline", "--parallel", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    # columns: rank, trial, x, tag, val/score, seconds, status
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("1", "trial-3", "5", "5.0000"),
        ("2", "trial-2", "2", "2.0000"),
        ("3", "trial-0", "1", "1.0000"),
        ("-", "trial-1", "3", "-"),
    ]
    assert all(r[3] == "fixed" for r in rows)
    assert rows[3][6] == "failed: exit 1" and all(r[6] == "ok" for r in rows[:3])
    assert "boom: x == 3 is not allowed" in result.stderr  # the failed trial's log tail

    (group_dir,) = out.iterdir()
    assert group_dir.name.startswith("sweep-")
    assert (group_dir / "leaderboard.md").read_text().splitlines()[2:] == [
        line for line in result.stdout.splitlines() if line.startswith("|")
    ][2:]
    board = json.loads((group_dir / "leaderboard.json").read_text())
    assert board["metric"] == "val/score" and board["goal"] == "maximize"
    assert [t["metric"] for t in board["trials"]] == [5.0, 2.0, 1.0, None]
    assert "boom" in (group_dir / "trial-1" / "log.txt").read_text()

    for i in range(4):
        env = json.loads((group_dir / f"trial-{i}" / "env.json").read_text())
        assert env["WANDB_MODE"] == "offline" and env["WANDB_RUN_GROUP"] == group_dir.name
        assert env["WANDB_DIR"] == str(group_dir) and env["WANDB_NAME"] == f"trial-{i}"
        assert env["cwd"] == str(REPO)
        assert env["argv"][0] == "--fixed=1" and "--tag=fixed" in env["argv"]


def test_offline_sweep_fails_when_no_trial_succeeds(tmp_path):
    result = run_script(str(fake_sweep(tmp_path, [3])), "--offline", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "0/1 trials succeeded" in result.stderr


def test_a_trial_without_the_metric_counts_as_failed(tmp_path):
    path = fake_sweep(tmp_path, [1, 2], goal="minimize")
    config = yaml.safe_load(path.read_text())
    config["metric"]["name"] = "val/missing"
    write_sweep(tmp_path, config)
    result = run_script(str(path), "--offline", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert [r[-1] for r in table_rows(result.stdout)] == ["failed: val/missing is None in metrics.json"] * 2


@pytest.mark.slow
def test_smoke_sweep_trains_two_trials_offline_end_to_end(tmp_path):
    """experiments/sweeps/smoke.yaml through scripts/train.py: two FCOS trials, each with an offline W&B run."""
    out = tmp_path / "out"
    result = run_script("experiments/sweeps/smoke.yaml", "--offline", "--out", str(out), timeout=600)
    (group_dir,) = out.iterdir()
    logs = "\n".join((d / "log.txt").read_text()[-3000:] for d in sorted(group_dir.glob("trial-*")))
    assert result.returncode == 0, result.stderr[-3000:] + logs
    rows = table_rows(result.stdout)
    assert len(rows) == 2 and {r[2] for r in rows} == {"0.01", "0.02"}
    for i in range(2):
        metrics = json.loads((group_dir / f"trial-{i}" / "metrics.json").read_text())
        assert 0.0 <= metrics["val/voc07/mAP"] <= 1.0
    runs = sorted((group_dir / "wandb").glob("offline-run-*"))  # train.py honours WANDB_DIR
    assert len(runs) == 2, sorted(p.name for p in group_dir.rglob("*"))[:50]
    assert all(list(run.glob("run-*.wandb")) for run in runs)
