# Two commands set everything up on a fresh machine:
#   make demo   virtual environment + genloom + the quickstart pipeline end to end
#   make test   the same set-up with every extra, then the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c $(VENV)/constraints.txt
QUICKSTART := examples/quickstart/pipeline.yaml

.PHONY: demo test check setup setup-all system-deps bench clean

# torch goes in first, pinned: an open torch range resolved by pip pulls gigabytes of CUDA wheels.
$(VENV)/.torch:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH)
	echo "$(TORCH)" > $(VENV)/constraints.txt
	touch $@

$(VENV)/.core: $(VENV)/.torch pyproject.toml
	$(PIP) -e .
	touch $@

$(VENV)/.all: $(VENV)/.torch pyproject.toml
	$(PIP) -e ".[all,dev]"
	touch $@

setup: $(VENV)/.core
setup-all: $(VENV)/.all

demo: setup
	$(BIN)/genloom run $(QUICKSTART)
	$(BIN)/genloom generate $(QUICKSTART) --prompt "The json module" --max-new-tokens 120 --seed 0

system-deps:
	./scripts/system-deps.sh

test: setup-all
	-./scripts/system-deps.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider

check: setup-all
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup-all
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) examples/*/.genloom .pytest_cache
