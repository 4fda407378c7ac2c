"""The comparison's command line and its loop over the spec's models (``scripts/compare.py`` calls
:func:`main`)."""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from comparison.outputs import check_outputs, summarize_error, write_failure_log
from comparison.report import load_published, write_results
from comparison.spec import REPO_ROOT, Entry, is_preview, load_spec, spec_entries
from comparison.terminal import Progress, model_log

DESCRIPTION = """The comparison: every detector and segmenter trained (or loaded) and measured the same way.

    python scripts/compare.py --spec experiments/compare/default.yaml --out runs/compare

Each model trains a fixed schedule (its config's epochs, or the spec's epochs / max_steps for it) from
the seed, so reruns give the same accuracy; trained checkpoints are cached under a fingerprint of what
decides them (config, seed, data, pretrained backbone, model code), and a rerun re-measures from the cache
(--retrain trains again). Then, on the same validation set and hardware: parameters, GFLOPs per image,
training throughput, test-time latency (median / p90 ms per image, FPS, per stage) and accuracy through
each model's own validation metrics. Writes results.{md,csv,json} and plots into --out; rows of
comparisons that share --out are merged. Lightning's messages go to --out/logs/<run>.log.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, default=REPO_ROOT / "experiments/compare/default.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--models", nargs="+", help="subset of the spec's runs (by run name)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--checkpoints", type=Path, default=None, help="evaluate <DIR>/<run>.ckpt instead of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--retrain",
        "--force",
        dest="retrain",
        action="store_true",
        help="train every model again instead of loading its cached checkpoint",
    )
    p.add_argument(
        "--safety-cap-s",
        type=float,
        default=None,
        help="wall-clock cap on each model's training (off by default); a run it stops is 'truncated'",
    )
    p.add_argument(
        "--wandb", action="store_true", help="also log tables and pictures to W&B (offline unless logged in)"
    )
    return p.parse_args(argv)


def run_pretraining(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The shared `weights: shapes` pretraining, once, reported on its own row."""
    pre = spec.get("pretrain")
    if not pre:
        return None
    from models.parts.pretrain import pretrain_on_shapes

    arch = pre.get("arch", "small_cnn")
    result = pretrain_on_shapes(pre["data_root"], arch=arch)
    return {
        "run": f"pretrain_{arch}",
        "model": arch,
        "family": "pretraining",
        "group": "",
        "status": "ok",
        "error": "cached" if result.cached else "",
        "train_s": result.seconds,
        "accuracy": result.accuracy,
    }


def _accuracy_text(row: dict[str, Any]) -> str:
    for key, name in (("voc07/mAP", "VOC07 mAP"), ("mean_iou", "mIoU"), ("coco_segm/AP", "mask AP")):
        if isinstance(row.get(key), float):
            return f"{name} {row[key]:.3f}"
    return ""


def summary_line(row: dict[str, Any]) -> str:
    """The model's one line on the terminal."""
    if row.get("status") == "failed":
        return f"{row['run']}: failed: {row.get('error', '')}"
    parts = [f"{row['run']}: {row['status']}"]
    if "train_steps" in row:
        how = "loaded from cache: " if row.get("trained") == "loaded from cache" else ""
        parts.append(
            f"{how}{row['train_steps']} steps ({row.get('train_epochs', 0):g} epochs, {row.get('train_s', 0.0):.1f} s)"
        )
    elif row.get("trained"):
        parts.append(str(row["trained"]))
    acc = _accuracy_text(row)
    if acc:
        parts.append(acc)
    if isinstance(row.get("latency_ms_median"), float):
        parts.append(f"{row['latency_ms_median']:.1f} ms/img")
    return ", ".join(parts)


