"""The output folder: checked for writing before any work, and the failure log of a model that failed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def check_outputs(out: Path, args: argparse.Namespace) -> None:
    """Before any training: the output folder, its ``logs/`` and ``checkpoints/`` (when they will be written)
    can be written; otherwise exit with one line naming the path."""
    from scripts.train import OutputNotWritableError, check_writable

    folders = [(out, "results")]
    if (out / "logs").exists():
        folders.append((out / "logs", "failure logs"))
    if not args.checkpoints:
        folders.append((out / "checkpoints", "checkpoints"))
    try:
        for folder, what in folders:
            check_writable(folder, what)
    except OutputNotWritableError as exc:
        raise SystemExit(f"error: {exc}") from None


def write_failure_log(out: Path, run: str, text: str) -> Path | None:
    """The traceback of a failed model to ``<out>/logs/<run>.txt``; where that cannot be written, to stderr
    (the handler of one model's failure must never fail the comparison). Returns the file or ``None``."""
    path = out / "logs" / f"{run}.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    except OSError as exc:
        print(
            f"[compare] cannot write {path} ({exc.strerror or exc}); the traceback of {run}:\n{text}", file=sys.stderr
        )
        return None


def summarize_error(exc: BaseException, limit: int = 300) -> str:
    """One line for the results table: the exception's first line, or for a config that does not
    validate (jsonargparse lists one error per union member) the errors that say something."""
    lines = [ln.strip() for ln in str(exc).splitlines()] or [""]
    if "Errors:" in lines:
        reasons: list[str] = []
        for ln in lines[lines.index("Errors:") + 1 :]:
            if ln.startswith("Given value"):
                break
            if ln.startswith("- "):
                reasons.append(ln[2:])
            elif reasons and ln:
                reasons[-1] += " " + ln
        reasons = [r for r in reasons if "NoneType" not in r]
        if reasons:
            return f"{type(exc).__name__}: {'; '.join(reasons)}"[:limit]
    return f"{type(exc).__name__}: {lines[0]}"[:limit]
