# orthocad's two commands:
#   make demo   set up .venv and run the pipeline on the bundled scans (no root needed)
#   make test   set up .venv with the test tools and run the whole test suite
# Everything either needs is installed from here; nothing is to be done by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= outputs

.PHONY: demo test setup setup-dev system-deps bench lint clean

demo: setup
	$(BIN)/orthocad run scans/techmed3d_plantar_right.obj --case-id demo-techmed3d --out $(OUT)/demo-techmed3d
	$(BIN)/orthocad synth --out $(OUT)/synthetic --n 1 --seed 1 --pair
	$(BIN)/orthocad run --left $(OUT)/synthetic/synth_0_left.ply --right $(OUT)/synthetic/synth_0_right.ply \
		--lld-mm 10 --short-side left --case-id demo-pair --out $(OUT)/demo-pair
	@echo "reports to open: $(OUT)/demo-techmed3d/report.html $(OUT)/demo-pair/report.html"

test: setup-dev system-deps
	$(BIN)/ruff check orthocad tests bench
	$(BIN)/python -m pytest -q -n auto

bench: setup
	$(BIN)/python bench/bench.py

lint: setup-dev
	$(BIN)/ruff check orthocad tests bench

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev

$(VENV)/.setup: pyproject.toml
	scripts/check-python.sh $(PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	scripts/runtime-deps.sh $(VENV)
	touch $@

$(VENV)/.setup-dev: $(VENV)/.setup
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

system-deps:
	scripts/system-deps.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
