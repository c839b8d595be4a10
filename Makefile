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
	@mkdir -p $(OUT)
	$(BIN)/orthocad info scans/techmed3d_plantar_right.obj | tee $(OUT)/info_techmed3d_plantar_right.txt
	$(BIN)/orthocad info scans/find_template_left.obj --json > $(OUT)/info_find_template_left.json
	$(BIN)/orthocad synth --out $(OUT)/synthetic --n 2 --seed 1
	$(BIN)/orthocad info $(OUT)/synthetic/synth_0.ply | tee $(OUT)/info_synth_0.txt
	@echo "demo outputs are in $(OUT)/"

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
