# Two commands do all set-up on a fresh machine (Python 3.11, nothing else installed):
#   make test   create .venv if missing, install, lint, run the test suite (docs build included)
#   make demo   create .venv if missing, install, run the main job (`pplx demo`)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The set-up pins torch to the CPU build that installs from a local file in seconds;
# the package's own requirement in pyproject.toml stays a range.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: venv test demo lint format docs bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test,docs,dev]"
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/pplx demo $(DEMO_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: venv
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# Benchmarks print ratios against Pyro, hand-written PyTorch and (optional) posteriors.
bench: venv
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/svi_overhead.py
	$(BIN)/python benchmarks/svgd_logistic.py
	$(BIN)/python benchmarks/sgld_linear.py
	$(BIN)/python examples/svgd_simplex.py --out benchmarks/out

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build pplx-report
