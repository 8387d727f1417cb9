#!/usr/bin/env bash
# `make asan`: cyce's kernels built with AddressSanitizer, and the fast test
# suite run against them.
#
# The instrumented build goes to build/asan/ only: a clean copy of the
# sources is built there by pip (non-editable, --target build/asan/lib), so
# neither the compiled modules in cyce/ nor the .venv's editable install are
# touched.  The tests run from a copy of tests/ in build/asan/run with
# PYTHONPATH=build/asan/lib, so `import cyce` finds the instrumented build
# (the test below checks it does), with the .venv's Python and test tools.
#
# The sanitizer flags reach the compiler through CFLAGS and LDFLAGS, which
# setuptools adds to every compile and link command; setup.py needs no change.
# Python itself is not instrumented, so libasan is preloaded (with libstdc++,
# without which ASan cannot intercept the C++ exceptions PyTorch throws), and
# ASAN_OPTIONS=detect_leaks=0: the interpreter keeps memory to the end on
# purpose.  PYTHONMALLOC=malloc routes Python's small objects through ASan's
# malloc too, so a reference-count bug that frees an object early is caught.
#
# Extra arguments go to pytest (e.g. scripts/asan.sh -x tests/test_fuzz.py);
# ASAN_SKIP_BUILD=1 reuses the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PY:-.venv/bin/python}
[[ $python == /* ]] || python=$root/$python   # the tests run from build/asan/run
cc=${CC:-gcc}
asan_dir=$root/build/asan
libasan=$("$cc" -print-file-name=libasan.so)
libstdcxx=$("$cc" -print-file-name=libstdc++.so)
[[ -f $libasan ]] || { echo "asan: $cc -print-file-name=libasan.so found no libasan.so" >&2; exit 1; }

if [[ ${ASAN_SKIP_BUILD:-0} == 0 || ! -d $asan_dir/lib/cyce ]]; then
    echo "== asan: building the instrumented kernels in $asan_dir"
    rm -rf "$asan_dir"
    mkdir -p "$asan_dir/src"
    cp setup.py pyproject.toml README.md LICENSE MANIFEST.in CHANGELOG.md "$asan_dir/src/"
    cp -r cyce "$asan_dir/src/cyce"
    rm -rf "$asan_dir"/src/cyce/*.so "$asan_dir"/src/cyce/*.c "$asan_dir"/src/cyce/__pycache__
    CC=$cc CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g ${CFLAGS:-}" \
        LDFLAGS="-fsanitize=address ${LDFLAGS:-}" \
        "$python" -m pip install --quiet --no-deps --no-cache-dir --target "$asan_dir/lib" "$asan_dir/src"
fi
for so in "$asan_dir"/lib/cyce/_kernels_*.so; do
    # (not `ldd | grep -q`: grep -q exits at the first match, ldd then dies of
    # SIGPIPE, and pipefail turns a linked module into a failure)
    [[ $(ldd "$so") == *libasan* ]] || { echo "asan: $so is not linked with libasan" >&2; exit 1; }
done

rm -rf "$asan_dir/run"
mkdir -p "$asan_dir/run"
cp -r tests "$asan_dir/run/tests"
rm -rf "$asan_dir/run/tests/__pycache__"
cd "$asan_dir/run"
export PYTHONPATH=$asan_dir/lib
export LD_PRELOAD="$libasan $libstdcxx"
# Each process writes its ASan report, if any, to build/asan/report.<pid>
# (pytest's output capture would swallow a report written to stderr together
# with the process that died); they are printed, and fail the run, below.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:log_path=$asan_dir/report}
export PYTHONMALLOC=malloc
"$python" -c "
import cyce
assert cyce.__file__.startswith('$asan_dir/lib/'), cyce.__file__
print('== asan: testing', cyce.__file__)"
echo "== asan: running the tests under AddressSanitizer (${SECONDS}s so far)"
rm -f "$asan_dir"/report.*
status=0
"$python" -m pytest -c "$root/pyproject.toml" --rootdir "$asan_dir/run" -p no:cacheprovider \
    -q tests "$@" || status=$?
if compgen -G "$asan_dir/report.*" > /dev/null; then
    cat "$asan_dir"/report.*
    echo "== asan: AddressSanitizer reported errors (above)" >&2
    exit 1
fi
[[ $status == 0 ]] || { echo "== asan: the tests failed (exit $status)" >&2; exit "$status"; }
echo "== asan: passed in ${SECONDS}s"
