"""The saved baseline of the cyce benchmarks, and the comparison with it.

    python -m bench.baseline save      # make bench-baseline
    python -m bench.baseline compare   # make bench-compare

Both run the cyce benchmarks of the kernels' speed suites alone (``pytest
bench/test_speed_{softmax_ce,logsumexp,sigmoid_bce}.py -m "not peer"
--benchmark-only``; not
bench/test_gil.py, whose two-thread figure needs two idle cores).  `save`
writes pytest-benchmark's JSON to BASELINE.  `compare` runs them with
``--benchmark-compare=BASELINE
--benchmark-compare-fail=min:3%``.  On a shared machine another process can
slow a benchmark's minimum for minutes, so the benchmarks that regressed are
run again, alone, up to ATTEMPTS runs in all: a regression fails only if it
shows in every run (a real one does).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE = ".benchmarks/baseline/cyce.json"
FAIL_ABOVE = 0.03  # relative slow-down of the minimum time that fails
ATTEMPTS = 3
# the kernels' suites: cyce.torch's and cyce.dask's time their integrations,
# whose peers and clusters move more than a 3% gate allows
SUITES = [f"bench/test_speed_{family}.py" for family in ("softmax_ce", "logsumexp", "sigmoid_bce")]
CYCE_BENCHMARKS = ["-m", "not peer", "--benchmark-only", "--benchmark-columns=min,median,rounds"]


def run_pytest(selection, *options):
    """pytest on `selection` (suite files or node ids) with the cyce-only options."""
    command = [sys.executable, "-m", "pytest", *selection, *CYCE_BENCHMARKS, *options]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=REPOSITORY, check=False).returncode


def minimum_times(json_path):
    """{benchmark fullname (its node id): min time} of a pytest-benchmark JSON file."""
    with open(REPOSITORY / json_path) as f:
        return {bench["fullname"]: bench["stats"]["min"] for bench in json.load(f)["benchmarks"]}


def regressed(current_json, baseline_json):
    """Node ids whose minimum is more than FAIL_ABOVE slower than the baseline's."""
    baseline = minimum_times(baseline_json)
    return [name for name, seconds in minimum_times(current_json).items()
            if name in baseline and seconds > baseline[name] * (1 + FAIL_ABOVE)]


def warn_if_busy():
    """Say so when other work is running: the minima then come out slower."""
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    print(f"load average {load:.2f} on {cpus} CPUs", flush=True)
    if load > 0.5 * cpus:
        print("warning: the machine is busy; timings are slower than on an idle machine", flush=True)


def save(baseline=BASELINE):
    warn_if_busy()
    (REPOSITORY / baseline).parent.mkdir(parents=True, exist_ok=True)
    return run_pytest(SUITES, f"--benchmark-json={baseline}")


def compare(baseline=BASELINE):
    warn_if_busy()
    selection = SUITES
    for attempt in range(1, ATTEMPTS + 1):
        current = f".benchmarks/compare-{attempt}.json"
        status = run_pytest(selection, f"--benchmark-compare={baseline}",
                            f"--benchmark-compare-fail=min:{FAIL_ABOVE:.0%}",
                            f"--benchmark-json={current}")
        if status == 0:
            return 0
        selection = regressed(current, baseline)
        if not selection:
            return status  # a failure other than a slow-down
        print(f"attempt {attempt}: {len(selection)} benchmark(s) slower than the baseline; "
              f"{'running them again' if attempt < ATTEMPTS else 'regressed in every run'}",
              flush=True)
    return status


if __name__ == "__main__":
    actions = {"save": save, "compare": compare}
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in actions:
        sys.exit("usage: python -m bench.baseline save|compare [BASELINE_JSON]")
    sys.exit(actions[sys.argv[1]](*sys.argv[2:]))
