"""The comparison (``scripts/compare.py``, ``make compare``) as a package.

``spec`` reads a comparison spec, ``cache`` fingerprints what decides a trained model, ``training`` trains a
model's fixed schedule (or loads it from the cache), ``measure`` measures accuracy, FLOPs and latency,
``report`` writes the tables (rows merged under a lock), ``plots`` draws the pictures, ``terminal`` keeps the
terminal to one line per model and a progress bar, ``wandb_log`` logs to W&B and ``runner`` ties them up.
"""
