# Two commands do all set-up themselves: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-asan bench lint clean

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

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache
