"""python -m cyce info | bench, end to end on a tiny workload."""

import importlib.util
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
    plot = tmp_path / "bench.png"
    out = run("bench", "--shapes", "64x10", "--threads", "1", "--dtype", "float32",
              "--json", str(path), "--plot", str(plot))
    assert "cyce inplace" in out and "numpy" in out and "ratio" in out
    assert "floors, float32, ns per element on one thread: exp" in out
    assert "PASS" not in out and "MISS" not in out  # the project's targets: bench/targets.py
    report = json.loads(path.read_text())
    assert report["floors_ns"]["float32"]["exp"] > 0 and report["floors_ns"]["float32"]["read_write"] > 0
    assert report["overhead_us"] > 0
    by_name = {row["contestant"]: row for row in report["rows"]}
    assert by_name["cyce inplace"]["median_ms"] > 0
    assert by_name["cyce inplace"]["x_floor"] > 0
    assert by_name["numpy"]["median_ms"] > 0
    if importlib.util.find_spec("matplotlib"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no plot" in out


def test_bench_options_compares_each_option_with_its_plain_call(tmp_path):
    path = tmp_path / "options.json"
    out = run("bench", "--options", "--shapes", "64x100", "--json", str(path))
    assert "the options against the plain calls" in out
    assert "cyce stats / cyce loss" in out and "cyce softcap / cyce inplace" in out
    report = json.loads(path.read_text())
    by_name = {row["contestant"]: row for row in report["rows"]}
    for name in ("cyce inplace", "cyce loss", "cyce stats", "cyce smoothing", "cyce soft",
                 "cyce softcap", "cyce temperature"):
        assert by_name[name]["median_ms"] > 0, name
    # each computed its own loss, not the plain one
    for name in ("cyce smoothing", "cyce softcap", "cyce temperature", "cyce soft"):
        assert by_name[name]["loss"] != by_name["cyce inplace"]["loss"], name
    assert not any("WARNING" in line for line in out.splitlines())
