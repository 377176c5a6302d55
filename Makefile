# Two commands do all set-up themselves: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-asan bench lint clean fidelity

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lrlab sweep --data blobs --model 2-10-10-10-10-4 --activation relu \
	  --init normal:0.05 --lr 0.5,0.4,0.1,0.01,0.001 --seeds 8 --epochs 200 \
	  --batch-size 64 --validation-split 0.2 --name blobs-demo --out runs/demo --overwrite
	@echo "report: runs/demo/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# The compiled kernel's tests (kernel, engine, finder) against a build of nets_kernel.c with
# AddressSanitizer and UndefinedBehaviorSanitizer (a build of its own: the flags are part of the
# cache key). The first report aborts pytest, so the target fails; --capture=sys leaves the
# report on stderr. Python itself is not instrumented: the ASan runtime is preloaded for the
# ctypes-loaded library, and libstdc++ with it (else ASan cannot intercept a C++ exception
# thrown inside torch or matplotlib, and aborts).
ASAN_TESTS ?= tests/test_kernel.py tests/test_engine.py tests/test_finder.py
ASAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
test-asan: $(STAMP)
	LRLAB_KERNEL=require LRLAB_KERNEL_CFLAGS="$(ASAN_CFLAGS)" \
	  LD_PRELOAD="$$($${CC:-cc} -print-file-name=libasan.so) $$($${CC:-cc} -print-file-name=libstdc++.so)" \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(BIN)/python -m pytest -p no:cacheprovider --capture=sys $(ASAN_TESTS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Real Keras 3 (TensorFlow, CPU) against lrlab on the seed-000 and seed-004 cells; never in CI.
# Makes its own side virtualenv; FIDELITY_SEEDS seeds per cell (at least 24).
FIDELITY_VENV ?= .fidelity-venv
FIDELITY_SEEDS ?= 24
FIDELITY_DATA := bench/fidelity/data
KERAS_RUNS := $(FIDELITY_VENV)/bin/python bench/fidelity/keras_runs.py

$(FIDELITY_VENV)/.installed:
	test -x $(FIDELITY_VENV)/bin/python || $(PY) -m venv $(FIDELITY_VENV)
	$(FIDELITY_VENV)/bin/python -m pip install -q keras==3.15.1 tensorflow-cpu==2.21.0 scikit-learn
	touch $@

fidelity: $(STAMP) $(FIDELITY_VENV)/.installed
	$(KERAS_RUNS) trace $(FIDELITY_DATA)/keras_trace.json
	$(KERAS_RUNS) replay $(FIDELITY_DATA)/keras_replay.npz
	$(KERAS_RUNS) blobs $(FIDELITY_DATA)/keras_blobs_seeded.jsonl --seeds $(FIDELITY_SEEDS) --global-seed yes
	$(KERAS_RUNS) blobs $(FIDELITY_DATA)/keras_blobs_unseeded.jsonl --seeds $(FIDELITY_SEEDS) --global-seed no
	$(KERAS_RUNS) iris $(FIDELITY_DATA)/keras_iris_seeded.jsonl --seeds $(FIDELITY_SEEDS) --global-seed yes
	$(KERAS_RUNS) iris $(FIDELITY_DATA)/keras_iris_unseeded.jsonl --seeds $(FIDELITY_SEEDS) --global-seed no
	$(BIN)/python bench/fidelity/summarize.py $(FIDELITY_DATA) bench/fidelity/keras_shares.json

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache
