# dpo_teach — an executable textbook on DPO.
#   make lab    install if needed, then JupyterLab on book/   (PORT=8899, LAB_ARGS="--no-browser")
#   make test   install if needed, then pytest on tests/ and strict nbval on book/ (one run, one summary)
# Every target that needs the environment depends on the install stamp, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
SANITIZE := tests/nbval_sanitize.cfg
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-sanitize-with $(SANITIZE) --nbval-cell-timeout=600
LINT_PATHS := $(wildcard dpo_teach tests benchmarks tools book docs)

# One intra-op thread per process: the book's models are 64 wide, so a second thread buys nothing, and on a
# 2-core machine two spinning OpenMP pools per process (pytest-xdist runs two) were measured 5-20x slower.
# It also makes the stored outputs independent of the machine's core count. Override with OMP_NUM_THREADS=...
export OMP_NUM_THREADS ?= 1
# Test processes: two pytest-xdist workers, one notebook (or test file) each at a time (--dist loadfile keeps a
# notebook's cells in one kernel). JOBS=1 runs everything in one process.
JOBS ?= 2

# Optional variables: PORT and LAB_ARGS (lab), NB (test-chapter, execute), PYTEST_ARGS (test).
PORT ?=
LAB_ARGS ?=
NB ?=
PYTEST_ARGS ?=

.PHONY: install lab test test-chapter execute lint clean

install: $(STAMP)

# The lock (requirements.txt) first, then the package itself without touching the pins.
# The stamp is newer than both inputs once this succeeded, so a second `make install` does nothing.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "requirements.txt needs Python >= 3.11; run e.g. make install PYTHON=python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -e . --no-deps
	touch $(STAMP)

# --allow-root only where it is needed (containers run as root); JupyterLab refuses root otherwise.
# tools/jupyterlab_overrides.json sets this environment's JupyterLab defaults: no news pop-up over the first
# figure, no update check, and no autosave, so that opening a chapter does not rewrite it (save with Ctrl+S).
lab: $(STAMP)
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp tools/jupyterlab_overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=book $(if $(PORT),--port=$(PORT)) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

test: $(STAMP)
	$(PY) -m pytest tests book $(NBVAL_FLAGS) $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile) \
		--durations=10 $(PYTEST_ARGS)

test-chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make test-chapter NB=book/00_preface.ipynb"; exit 2; }
	$(PY) -m pytest $(NB) $(NBVAL_FLAGS) $(PYTEST_ARGS)

execute: $(STAMP)
	$(PY) tools/execute_book.py $(NB)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

# Caches and build outputs in the repository. Keeps .venv (`rm -rf .venv` for a fresh install), runs/ and the
# cache of trained reference models ($DPO_TEACH_CACHE, default ~/.cache/dpo_teach).
clean:
	rm -rf .pytest_cache .ruff_cache build dist _build *.egg-info book/.ipynb_checkpoints
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------------------
# Further targets (demo, bench, html), each added by the issue that builds it, go below this line.
# ---------------------------------------------------------------------------------------------------------

# The book site from the stored outputs (nothing re-executed): _build/html/index.html, built by Sphinx with
# myst-nb and sphinx-book-theme (docs/site/): sidebar, search, MathJax from a local copy, widgets shown as they
# were saved. Offline. Any Sphinx warning fails the build; a second run rebuilds only the chapters that changed.
.PHONY: html
html: $(STAMP)
	$(PY) docs/site/build.py --out _build/html

# The instructor's demo: the reviews world's π_ref (trained once, then cached), preference pairs, DPO, and
# reviews sampled before and after with their true reward and the KL to π_ref (about a minute on a laptop CPU).
# ONPOLICY=rloo (or grpo) continues from the DPO policy with that on-policy method against the true reward.
.PHONY: demo bench
demo: $(STAMP)
	$(PY) -m dpo_teach demo $(if $(ONPOLICY),--on-policy $(ONPOLICY))

# This DPOTrainer against TRL's, side by side, on the book's tiny shape and a GPT-2-sized one (50,257-token
# vocabulary): pairs/s, ratios, first-batch losses, FLOPs and MFU, peak memory (benchmarks/RESULTS.md).
# Not part of make test: a few minutes on an idle 2-core CPU. BENCH_ARGS="--shape gpt2 --repeats 3" passes options.
bench: $(STAMP)
	$(PY) benchmarks/bench_vs_trl.py $(BENCH_ARGS)
