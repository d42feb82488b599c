# atlas_t5x developer entry points. Everything runs inside .venv in the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo study clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[train,test,beam,tpu]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -n 2 --durations=15 tests

# The fixed fast sample: every test but the costlier variants marked @pytest.mark.slow.
test-fast: install
	$(PY) -m pytest -q -n 2 -m "not slow" tests

demo: install
	$(PY) scripts/demo.py --out out/demo

study: install
	$(PY) scripts/demo.py --study --out out/study

clean:
	rm -rf out .pytest_cache
