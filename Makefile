# The README's two commands: `make compare` (the main job) and `make test`.
# Both create .venv and install the project on first use; nothing else is needed but Python 3.11 and pip.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   := data/shapes

.PHONY: install compare compare-quick test dataset clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# albumentations pulls opencv-python-headless, which shares the `cv2` folder with the contrib
	@# build; if it overwrote contrib (no cv2.ximgproc for Selective Search), reinstall contrib on top.
	$(PY) -c "import cv2, sys; sys.exit(0 if hasattr(cv2, 'ximgproc') else 1)" || \
	  $(PY) -m pip install --quiet --force-reinstall --no-deps \
	    "opencv-contrib-python-headless==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opencv-contrib-python-headless"))')"
	$(PY) -c "import cv2; cv2.ximgproc; print('cv2', cv2.__version__, 'with ximgproc')"
	touch $(STAMP)

dataset: $(STAMP)
	$(PY) scripts/make_dataset.py --out $(DATA)

# every registered model trained (from the shared pretrained backbone) and measured side by side;
# each for its config's fixed schedule; tables in runs/compare/results.md, pictures beside them. Trained models
# are cached by fingerprint: a rerun re-measures them, retraining only what changed (FORCE=--retrain: all).
compare: dataset
	$(PY) scripts/compare.py --spec experiments/compare/default.yaml --out runs/compare $(FORCE)

# a preview of the same comparison (short fixed schedules, not converged; tables say so): at most 10 minutes
# on 2 CPU cores. Tables in runs/compare_quick/results.md.
compare-quick: dataset
	$(PY) scripts/compare.py --spec experiments/compare/quick.yaml --out runs/compare_quick $(FORCE)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
