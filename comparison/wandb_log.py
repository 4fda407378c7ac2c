"""The comparison in W&B: one run per model grouped under the comparison, plus a summary run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def log_to_wandb(rows: list[dict[str, Any]], out: Path, spec: dict[str, Any], spec_path: Path) -> None:
    """One W&B run per model grouped under the comparison, plus a summary run with the tables and pictures
    (offline unless logged in, or as ``WANDB_MODE`` says)."""
    import wandb

    from scripts.train import wandb_logged_in

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    group = f"compare-{spec_path.stem}"
    project = spec.get("wandb_project", "cv-course")
    for r in rows:
        run = wandb.init(
            project=project,
            group=group,
            name=r["run"],
            mode=mode,
            dir=str(out),
            config={k: r[k] for k in ("model", "family", "group", "status") if k in r},
            reinit="finish_previous",
        )
        run.summary.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
        run.finish()
    run = wandb.init(project=project, group=group, name=f"{group}-summary", mode=mode, dir=str(out))
    keys = sorted({k for r in rows for k in r})
    run.log({"results": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows])})
    for png in sorted(out.glob("*.png")):
        run.log({png.stem: wandb.Image(str(png))})
    run.finish()
