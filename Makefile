# Two commands do all set-up themselves: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

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

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache
