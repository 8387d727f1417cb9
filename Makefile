# Everything runs in .venv, created and filled from this checkout's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Rebuild the extension when any of these change.
SOURCES := setup.py pyproject.toml $(wildcard cyce/*.pyx cyce/*.pxi cyce/_src/*.h)

.PHONY: venv install test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# Editable install: the compiled kernels land next to the sources, so the
# tests and `python -m cyce` import this checkout.
$(VENV)/.installed: $(PY) $(SOURCES)
	$(PIP) install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) -m cyce bench --quick

clean:
	rm -rf build cyce/*.c cyce/*.so cyce/*.html *.egg-info $(VENV)/.installed
