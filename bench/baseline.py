"""The speed check of the cyce benchmarks: this tree against a reference commit
(A/B, the default), or against a saved baseline.

    python -m bench.baseline ab [--ref REV] [--current REV] [--all] [-k EXPR]
                                                      # make bench-compare [BENCH_REF=REV]
    python -m bench.baseline compare-saved [JSON]     # against the saved baseline
    python -m bench.baseline save [JSON]              # make bench-baseline

All three time the cyce benchmarks of the kernels' speed suites alone
(SUITES, ``-m "not peer" --benchmark-only``; not bench/test_gil.py, whose
two-thread figure needs two idle cores), and gate the minimum time of each
case at FAIL_ABOVE (3%).  A minimum moves by more than that between sessions
(another CPU: a Xeon and an EPYC have both been seen) and between processes
of one session (a shared machine, other pages of memory), so

`ab` builds the reference commit (REFERENCE, ec0742d by default) from
``git archive`` into build/bench-ref/<sha> with its own setup.py and this
venv's python (reused once built), and times the same cases with both builds
in one session: one pytest process per build and block of cases (a suite at
one shape), the two builds' processes taking turns (A B, B A, ...).  Both
run this tree's benchmark code (bench/ and cyce/_bench.py); only the cyce
they import differs (`run_with` checks where every cyce module came from).
A case regresses when this tree's minimum is more than FAIL_ABOVE above the
reference's; the regressed cases are timed again, both builds, up to
ATTEMPTS rounds in all, and a case fails only if it regressed in every
round (a real slow-down does; a process that drew slow memory or met
another process does not, every time).  Cases the reference cannot run (the
half dtypes, functions it lacks) are skipped with their reason.  It prints a
table (case, reference min, current min, ratio, verdict) and exits 1 on a
failure (2 if this tree's cyce/*.so was rebuilt meanwhile: on a checkout
others build in, --current REV times a commit's own build instead).
sigmoid_bce's two large shapes are left out unless --all: at about 5 s a
call they took 300 of a pass's 450 s, and its elementwise loop is already
timed beyond the caches at 16384x1000.  -k EXPR keeps the cases matching
that pytest expression (to look again at the ones that failed).  Each run's
JSON, outcomes and log, and summary.json, are in .benchmarks/ab/.

`save` writes pytest-benchmark's JSON of this tree to BASELINE;
`compare-saved` (also `compare`, its old name) runs the suites against it
with ``--benchmark-compare-fail=min:3%``, again re-running the cases that
regressed up to ATTEMPTS runs in all.  That compares with another session's
machine and process, so it means something only when the baseline was saved
on this machine, in this session.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE = ".benchmarks/baseline/cyce.json"
FAIL_ABOVE = 0.03  # relative slow-down of the minimum time that fails
ATTEMPTS = 3
# the kernels' suites: cyce.torch's and cyce.dask's time their integrations,
# whose peers and clusters move more than a 3% gate allows
SUITES = [f"bench/test_speed_{family}.py" for family in ("softmax_ce", "logsumexp", "sigmoid_bce")]
CYCE_BENCHMARKS = ["-m", "not peer", "--benchmark-only", "--benchmark-columns=min,median,rounds"]

REFERENCE = "ec0742d"         # the "same speed as commit ec0742d"
REFERENCE_BUILDS = "build/bench-ref"
AB_RUNS = ".benchmarks/ab"    # each run's JSON, outcomes and log, and summary.json
# left out of `ab` unless --all (see the docstring)
SLOW_SUITE, SLOW_SHAPES = "bench/test_speed_sigmoid_bce.py", ("4096x32000", "512x256000")
BUILT = ".cyce-built"         # written in a reference checkout once its build succeeded


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


# ---------------------------------------------------------------------------
# save / compare-saved: against the JSON of an earlier run
# ---------------------------------------------------------------------------

def save(baseline=BASELINE):
    warn_if_busy()
    (REPOSITORY / baseline).parent.mkdir(parents=True, exist_ok=True)
    return run_pytest(SUITES, f"--benchmark-json={baseline}")


def compare_saved(baseline=BASELINE):
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


# ---------------------------------------------------------------------------
# ab: the reference commit's build against this tree's, in one session
# ---------------------------------------------------------------------------

def git(*args):
    return subprocess.run(["git", *args], cwd=REPOSITORY, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit_build(rev):
    """build/bench-ref/<sha>: `rev`'s files (git archive: no worktree, no
    change to the repository) with its extension built in place by its own
    setup.py and this python; built once, reused after."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    checkout = REPOSITORY / REFERENCE_BUILDS / sha
    if (checkout / BUILT).exists():
        print(f"{rev} ({sha[:12]}): reusing the build in {checkout}", flush=True)
        return checkout
    print(f"{rev} ({sha[:12]}): building in {checkout} (a few minutes)", flush=True)
    shutil.rmtree(checkout, ignore_errors=True)  # a build that did not finish
    checkout.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", sha], cwd=REPOSITORY, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(checkout)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        sys.exit(f"git archive {sha} failed")
    with open(checkout / "build.log", "w") as log:
        status = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                                cwd=checkout, stdout=log, stderr=subprocess.STDOUT).returncode
    if status != 0:
        sys.exit(f"the build of {rev} failed ({checkout / 'build.log'}):\n"
                 + "".join(open(checkout / "build.log").readlines()[-20:]))
    (checkout / BUILT).write_text(sha + "\n")
    return checkout