def run_entry(
    entry: Entry, spec: dict[str, Any], args: argparse.Namespace, out: Path, progress: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build, train (or load) and measure one model; returns its row and its example predictions."""
    from comparison.measure import count_gflops, eval_loader, evaluate, measure_test_latency, predict_examples, single
    from comparison.training import build, load_weights, train_or_load
    from models.registry import get_model

    if args.checkpoints:  # the checkpoint holds the weights: build without reading pretrained files
        from models.parts.torchvision_weights import restoring_checkpoint

        with restoring_checkpoint():
            cli = build(entry, spec, args.seed, args.device)
    else:
        cli = build(entry, spec, args.seed, args.device)
    model, dm = cli.model, cli.datamodule
    name = getattr(type(model), "registry_name", type(model).__name__)
    row: dict[str, Any] = {
        "run": entry.run,
        "model": name,
        "family": get_model(name).family,
        "group": entry.group or "",
        "params": sum(p.numel() for p in model.parameters()),
    }
    if entry.published:
        row["published"] = entry.published
    if args.checkpoints:
        ckpt = Path(args.checkpoints) / f"{entry.run}.ckpt"
        progress.stage(f"load {ckpt.name}")
        if not ckpt.exists():
            raise FileNotFoundError(f"--checkpoints: {ckpt} does not exist")
        dm.prepare_data()
        dm.setup("fit")
        load_weights(model, ckpt)
        row["trained"] = f"loaded from {ckpt}"
    elif not entry.train:
        progress.stage("evaluate only")
        dm.prepare_data()
        row["train_s"] = 0.0
        row["trained"] = "not trained (evaluated as built)"
    else:
        trained = train_or_load(entry, cli, out / "checkpoints", args.seed, args.device, args.retrain, progress)
        row.update({k: v for k, v in trained.record.items() if k != "fingerprint"})
        row["trained"] = "loaded from cache" if trained.cached else "trained"
    truncated = bool(row.pop("truncated", False))
    device = torch.device(args.device)
    model = model.to(device).eval()
    dm.setup("validate")
    loader = eval_loader(dm, spec.get("eval_images"))
    row["eval_images"] = len(loader.dataset)
    counts_proposals = hasattr(model, "reset_proposal_count")  # R-CNN / Fast R-CNN: Selective Search boxes
    if counts_proposals:
        model.reset_proposal_count()  # the evaluated images only, whether trained now or loaded from the cache
    metrics, curves = evaluate(model, loader, device, lambda i, n: progress.stage("evaluate", i, n, "batches"))
    row.update(metrics)
    if counts_proposals:
        row["num_proposals"] = round(float(model.num_proposals), 1)
    val = dm.val_dataset
    n_lat = min(int(spec.get("latency_images", 20)), len(val))
    images = [val[i][0].to(device) for i in range(n_lat)]
    progress.stage(f"latency ({n_lat} images)")
    row["gflops"] = count_gflops(model, single(model, images[0]))
    row.update(measure_test_latency(model, images, warmup=int(spec.get("latency_warmup", 3))))
    n_show = min(int(spec.get("example_images", 4)), len(val))
    shown = images[:n_show] if n_show <= n_lat else [val[i][0].to(device) for i in range(n_show)]
    examples = {
        "predictions": predict_examples(model, shown),
        "curves": curves,
        "task": model.task,
        "images": [im.cpu() for im in shown],
        "targets": [val[i][1] for i in range(n_show)],
        "class_names": list(dm.class_names),
    }
    for nms in spec.get("nms_sweep", {}).get(entry.run, []) if not entry.group else []:
        progress.stage(f"evaluate at NMS IoU {nms}")
        model.set_nms_iou(float(nms))
        swept, _ = evaluate(model, loader, device)
        row[f"nms_sweep/{nms}/voc07/mAP"] = swept.get("voc07/mAP")
    row["status"] = "truncated" if truncated else "ok"
    row["error"] = "safety cap hit: training stopped before its schedule ended" if truncated else ""
    return row, examples


def _header(args: argparse.Namespace, entries: list[Entry], preview: bool) -> str:
    caps = sorted({e.safety_cap_s for e in entries if e.safety_cap_s})
    cap = (
        f"safety cap {', '.join(f'{c:g}' for c in caps)} s (a run it stops is marked truncated)"
        if caps
        else "no wall-clock cap"
    )
    kind = "Preview (short fixed schedules, not converged)" if preview else "Comparison"
    return (
        f"## {kind} `{args.spec.name}` on {args.device} ({torch.get_num_threads()} threads), seed {args.seed}\n\n"
        f"Training: a fixed schedule per model (its config's epochs, or the spec's epochs / max_steps for it), "
        f"{cap}; steps, epochs and seconds are in each table."
    )


def draw_pictures(rows: list[dict[str, Any]], examples: dict[str, Any], out: Path) -> None:
    from comparison.plots import plot_examples, plot_speed_accuracy
    from metrics.plots import plot_pr_curves

    plot_speed_accuracy(rows, out / "speed_accuracy.png")
    for kind, label_maps in (("detection", False), ("semantic", True)):
        runs = {r: e for r, e in examples.items() if (e["task"] == "semantic") == label_maps}
        if runs:
            first = next(iter(runs.values()))
            plot_examples(runs, first["images"], first["targets"], first["class_names"], out / f"examples_{kind}.png")
    for run, ex in examples.items():
        if ex.get("curves"):
            plot_pr_curves(ex["curves"], out / f"pr_{run}.png", title=f"{run}: precision / recall (VOC, IoU 0.5)")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the comparison; returns this run's rows (``results.json`` also keeps other comparisons' rows)."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    spec = load_spec(args.spec)
    entries = spec_entries(spec, args.spec)
    if args.models:
        unknown = set(args.models) - {e.run for e in entries}
        if unknown:
            raise SystemExit(f"--models: {sorted(unknown)} not in {args.spec} (runs: {[e.run for e in entries]})")
        entries = [e for e in entries if e.run in args.models]
    if args.safety_cap_s is not None:
        for e in entries:
            e.safety_cap_s = args.safety_cap_s if args.safety_cap_s > 0 else None
    out = args.out
    check_outputs(out, args)
    preview = is_preview(spec)
    published = load_published(REPO_ROOT / spec.get("published", "experiments/compare/published.yaml"))
    header = _header(args, entries, preview)
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows[:] = [r for r in rows if r["run"] != row["run"]] + [row]
        write_results([row], out, spec, published, header, preview)

    progress = Progress([e.run for e in entries])
    if spec.get("pretrain") and not args.checkpoints:
        progress.bar.set_postfix_str("shared pretraining")
        try:
            with model_log(out / "logs" / "pretrain.log"):
                pre_row = run_pretraining(spec)
            if pre_row:
                record(pre_row)
        except Exception as exc:  # the models can still train from scratch
            record(
                {
                    "run": "pretrain",
                    "model": "pretrain",
                    "family": "pretraining",
                    "group": "",
                    "status": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
    examples: dict[str, Any] = {}
    for entry in entries:
        progress.start(entry.run)
        log_path = out / "logs" / f"{entry.run}.log"
        log_path.unlink(missing_ok=True)
        try:
            with model_log(log_path):
                row, ex = run_entry(entry, spec, args, out, progress)
            if not entry.group:
                examples[entry.run] = ex
            line = summary_line(row)
        except (SIGTERMException, KeyboardInterrupt):  # the comparison was stopped: not a failing model
            progress.close()
            raise
        except (Exception, SystemExit) as exc:  # one failing model must not stop the others
            log = write_failure_log(out, entry.run, traceback.format_exc())
            row = {
                "run": entry.run,
                "model": entry.run,
                "family": "",
                "group": entry.group or "",
                "status": "failed",
                "error": summarize_error(exc),
            }
            line = summary_line(row) + (f" (traceback in {log})" if log else " (traceback above)")
        record(row)
        progress.finish(line)
    progress.close()
    all_rows, md = write_results([], out, spec, published, header, preview)
    with model_log(out / "logs" / "pictures.log"):
        draw_pictures(all_rows, examples, out)
        if args.wandb:
            from comparison.wandb_log import log_to_wandb

            log_to_wandb(rows, out, spec, args.spec)
    print(md)
    return rows
