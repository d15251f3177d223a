# Two entry points for a fresh machine: `make demo` and `make test`.
# Each builds the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    := runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-fast clean

# What the demo needs: the package and its dependencies.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

# What the tests need besides: pytest, hypothesis, selenium, Ray (the extra `test`).
$(VENV)/.tested: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The three commands as the README gives them, on the embedded sample (annotations/{train,val,test}): train
# from the shipped detector, score the run on the test photographs it held out, grade one photograph with the
# shipped models. Then the same sample through a folder run with its HTML report.
demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" lesiondet train --voc annotations/ --out $(RUN)/train
	PATH="$(CURDIR)/$(BIN):$$PATH" lesiondet eval --map --out $(RUN)/eval
	PATH="$(CURDIR)/$(BIN):$$PATH" lesiondet detect annotations/test/JPEGImages/synth_0030.jpg --grade \
		--out $(RUN)/detect-one --exist-ok
	PATH="$(CURDIR)/$(BIN):$$PATH" lesiondet detect annotations/test/JPEGImages --weights $(RUN)/train/best.pt \
		--grade --report --out $(RUN)/detect --exist-ok
	@echo "demo outputs: $(RUN)/ (train/: best.pt, curves.png, pr_curves.png, metrics.csv; eval/: PR, FROC and grade plots; detect-one/, detect/report.html)"

test: $(VENV)/.tested
	$(BIN)/python -m pytest -q --durations=15

# The fast tier: unit tests only (no training through the CLI), under a minute.
test-fast: $(VENV)/.tested
	$(BIN)/python -m pytest -q -m "not e2e"

clean:
	rm -rf $(VENV) runs .pytest_cache