def extension_stamp():
    """(name, size, mtime) of this tree's compiled modules, to see a rebuild."""
    return sorted((path.name, path.stat().st_size, path.stat().st_mtime)
                  for path in (REPOSITORY / "cyce").glob("*.so"))


def warn_if_stale():
    """This tree's extension older than its sources: `make install` rebuilds it."""
    built = [path.stat().st_mtime for path in (REPOSITORY / "cyce").glob("*.so")]
    sources = [path for pattern in ("setup.py", "cyce/*.pyx", "cyce/*.pxi", "cyce/*.pxd",
                                    "cyce/_src/*.[ch]") for path in REPOSITORY.glob(pattern)]
    newest = max(sources, key=lambda path: path.stat().st_mtime)
    if not built or newest.stat().st_mtime > min(built):
        print(f"warning: cyce/*.so is older than {newest.relative_to(REPOSITORY)}; "
              "rebuild it (make install) or the check times a stale build", flush=True)


def collect(include_all, keyword=None):
    """The node ids of the cyce benchmarks in SUITES (those matching the
    pytest -k expression `keyword` if given), in collection order."""
    command = [sys.executable, "-m", "pytest", *SUITES, *CYCE_BENCHMARKS, "--collect-only", "-q",
               *(["-k", keyword] if keyword else [])]
    listing = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"collecting the suites failed:\n{listing.stdout}{listing.stderr}")
    node_ids = [line.strip() for line in listing.stdout.splitlines() if "::" in line]
    if include_all:
        return node_ids
    return [node for node in node_ids
            if not (node.startswith(SLOW_SUITE + "::") and shape_of(node) in SLOW_SHAPES)]


def shape_of(node_id):
    return node_id.split("[", 1)[1].split("-", 1)[0]


def blocks_of(node_ids):
    """The cases in blocks of one suite at one shape (consecutive in
    collection order, so a block makes each input array once)."""
    blocks = {}
    for node in node_ids:
        blocks.setdefault((node.split("::")[0], shape_of(node)), []).append(node)
    return list(blocks.values())


class Outcomes:
    """pytest plugin: {node id: (outcome, reason)}, the first phase that did
    not pass (a skip, an error, a failure) or else the call's pass."""

    def __init__(self):
        self.outcomes = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or not report.passed:
            if self.outcomes.get(report.nodeid, ("passed",))[0] == "passed":
                self.outcomes[report.nodeid] = (report.outcome, reason_of(report))


def reason_of(report):
    if report.passed:
        return ""
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0] if text.strip() else report.outcome


def run_with(cyce_dir, record, pytest_args):
    """In a fresh process: import cyce from cyce_dir, then pytest in it, with
    this tree's cyce/_bench.py as cyce._bench (the harness the suites import).
    sys.path alone would not do: pytest puts this tree's root first on it
    before the suites import cyce.  Writes where each cyce module came from
    and each case's outcome to `record`."""
    cyce_dir = Path(cyce_dir).resolve()
    sys.path.insert(0, str(cyce_dir))
    import cyce

    sys.path.remove(str(cyce_dir))  # nothing else (its bench/, its tests/) from there
    if cyce_dir != REPOSITORY:
        spec = importlib.util.spec_from_file_location("cyce._bench", REPOSITORY / "cyce/_bench.py")
        harness = importlib.util.module_from_spec(spec)
        sys.modules["cyce._bench"] = harness
        spec.loader.exec_module(harness)
        cyce._bench = harness
    print(f"cyce imported from {cyce.__file__}", flush=True)

    import pytest

    outcomes = Outcomes()
    status = pytest.main(pytest_args, plugins=[outcomes])
    modules = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
               if name == "cyce" or name.startswith("cyce.")}
    with open(record, "w") as f:
        json.dump({"cyce_dir": str(cyce_dir), "modules": modules, "outcomes": outcomes.outcomes}, f)
    return status


