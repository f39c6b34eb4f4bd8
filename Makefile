# deploylab: `make lab` opens the notebooks, `make test` runs every test.
# Both set up .venv first; set-up reruns only when pyproject.toml, requirements.lock or this
# Makefile (its recipe) change.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deploylab-installed
ARGS   ?=
BUNDLE ?=
BUNDLE_DIR ?= build/deploylab-bundle
SUITE  ?= roofline
OUT    ?= out
# Kernels from this .venv first, even if the user has another "python3" kernel installed.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter

.PHONY: setup lab test lint bench lock clean-venv help reports slides student bundle prefetch \
        runtimes
.DEFAULT_GOAL := help

help:
	@echo "make lab   [ARGS=--no-browser]   set up .venv and open JupyterLab on the notebooks"
	@echo "make test  [ARGS='-k measure']   set up .venv and run the whole test suite"
	@echo "make bench SUITE=roofline        run a benchmark suite into $(OUT)/SUITE.json"
	@echo "make reports [SMOKE=1]           every notebook's HTML report into reports/"
	@echo "make prefetch                    build every dataset and train every model into the cache"
	@echo "make runtimes [NB=path MODE=both] time notebooks into data/runtimes.json + README"
	@echo "make bundle [BUNDLE_DIR=...]     offline workshop bundle: wheels, caches, source (+ .tar)"
	@echo "make lab BUNDLE=path             set up from a bundle, with no network"
	@echo "make slides                      reveal.js slides of every notebook into build/slides/"
	@echo "make student                     student editions (solutions removed) into build/student/"
	@echo "make lint                        ruff on lib/ and tests/"
	@echo "make lock                        re-pin requirements.lock from pyproject.toml"

setup: $(STAMP)

# torch==2.13.0 resolves to the CPU wheel this machine keeps on disk (pip's find-links);
# the package itself installs editable, so lib/ changes need no re-install.
# With BUNDLE=path (a workshop's offline bundle, see `make bundle`) nothing is downloaded:
# the bundle is checked against its manifest, then installed with pip --no-index.
# rfc3987-syntax (pulled in by jupyter-events' jsonschema[format-nongpl]) builds a Lark
# grammar on import: 1.3 s in every process that imports jsonschema, Ray's included, so a
# local Ray Serve start took 17-21 s instead of 10-12. Nothing here checks IRI formats
# (jsonschema skips the check without it), so it goes.
$(STAMP): pyproject.toml requirements.lock Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(BUNDLE),PYTHONPATH=lib $(PYTHON) -m deploylab.bundle install $(BUNDLE) \
		--python $(BIN)/python,$(BIN)/python -m pip install --quiet \
		--disable-pip-version-check -r requirements.lock)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation $(if $(BUNDLE),--no-index) -e .
	$(BIN)/python -m pip uninstall --quiet --disable-pip-version-check -y rfc3987-syntax
	$(BIN)/deploylab env > /dev/null || { echo "some assets are missing or corrupt:"; \
		$(BIN)/deploylab env; exit 1; }
	@touch $(STAMP)

# JupyterLab refuses to run as root unless told; containers and workshop VMs often are root.
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(BIN)/jupyter lab --notebook-dir=. --ServerApp.ip=127.0.0.1 $(AS_ROOT) $(ARGS) \
		notebooks/00_welcome.ipynb

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest $(ARGS)

lint: setup
	$(BIN)/ruff check lib tests

bench: setup
	$(BIN)/deploylab bench $(SUITE) --json $(OUT)/$(SUITE).json $(ARGS)

# Re-pin: a throw-away venv gets pyproject's pins, and its full freeze becomes the lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check ".[dev]"
	.lock-venv/bin/python -m pip freeze --all --exclude-editable \
		| grep -v -E '^(pip==|deploylab[ =@])' | sed -E 's/^(torch==[^+]+)\+cpu$$/\1/' > requirements.lock
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)

# Every case study's (and chapter's) default report into reports/; SMOKE=1 for a quick pass.
REPORT_NOTEBOOKS ?= $(sort $(wildcard casestudies/*/*.ipynb) $(wildcard notebooks/[0-9]*.ipynb))
reports: setup
	@for nb in $(REPORT_NOTEBOOKS); do \
		name=$$(basename $$nb .ipynb); \
		echo "report: $$nb -> reports/$$name/"; \
		$(if $(SMOKE),DEPLOYLAB_SMOKE=1) $(BIN)/deploylab report $$nb -o reports/$$name \
			--no-input || exit 1; \
	done

# Workshop material (deploylab/workshop.py): slides for the projector, student editions.
slides: setup
	$(BIN)/python -m deploylab.workshop slides $(REPORT_NOTEBOOKS) -o build/slides

student: setup
	$(BIN)/python -m deploylab.workshop student $(REPORT_NOTEBOOKS) -o build/student

prefetch: setup
	$(BIN)/deploylab prefetch

# Time notebooks (full + smoke, peak memory) into data/runtimes.json and README's table;
# NB=path for one, MODE=full|smoke|both. Full runs keep their outputs (what gets committed).
NB   ?=
MODE ?= both
runtimes: prefetch
	$(BIN)/deploylab runtimes $(NB) --mode $(MODE) --inplace

# prefetch first: the bundle carries a warm cache
bundle: prefetch
	$(BIN)/python -m deploylab.bundle build $(BUNDLE_DIR) --tar
