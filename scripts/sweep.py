#!/usr/bin/env python
"""Run a hyperparameter sweep written in W&B's sweep format, on W&B or offline on this machine.

    python scripts/sweep.py experiments/sweeps/smoke.yaml                # offline unless logged in to W&B
    python scripts/sweep.py experiments/sweeps/retinanet_lr.yaml --count 8 --parallel 2 --offline

Logged in (``wandb login``) and without ``--offline``, the sweep is created on W&B and ``wandb agent``
processes run it, so W&B's own search (bayes, early termination) and the file's ``command`` apply.
Offline, the same file is expanded here (grid: every combination; random and bayes: seeded random
samples), each trial runs as a subprocess with the command's macros substituted, and a leaderboard
ranks the trials by the sweep's metric, read from the JSON file that scripts/train.py writes to
$CV_COURSE_METRICS_FILE. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS_FILE_ENV = "CV_COURSE_METRICS_FILE"  # the contract with scripts/train.py
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default
DEFAULT_RANDOM_TRIALS = 4
LOG_TAIL_LINES = 15

#: distribution -> (required keys, sampler); the formulas follow W&B's definitions
SAMPLERS: dict[str, tuple[tuple[str, ...], Callable[[random.Random, dict], Any]]] = {
    "constant": (("value",), lambda rng, p: p["value"]),
    "categorical": (("values",), lambda rng, p: rng.choices(p["values"], weights=p.get("probabilities"))[0]),
    "int_uniform": (("min", "max"), lambda rng, p: rng.randint(int(p["min"]), int(p["max"]))),
    "uniform": (("min", "max"), lambda rng, p: rng.uniform(p["min"], p["max"])),
    "q_uniform": (
        ("min", "max"),
        lambda rng, p: round(rng.uniform(p["min"], p["max"]) / p.get("q", 1)) * p.get("q", 1),
    ),
    "log_uniform": (("min", "max"), lambda rng, p: math.exp(rng.uniform(p["min"], p["max"]))),  # min, max: exponents
    "log_uniform_values": (
        ("min", "max"),
        lambda rng, p: math.exp(rng.uniform(math.log(p["min"]), math.log(p["max"]))),
    ),
    "normal": ((), lambda rng, p: rng.gauss(p.get("mu", 0.0), p.get("sigma", 1.0))),
}


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the field."""


@dataclass
class TrialResult:
    index: int
    params: dict[str, Any]
    status: str  # "ok" or "failed: <why>"
    metric: float | None
    seconds: float
    log: str


def distribution_of(spec: dict) -> str:
    """The spec's distribution, inferred as W&B does when the file leaves it out."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform"


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep file, so that a typo fails before any trial starts."""

    def fail(field: str, message: str) -> SweepError:
        return SweepError(f"{path}: {field}: {message}")

    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SweepError(f"{path}: {error}") from error
    if not isinstance(config, dict):
        raise fail("(top level)", "expected a mapping")
    if not isinstance(config.get("program"), str):
        raise fail("program", "required (the script the command runs, e.g. scripts/train.py)")
    if config.get("method") not in ("grid", "random", "bayes"):
        raise fail("method", f"one of grid, random, bayes, got {config.get('method')!r}")
    metric = config.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise fail("metric", "needs {name: <logged metric>, goal: maximize|minimize} to rank the trials")
    if metric.get("goal", "minimize") not in ("maximize", "minimize"):
        raise fail("metric.goal", f"maximize or minimize, got {metric.get('goal')!r}")
    run_cap = config.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise fail("run_cap", f"a positive integer, got {run_cap!r}")
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(token, str) for token in command):
        raise fail("command", "a list of strings")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise fail("parameters", "a non-empty mapping of dotted CLI keys to specs")
    for name, spec in parameters.items():
        field = f"parameters.{name}"
        if not isinstance(spec, dict):
            raise fail(field, "expected a mapping (value, values, or distribution with its arguments)")
        if "parameters" in spec:
            raise fail(field, "nested parameters are not supported; use dotted keys (model.init_args.lr)")
        kind = distribution_of(spec)
        if kind not in SAMPLERS:
            raise fail(f"{field}.distribution", f"unsupported {kind!r}; one of {', '.join(SAMPLERS)}")
        missing = [key for key in SAMPLERS[kind][0] if key not in spec]
        if missing:
            raise fail(field, f"distribution {kind} needs {', '.join(map(repr, missing))}")
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            raise fail(f"{field}.values", "a non-empty list")
        if kind == "log_uniform_values" and min(spec["min"], spec["max"]) <= 0:
            raise fail(field, "log_uniform_values needs min and max > 0")
        if config["method"] == "grid" and kind not in ("constant", "categorical"):
            raise fail(field, "grid needs 'values' (or a fixed 'value')")
    return config