def check_modules(record, cyce_dir):
    """Every cyce module a run imported came from cyce_dir (cyce._bench: this tree)."""
    for name, path in record["modules"].items():
        home = REPOSITORY if name == "cyce._bench" else cyce_dir
        if path is not None and not Path(path).resolve().is_relative_to(home / "cyce"):
            sys.exit(f"{name} came from {path}, not {home / 'cyce'}: the A/B is void")


def timed_run(build, cyce_dir, node_ids, tag):
    """One pytest process timing node_ids with the given build:
    ({node id: min seconds} of the cases that passed, {node id: (outcome, reason)})."""
    runs = REPOSITORY / AB_RUNS
    paths = {kind: runs / f"{tag}-{build}.{kind}" for kind in ("json", "outcomes", "log")}
    command = [sys.executable, "-m", "bench.baseline", "_run", str(cyce_dir), str(paths["outcomes"]),
               "--", *node_ids, *CYCE_BENCHMARKS, "-q", "-p", "no:cacheprovider",
               f"--benchmark-json={paths['json']}"]
    started = time.monotonic()
    with open(paths["log"], "w") as log:
        status = subprocess.run(command, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT).returncode
    if status not in (0, 1) or not paths["outcomes"].exists():  # 1: some case failed
        sys.exit(f"{build} run {tag} ended with status {status}; its output, {paths['log']}:\n"
                 + "".join(open(paths["log"]).readlines()[-30:]))
    record = json.loads(paths["outcomes"].read_text())
    check_modules(record, Path(cyce_dir).resolve())
    outcomes = {node: tuple(outcome) for node, outcome in record["outcomes"].items()}
    minima = {node: seconds for node, seconds in minimum_times(paths["json"]).items()
              if outcomes.get(node, ("",))[0] == "passed"}
    print(f"  {tag} {build:7s} {len(minima):3d}/{len(node_ids)} timed in "
          f"{time.monotonic() - started:5.1f} s, cyce from {record['modules']['cyce']}", flush=True)
    return minima, outcomes


def ab(ref=REFERENCE, include_all=False, current=None, keyword=None):
    """The A/B check (module docstring); `current`: a commit's build instead
    of this tree's, `keyword`: only the cases matching that -k expression."""
    started = time.monotonic()
    warn_if_busy()
    if current is None:
        warn_if_stale()
        stamp = extension_stamp()
    builds = {"ref": commit_build(ref), "current": commit_build(current) if current else REPOSITORY}
    runs = REPOSITORY / AB_RUNS
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    cases = collect(include_all, keyword)
    if not cases:
        sys.exit("no case selected")
    print(f"{len(cases)} cases in {len(blocks_of(cases))} blocks, the builds taking turns", flush=True)

    ratios = {}      # node id -> this tree's min / the reference's, per round
    minima = {"ref": {}, "current": {}}   # node id -> the least min over the rounds
    notes = {}       # node id -> why it was not compared
    errors = {}      # node id -> why this tree's build failed a case the reference ran
    selection, turn = cases, 0
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:
            print(f"round {attempt}: {len(selection)} case(s) more than {FAIL_ABOVE:.0%} slower "
                  "in every round so far, timed again", flush=True)
        blocks = blocks_of(selection)
        timings, outcomes = {"ref": {}, "current": {}}, {"ref": {}, "current": {}}
        for index, block in enumerate(blocks):
            order = ("ref", "current") if turn % 2 == 0 else ("current", "ref")
            turn += 1
            for build in order:
                block_minima, block_outcomes = timed_run(build, builds[build], block,
                                                         f"{attempt}.{index + 1:02d}")
                timings[build].update(block_minima)
                outcomes[build].update(block_outcomes)
        still = []
        for node in selection:
            ref_ok, cur_ok = node in timings["ref"], node in timings["current"]
            if not (ref_ok and cur_ok):
                ref_why = outcomes["ref"].get(node, ("not run", ""))
                cur_why = outcomes["current"].get(node, ("not run", ""))
                if ref_ok:
                    errors[node] = f"{cur_why[0]}: {cur_why[1]}"
                elif cur_ok:
                    notes[node] = f"the reference cannot run it ({ref_why[0]}: {ref_why[1]})"
                else:
                    notes[node] = f"neither build ran it ({cur_why[0]}: {cur_why[1]})"
                continue
            for build in minima:
                minima[build][node] = min(minima[build].get(node, float("inf")), timings[build][node])
            ratios.setdefault(node, []).append(timings["current"][node] / timings["ref"][node])
            if ratios[node][-1] > 1 + FAIL_ABOVE:
                still.append(node)
        selection = still
        if not selection:
            break

    failed = set(selection)
    print_table(cases, minima, ratios, notes, errors, failed)
    if current is None:
        modified = ", modified" if git("status", "--porcelain", "--untracked-files=no") else ""
        what = f"this tree (HEAD {git('rev-parse', '--short', 'HEAD')}{modified})"
    else:
        what = f"{current} = {builds['current'].name[:12]}"
    print(f"reference {ref} = {builds['ref'].name[:12]}, current {what}; "
          f"{time.monotonic() - started:.0f} s", flush=True)
    warn_if_busy()
    if current is None and extension_stamp() != stamp:
        print("error: cyce/*.so was rebuilt during the check, so some runs timed another build; "
              "run it again (or with --current REV)", flush=True)
        return 2
    with open(runs / "summary.json", "w") as f:
        json.dump({"reference": ref, "reference_sha": builds["ref"].name, "minima": minima,
                   "ratios": ratios, "notes": notes, "errors": errors, "failed": sorted(failed)}, f,
                  indent=1)
    if failed or errors:
        print(f"FAIL: {len(failed)} case(s) more than {FAIL_ABOVE:.0%} slower than {ref} in each "
              f"of {ATTEMPTS} rounds" + (f", {len(errors)} case(s) failing in this tree" if errors else ""),
              flush=True)
        return 1
    print(f"PASS: no case more than {FAIL_ABOVE:.0%} slower than {ref} in its minimum", flush=True)
    return 0


