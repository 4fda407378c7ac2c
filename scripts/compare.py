#!/usr/bin/env python
"""The comparison: every detector and segmenter trained (or loaded) and measured the same way.

    python scripts/compare.py --spec experiments/compare/default.yaml --out runs/compare
    python scripts/compare.py --spec experiments/compare/quick.yaml --out runs/compare_quick   # a preview

A thin command line over the ``comparison`` package (spec, cache, training, measurement, report, plots,
W&B); ``--help`` describes the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from comparison.outputs import check_outputs, summarize_error, write_failure_log  # noqa: E402
from comparison.runner import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args", "check_outputs", "summarize_error", "write_failure_log"]

if __name__ == "__main__":
    main()
