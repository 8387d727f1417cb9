"""python -m cyce info | bench, end to end on a tiny workload."""

import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "cyce", *args], capture_output=True,
                          text=True, timeout=300, check=True).stdout


def test_info_prints_the_config():
    out = run("info")
    assert "openmp" in out and "simd" in out


def test_bench_prints_ratios_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    out = run("bench", "--shapes", "64x10", "--threads", "1", "--dtype", "float32", "--json", str(path))
    assert "cyce inplace" in out and "numpy" in out and "ratio" in out
    rows = json.loads(path.read_text())
    by_name = {row["contestant"]: row for row in rows}
    assert by_name["cyce inplace"]["median_ms"] > 0
    assert by_name["numpy"]["median_ms"] > 0