def print_table(cases, minima, ratios, notes, errors, failed):
    def name(node):
        return node.split("::", 1)[1].removeprefix("test_")

    width = max(len(name(node)) for node in cases)
    print(f"\n{'case':{width}s} {'ref min':>11s} {'current min':>11s} {'ratio':>6s}  verdict")
    for node in cases:
        if node in notes:
            print(f"{name(node):{width}s} {'':>11s} {'':>11s} {'':>6s}  skipped")
            continue
        if node in errors:
            print(f"{name(node):{width}s} {'':>11s} {'':>11s} {'':>6s}  ERROR: {errors[node]}")
            continue
        ref, cur = minima["ref"][node], minima["current"][node]
        rounds = ratios[node]
        verdict = "FAIL" if node in failed else "ok"
        if len(rounds) > 1 or node in failed:
            verdict += " (rounds: " + ", ".join(f"{ratio:.3f}" for ratio in rounds) + ")"
        print(f"{name(node):{width}s} {ref * 1e3:8.3f} ms {cur * 1e3:8.3f} ms {cur / ref:6.3f}  {verdict}")
    reasons = {}
    for node, why in notes.items():
        reasons.setdefault(why, []).append(node)
    for why, nodes in reasons.items():
        print(f"skipped, {len(nodes)} case(s): {why}")
    print("ref min, current min: the least minimum over the rounds a case ran in; "
          f"a case fails if more than {FAIL_ABOVE:.0%} slower in every round\n", flush=True)


def main(argv):
    if argv[:1] == ["_run"]:  # internal: one timed process of `ab`
        cyce_dir, record, separator, *pytest_args = argv[1:]
        assert separator == "--"
        return run_with(cyce_dir, record, pytest_args)
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ab_parser = commands.add_parser("ab", help="this tree against a reference commit, in one session")
    ab_parser.add_argument("--ref", default=REFERENCE, help=f"the reference revision (default {REFERENCE})")
    ab_parser.add_argument("--current", metavar="REV",
                           help="time REV's build (in build/bench-ref/) instead of this tree's")
    ab_parser.add_argument("--all", action="store_true",
                           help="include sigmoid_bce's two large shapes (about 10 minutes more)")
    ab_parser.add_argument("-k", dest="keyword", metavar="EXPRESSION",
                           help="only the cases matching this pytest -k expression")
    for command, help_text in (("save", "save this tree's timings as the baseline"),
                               ("compare-saved", "compare with the saved baseline"),
                               ("compare", "the old name of compare-saved")):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("baseline", nargs="?", default=BASELINE)
    args = parser.parse_args(argv)
    if args.command == "ab":
        return ab(args.ref, args.all, args.current, args.keyword)
    if args.command == "save":
        return save(args.baseline)
    return compare_saved(args.baseline)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
