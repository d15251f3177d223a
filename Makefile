# Two entry points for a fresh machine: `make demo` and `make test`.
# Each builds the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    := runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-fast clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Train briefly on the embedded synthetic sample, detect on held-apart images, score them; then grade one
# image with the shipped default detector and grader (no --weights).
demo: $(VENV)/.installed
	$(BIN)/lesiondet train --voc annotations/sample/train --val annotations/sample/val \
		--config configs/models/demo.yaml --epochs 10 --out $(RUN)
	$(BIN)/lesiondet detect annotations/sample/test/JPEGImages --weights $(RUN)/best.pt \
		--out $(RUN)/detect --exist-ok --grade --report
	$(BIN)/lesiondet eval --map --voc annotations/sample/test --weights $(RUN)/best.pt --json $(RUN)/eval.json \
		--out $(RUN)/eval
	$(BIN)/lesiondet detect annotations/sample/test/JPEGImages/synth_0030.jpg --grade --out $(RUN)/detect-default \
		--exist-ok
	@echo "demo outputs: $(RUN)/ (best.pt, curves.png, pr_curves.png, metrics.csv, detect/report.html, detect/*.png|json|xml, eval/*.png, eval.json)"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The fast tier: unit tests only (no training through the CLI), under a minute.
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not e2e"

clean:
	rm -rf $(VENV) runs .pytest_cache
