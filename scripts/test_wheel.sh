#!/usr/bin/env bash
# Test what `make wheel` built, as a user gets it (`make wheel-test`):
#
#   1. the repaired wheel, installed into a fresh venv holding only NumPy and
#      the [test] and [dask] extras (pytest, hypothesis, mpmath, mypy,
#      threadpoolctl...; dask, distributed, zarr: the cyce.dask tests start
#      their local clusters there, whose workers import the installed cyce);
#      the whole suite runs from a temporary directory outside the checkout,
#      so `import cyce` can only find the installed package;
#   2. the sdist, built and installed by pip into another fresh venv, and a
#      smaller part of the suite: it builds, imports and computes, and holds
#      every source file (tests/test_packaging.py checks both archives).
#
# PYTHON is the interpreter the venvs are made from (python3 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}
wheel=$(ls "$root"/dist/cyce-*-manylinux*.whl)
sdist=$(ls "$root"/dist/cyce-*.tar.gz)
[[ $(wc -w <<< "$wheel $sdist") == 2 ]] || { echo "expected one wheel and one sdist in dist/" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cyce-wheel-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$root/tests" "$work/tests"
rm -rf "$work/tests/__pycache__"

run_tests() {  # venv, then pytest arguments
    local venv=$1
    shift
    (cd "$work" && CYCE_TEST_INSTALLED=1 CYCE_WHEEL=$wheel CYCE_SDIST=$sdist \
        "$venv/bin/python" -m pytest -c "$root/pyproject.toml" --rootdir "$work" -p no:cacheprovider "$@")
}

echo "== wheel-test: $(basename "$wheel") in a fresh venv"
"$python" -m venv "$work/venv-wheel"
"$work/venv-wheel/bin/python" -m pip install --quiet "$wheel[test,dask]"
echo "== wheel-test: installed in ${SECONDS}s"
run_tests "$work/venv-wheel" -q tests
echo "== wheel-test: wheel tested at ${SECONDS}s"

echo "== wheel-test: $(basename "$sdist") built and installed by pip in a fresh venv"
"$python" -m venv "$work/venv-sdist"
CYCE_REQUIRE_OPENMP=1 CFLAGS="${CFLAGS:-} -g0" \
    "$work/venv-sdist/bin/python" -m pip install --quiet "$sdist[test]"
echo "== wheel-test: sdist built and installed at ${SECONDS}s"
run_tests "$work/venv-sdist" -q tests/test_packaging.py tests/test_build.py tests/test_threads.py \
    tests/test_softmax_functions.py tests/test_bad_input.py
echo "== wheel-test: done in ${SECONDS}s"