def expand_grid(parameters: dict[str, dict]) -> list[dict[str, Any]]:
    """Every combination of the ``values`` lists, in file order; a ``value`` is the same in all."""
    names = list(parameters)
    choices = [[spec["value"]] if "value" in spec else list(spec["values"]) for spec in parameters.values()]
    return [dict(zip(names, combination)) for combination in itertools.product(*choices)]


def sample_random(parameters: dict[str, dict], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` independent draws from each parameter's distribution; the same seed gives the same trials."""
    rng = random.Random(seed)
    return [
        {name: SAMPLERS[distribution_of(spec)][1](rng, spec) for name, spec in parameters.items()} for _ in range(count)
    ]


def build_command(command: list[str], program: str, params: dict[str, Any]) -> list[str]:
    """Substitute W&B's command macros as its agent does, with ``${program}`` made absolute (repo root)."""
    program_path = Path(program) if Path(program).is_absolute() else REPO_ROOT / program
    expansions = {
        "${env}": ["/usr/bin/env"] if Path("/usr/bin/env").exists() else [],
        "${interpreter}": [sys.executable],
        "${program}": [str(program_path)],
        "${args}": [f"--{key}={value}" for key, value in params.items()],
        "${args_no_hyphens}": [f"{key}={value}" for key, value in params.items()],
        "${args_json}": [json.dumps(params)],
    }
    argv: list[str] = []
    for token in command:
        argv += expansions.get(token, [token])
    return argv


def plan_trials(config: dict[str, Any], count: int | None, seed: int) -> list[dict[str, Any]]:
    """The offline trials: grid (capped by --count / run_cap), else random samples; bayes runs as random."""
    limit = count or config.get("run_cap")
    if "early_terminate" in config:
        print("note: early_terminate needs the W&B server; offline every trial runs to the end", file=sys.stderr)
    if config["method"] == "grid":
        return expand_grid(config["parameters"])[:limit]
    if config["method"] == "bayes":
        print("note: bayes search needs the W&B server; offline it runs as random search", file=sys.stderr)
    return sample_random(config["parameters"], limit or DEFAULT_RANDOM_TRIALS, seed)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_trial(index: int, params: dict[str, Any], config: dict[str, Any], group_dir: Path) -> TrialResult:
    """One trial as a subprocess in the repo root; its metric comes from the metrics file it writes."""
    trial_dir = group_dir / f"trial-{index}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    metrics_file, log_file = trial_dir / "metrics.json", trial_dir / "log.txt"
    env = dict(
        os.environ,
        WANDB_MODE="offline",
        WANDB_RUN_GROUP=group_dir.name,
        WANDB_DIR=str(group_dir),
        WANDB_NAME=f"trial-{index}",
        **{METRICS_FILE_ENV: str(metrics_file)},
    )
    argv = build_command(config.get("command", DEFAULT_COMMAND), config["program"], params)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        returncode = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    metric_name, metric = config["metric"]["name"], None
    if returncode != 0:
        status = f"failed: exit {returncode}"
    elif not metrics_file.exists():
        status = f"failed: no {metrics_file.name} (${METRICS_FILE_ENV} not written)"
    else:
        value = json.loads(metrics_file.read_text()).get(metric_name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            status, metric = "ok", float(value)
        else:
            status = f"failed: {metric_name} is {value!r} in {metrics_file.name}"
    return TrialResult(index, params, status, metric, seconds, str(log_file))


def rank(results: list[TrialResult], goal: str) -> list[TrialResult]:
    """Successful trials best first by the metric, then the failed ones in trial order."""
    sign = -1.0 if goal == "maximize" else 1.0
    succeeded = sorted((r for r in results if r.metric is not None), key=lambda r: (sign * r.metric, r.index))
    return succeeded + sorted((r for r in results if r.metric is None), key=lambda r: r.index)


def format_value(value: Any) -> str:
    """Sampled floats to 4 significant digits, so that the table stays readable (the JSON keeps them all)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def leaderboard_markdown(ranked: list[TrialResult], parameter_names: list[str], metric_name: str) -> str:
    header = ["rank", "trial", *parameter_names, metric_name, "seconds", "status"]
    rows = [header, ["---"] * len(header)]
    for position, result in enumerate(ranked, start=1):
        metric = "-" if result.metric is None else f"{result.metric:.4f}"
        rows.append(
            [
                str(position) if result.metric is not None else "-",
                f"trial-{result.index}",
                *(format_value(result.params.get(name)) for name in parameter_names),
                metric,
                f"{result.seconds:.1f}",
                result.status,
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def new_group_dir(out: Path, group: str) -> Path:
    """A fresh folder for this sweep's trials (W&B's run group), never one of an earlier sweep."""
    for suffix in itertools.count():
        candidate = (out / (group if suffix == 0 else f"{group}-{suffix}")).resolve()
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def run_offline(config: dict[str, Any], sweep_file: Path, args: argparse.Namespace) -> int:
    trials = plan_trials(config, args.count, args.seed)
    group_dir = new_group_dir(args.out, f"{config.get('name') or sweep_file.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    group = group_dir.name
    print(f"offline sweep {group}: {len(trials)} trials, {args.parallel} at a time, in {group_dir}", file=sys.stderr)
    from tqdm import tqdm

    results: list[TrialResult] = []
    with (
        ThreadPoolExecutor(max_workers=args.parallel) as pool,
        tqdm(total=len(trials), desc=group, unit="trial", file=sys.stderr) as bar,
    ):
        futures = [pool.submit(run_trial, i, params, config, group_dir) for i, params in enumerate(trials)]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            bar.update(1)
            bar.write(
                f"trial-{result.index} {result.params}: {result.status} ({result.seconds:.1f} s)", file=sys.stderr
            )
            if result.metric is None:
                bar.write(f"--- last lines of {result.log} ---\n{log_tail(Path(result.log))}", file=sys.stderr)
    metric, goal = config["metric"]["name"], config["metric"].get("goal", "minimize")
    ranked = rank(results, goal)
    table = leaderboard_markdown(ranked, list(config["parameters"]), metric)
    (group_dir / "leaderboard.md").write_text(table)
    (group_dir / "leaderboard.json").write_text(
        json.dumps(
            {
                "sweep": str(sweep_file),
                "group": group,
                "metric": metric,
                "goal": goal,
                "trials": [asdict(r) for r in ranked],
            },
            indent=2,
        )
    )
    print(table)
    succeeded = sum(r.metric is not None for r in results)
    print(
        f"{succeeded}/{len(results)} trials succeeded; leaderboard in {group_dir / 'leaderboard.md'}", file=sys.stderr
    )
    return 0 if succeeded else 1


def run_online(config: dict[str, Any], args: argparse.Namespace) -> int:
    """Create the sweep on W&B and run ``wandb agent`` processes (the CLI honours the file's ``command``)."""
    import wandb

    sweep_id = wandb.sweep(config, project=args.project, entity=args.entity)
    total = args.count or (None if config["method"] == "grid" else config.get("run_cap") or DEFAULT_RANDOM_TRIALS)
    per_agent = [] if total is None else ["--count", str(math.ceil(total / args.parallel))]
    where = ["--project", args.project] + (["--entity", args.entity] if args.entity else [])
    argv = [sys.executable, "-m", "wandb", "agent", *per_agent, *where, sweep_id]
    print(f"W&B sweep {sweep_id}: {args.parallel} x {' '.join(argv[1:])}", file=sys.stderr)
    agents = [subprocess.Popen(argv, cwd=REPO_ROOT) for _ in range(args.parallel)]
    exit_codes = [agent.wait() for agent in agents]  # wait for every agent, not just the first to succeed
    return 0 if 0 in exit_codes else 1


def is_logged_in() -> bool:
    from scripts.train import wandb_logged_in  # here: scripts.train imports this module

    return wandb_logged_in()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="sweep file in W&B's format (experiments/sweeps/*.yaml)")
    parser.add_argument("--count", type=int, help="number of trials (default: grid size, else run_cap, else 4)")
    parser.add_argument("--offline", action="store_true", help="run here even when logged in to W&B")
    parser.add_argument("--parallel", type=int, default=1, help="trials (offline) or agents (online) at once")
    parser.add_argument("--project", default="cv-course", help="W&B project (online)")
    parser.add_argument("--entity", help="W&B entity (online; default: your default entity)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "sweeps", help="offline results folder")
    parser.add_argument("--seed", type=int, default=0, help="random-search seed (offline)")
    args = parser.parse_args(argv)
    for option in ("count", "parallel"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_sweep(args.file)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.offline and is_logged_in():
        return run_online(config, args)
    return run_offline(config, args.file, args)


if __name__ == "__main__":
    sys.exit(main())
