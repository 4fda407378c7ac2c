"""A quiet terminal: one line per model and one progress bar; each model's chatter goes to its log.

While a model is built, trained and measured, :func:`model_log` sends Python warnings, the log records of
Lightning (and of the repo's own loggers) and anything printed to ``DIR/logs/<run>.log``. The progress bar
(:class:`Progress`) was created before, on the real terminal, so it stays there.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, TextIO

import pytorch_lightning as pl
from tqdm.auto import tqdm

#: loggers whose records belong in the model's log, not on the terminal
CHATTY_LOGGERS = (
    "",
    "lightning",
    "lightning.pytorch",
    "pytorch_lightning",
    "lightning_fabric",
    "torch",
    "models",
    "datamodules",
)


@contextlib.contextmanager
def model_log(path: Path) -> Iterator[TextIO]:
    """Everything a model's run says (warnings, logging, prints) into ``path`` instead of the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        saved = []
        for name in CHATTY_LOGGERS:
            logger = logging.getLogger(name)
            saved.append((logger, logger.handlers[:], logger.propagate))
            logger.handlers = [handler]
            logger.propagate = False

        def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield log
            finally:
                for logger, handlers, propagate in saved:
                    logger.handlers, logger.propagate = handlers, propagate


class Progress:
    """The comparison's one bar: models done of all, and what the current model does (stage and its
    remaining work, e.g. ``fcos: train 12/40 steps``) with the work left in the comparison."""

    def __init__(self, runs: list[str], file: TextIO | None = None) -> None:
        self.runs = runs
        self.file = file or sys.stderr  # the terminal, taken now: model_log redirects sys.stderr later
        self.bar = tqdm(total=len(runs), desc="compare", unit="model", file=self.file, disable=None, dynamic_ncols=True)
        self.run = ""

    def start(self, run: str) -> None:
        self.run = run
        self.bar.set_description(run)
        self.stage("build")

    def stage(self, stage: str, done: int | None = None, total: int | None = None, unit: str = "") -> None:
        left = len(self.runs) - self.bar.n - 1
        work = f" {done}/{total} {unit}".rstrip() if total else ""
        more = f"{left} more model{'s' if left != 1 else ''} after this"
        self.bar.set_postfix_str(f"{stage}{work} | {more}", refresh=True)

    def finish(self, line: str) -> None:
        """The model's one line above the bar, then the bar moves on."""
        self.bar.write(line, file=self.file)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class StepProgress(pl.Callback):
    """Shows the training steps done of the model's schedule on the comparison's bar."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.total = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        planned = trainer.estimated_stepping_batches
        self.total = int(planned) if planned != float("inf") else 0
        if self.progress is not None:
            self.progress.stage("train", 0, self.total, "steps")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.progress is not None:
            self.progress.stage("train", trainer.global_step, self.total, "steps")
