"""A language-model head's loss and gradients, fused and not, in one run:
cyce.linear_softmax_ce and cyce.torch.linear_cross_entropy against torch
eager (F.cross_entropy of h @ W.T), torch's F.linear_cross_entropy (its
reference path and its chunked one) and the floor of three GEMMs alone
(bench/linear_probe.py's contestants), forward + backward, float32.  Each
contestant runs in a fresh process: its time and its peak extra memory, as
ratios to torch eager's, the chunked F.linear_cross_entropy's and the floor's
in this same run.

    python -m bench.linear_report                       # 4096x1024x32000 and 4096x1024x128256 (N x H x V)
    python -m bench.linear_report --quick               # 1024x512x32000
    python -m bench.linear_report --shapes 4096x1024x32000 --threads 2 --rounds 3 --json build/linear.json
    python -m bench.linear_report --shapes 4096x1024x32000 --contestants cyce,gemm_floor --chunk-rows 256,512,1024,2048
    python -m bench.linear_report --check build/linear.json   # the targets of a saved report

The project's targets for this head (bench/targets.py, linear_target_checks)
are printed after the table, PASS or MISS, and --check exits 1 on a MISS.
--chunk-rows adds one cyce.linear_softmax_ce row per value (its chunk_rows);
those rows are not the default call and no target looks at them.
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are passed on as they are (the header
says whether they are set): they choose OpenBLAS's kernels and blocking, so
they move every NumPy / SciPy GEMM here, the floor's and cyce's alike.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from cyce import __main__ as cyce_main
from cyce import _bench

from . import targets
from .linear_probe import CONTESTANTS, missing_requirement

REPOSITORY = Path(__file__).resolve().parents[1]
FULL_SHAPES = [(4096, 1024, 32000), (4096, 1024, 128256)]
QUICK_SHAPES = [(1024, 512, 32000)]
THREADS = 2
ROUNDS = 3
PROBE_TIMEOUT_S = 1800
IMPORT_RETRIES, IMPORT_RETRY_WAIT_S = 2, 60
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LABELS = {
    "torch_eager": "torch eager: F.cross_entropy(h @ W.T)",
    "torch_linear_ce": "F.linear_cross_entropy",
    "torch_linear_ce_chunked": "F.linear_cross_entropy chunked",
    "gemm_floor": "3 GEMMs alone (floor)",
    "cyce": "cyce.linear_softmax_ce",
    "cyce_torch": "cyce.torch.linear_cross_entropy",
}
# rtol of "the contestants computed the same loss and gradients" (float32
# GEMMs summing in other orders; the chunked path's accumulation order)
LOSS_RTOL, NORM_RTOL = 1e-4, 1e-3


def parse_shapes(text):
    """'4096x1024x32000,1024x512x32000' -> [(4096, 1024, 32000), (1024, 512, 32000)]."""
    return cyce_main.parse_shapes(text, ("ROWS", "FEATURES", "CLASSES"), "4096x1024x32000")


def parse_ints(text):
    values = [item.strip() for item in text.split(",")]
    if not all(v.isdigit() and int(v) > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers")
    return [int(v) for v in values]


def positive_int(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def parse_contestants(text):
    names = [item.strip() for item in text.split(",")]
    for name in names:
        if name not in CONTESTANTS:
            raise argparse.ArgumentTypeError(f"contestant {name!r} is not one of {', '.join(CONTESTANTS)}")
    return names


def run_probe(contestant, shape, threads, rounds, chunk_rows=None, import_retries=IMPORT_RETRIES):
    """bench/linear_probe.py's measurements of one contestant in a fresh
    process (OMP_NUM_THREADS=threads; the rest of the environment as it is),
    or {"error": reason}.  A probe that could not import (an in-place rebuild
    of cyce's extension, mid-way, in a shared checkout) is run again after
    IMPORT_RETRY_WAIT_S, up to import_retries times."""
    command = [sys.executable, "-m", "bench.linear_probe", contestant, *map(str, shape), str(threads),
               str(rounds), str(chunk_rows or 0)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PROBE_TIMEOUT_S} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        if import_retries > 0 and "ImportError" in proc.stderr:
            print(f"  {contestant}: ImportError, trying again in {IMPORT_RETRY_WAIT_S} s", file=sys.stderr, flush=True)
            time.sleep(IMPORT_RETRY_WAIT_S)
            return run_probe(contestant, shape, threads, rounds, chunk_rows, import_retries - 1)
        return {"error": _bench.describe_failure(proc)}
    return json.loads(lines[-1])


def measure_shape(shape, threads, rounds, contestants, sweep=()):
    """One row per contestant (and per chunk_rows of the sweep, cyce's) at
    one shape, each measured in a fresh process, then their ratios."""
    n, h, v = shape
    runs = [(name, None) for name in contestants] + [("cyce", rows) for rows in sweep]
    table = []
    for contestant, chunk_rows in runs:
        row = {"shape": f"{n}x{h}x{v}", "n": n, "h": h, "v": v, "dtype": "float32", "threads": threads,
               "contestant": contestant, "requested_chunk_rows": chunk_rows, "rounds": rounds}
        reason = missing_requirement(contestant)
        result = {"error": reason} if reason else run_probe(contestant, shape, threads, rounds, chunk_rows)
        row.update(result)
        if "error" not in row:
            row["peak_growth_mib"] = row["peak_growth"] / 2**20
            row["steady_growth_mib"] = row["round_growths"][-1] / 2**20 if row["round_growths"] else None
        print(f"  {label(row)}: " + (f"failed: {row['error']}" if "error" in row else
                                     f"median {row['median_s']:.3f} s, peak +{row['peak_growth_mib']:.0f} MiB"),
              file=sys.stderr, flush=True)
        table.append(row)
    add_ratios(table)
    return table


def add_ratios(table):
    """x_eager, x_chunked, x_floor (median over those contestants' at the
    shape) and x_eager_memory (peak extra memory over torch eager's)."""
    default = {row["contestant"]: row for row in table
               if "error" not in row and row["requested_chunk_rows"] is None}
    references = {"x_eager": "torch_eager", "x_chunked": "torch_linear_ce_chunked", "x_floor": "gemm_floor"}
    for row in table:
        if "error" in row:
            continue
        for key, name in references.items():
            ref = default.get(name)
            row[key] = row["median_s"] / ref["median_s"] if ref else None
        eager = default.get("torch_eager")
        row["x_eager_memory"] = (row["peak_growth"] / eager["peak_growth"]
                                 if eager and eager["peak_growth"] > 0 else None)


def label(row):
    name = LABELS[row["contestant"]]
    if row.get("requested_chunk_rows"):
        name += f" chunk_rows={row['requested_chunk_rows']}"
    return name


COLUMNS = (("contestant", 40), ("median s", 9), ("min s", 8), ("x eager", 8), ("x chunked", 9),
           ("x floor", 7), ("chunk", 5), ("peak MiB", 9), ("x eager mem", 11), ("steady MiB", 10), ("loss", 9))


def format_line(cells):
    return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                     for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS)))


def format_row(row):
    if "error" in row:
        return format_line([label(row)]) + "  failed: " + row["error"][:100]

    def ratio(key):
        return "—" if row.get(key) is None else f"{row[key]:.2f}"

    return format_line([
        label(row), f"{row['median_s']:.3f}", f"{row['min_s']:.3f}", ratio("x_eager"), ratio("x_chunked"),
        ratio("x_floor"), str(row["chunk_rows"] or "—"), f"{row['peak_growth_mib']:.1f}",
        ratio("x_eager_memory"), "—" if row["steady_growth_mib"] is None else f"{row['steady_growth_mib']:.1f}",
        "—" if row["loss"] is None else f"{row['loss']:.5f}",
    ])


def agreement(table):
    """A line saying whether every contestant's loss and gradient norms
    agree with torch eager's (the floor computes no loss: not compared)."""
    rows = [r for r in table if "error" not in r and r["contestant"] != "gemm_floor"]
    ref = next((r for r in rows if r["contestant"] == "torch_eager"), rows[0] if rows else None)
    if ref is None:
        return "agreement: nothing to compare"
    bad = []
    for row in rows:
        for key, rtol in (("loss", LOSS_RTOL), ("grad_hidden_norm", NORM_RTOL), ("grad_weight_norm", NORM_RTOL)):
            if abs(row[key] - ref[key]) > rtol * abs(ref[key]):
                bad.append(f"{label(row)} {key} {row[key]:.6g} vs {ref[key]:.6g}")
    if bad:
        return "agreement: DISAGREE with " + LABELS[ref["contestant"]] + ": " + "; ".join(bad)
    return (f"agreement: every loss within {LOSS_RTOL:g} and every gradient norm within {NORM_RTOL:g} "
            f"(relative) of {LABELS[ref['contestant']]}'s")


def environment(threads):
    """What the header states, also stored in the JSON."""
    import scipy.linalg.blas  # noqa: F401  (its OpenBLAS, the one cyce's GEMMs use, in threadpool_info)
    from threadpoolctl import threadpool_info

    from cyce._info import config

    info = config()
    blas = sorted({f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture', '?')}, "
                   f"{Path(lib['filepath']).parent.name})"
                   for lib in threadpool_info() if lib.get("user_api") == "blas"})
    return {
        "cyce": info["version"], "simd": info["simd"], "python": info["python"], "numpy": info["numpy"],
        "scipy": _bench.package_version("scipy"), "torch": _bench.package_version("torch"),
        "cpu": _bench.cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average": _bench.load_average(), "threads": threads,
        "openblas_env": {name: os.environ.get(name) for name in OPENBLAS_VARIABLES},
        "blas_here": blas,
        "torch_blas": torch_blas(),
    }


def torch_blas():
    """torch's BLAS as its build configuration names it (BLAS_INFO), or None without torch."""
    import importlib.util
    import re

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def print_header(env, rounds):
    print("linear + cross-entropy (a language-model head), mean loss, forward + backward "
          "(the gradients of hidden and linear_weight), float32")
    print(f"cyce {env['cyce']} (simd={env['simd']}), python {env['python']}, numpy {env['numpy']}, "
          f"scipy {env['scipy']}, torch {env['torch']}")
    print(f"machine: {env['cpu']}, os.cpu_count()={env['cpu_count']}, {env['machine']}; "
          f"load average at the start: {env['load_average']}")
    print(f"threads: {env['threads']} (torch.set_num_threads, threadpoolctl over the BLAS and OpenMP "
          f"pools, cyce's num_threads, OMP_NUM_THREADS)")
    print("environment: " + ", ".join(f"{name} {'unset' if value is None else 'set to ' + repr(value)}"
                                      for name, value in env["openblas_env"].items()) + " (left as they are)")
    print("NumPy / SciPy BLAS: " + "; ".join(env["blas_here"])
          + (f"; torch's: {env['torch_blas']}" if env["torch_blas"] else ""))
    print(f"each contestant in a fresh process: a small call (<= 1024 rows, <= 16384 classes), 1 call at the "
          f"shape (its peak memory; the warm-up), then {rounds} timed calls")


def print_footer():
    print("x eager     = median / torch eager's median at the same shape (< 1: faster); x chunked: over the "
          "chunked F.linear_cross_entropy's;")
    print("              x floor: over the three GEMMs alone (cyce's chunking, np.matmul + scipy sgemm, "
          "no cross-entropy kernel)")
    print("chunk       = rows per chunk (cyce, and the floor, which uses cyce's default)")
    print("peak MiB    = growth of the peak RSS (VmHWM) during the first call at the shape, above the "
          "inputs: gradients, logits, buffers")
    print("x eager mem = peak MiB / torch eager's peak MiB")
    print("steady MiB  = the same growth during the last timed call: without what the first call left resident "
          "(the BLAS's buffers, the allocator's arenas)")


def run_report(shapes, threads=THREADS, rounds=ROUNDS, contestants=tuple(CONTESTANTS), sweep=(), json_path=None):
    started = time.perf_counter()
    env = environment(threads)
    print_header(env, rounds)
    rows = []
    for shape in shapes:
        n, h, v = shape
        table = measure_shape(shape, threads, rounds, contestants, sweep)
        first = next((r for r in table if "error" not in r), None)
        print()
        sizes = (f"; logits {first['logits_bytes'] / 2**20:.0f} MiB, inputs {first['inputs_bytes'] / 2**20:.0f} MiB"
                 if first else "")
        print(f"{n}x{h}x{v} (N x H x V), {threads} thread(s){sizes}")
        print(format_line([title for title, _ in COLUMNS]))
        for row in table:
            print(format_row(row))
        print(agreement(table), flush=True)
        rows.extend(table)
    print()
    print_footer()
    elapsed = time.perf_counter() - started
    report = {"kind": "linear_cross_entropy", "environment": env, "elapsed_s": elapsed,
              "load_average_at_end": _bench.load_average(),
              "settings": {"shapes": [list(s) for s in shapes], "threads": threads, "rounds": rounds,
                           "contestants": list(contestants), "chunk_rows_sweep": list(sweep)},
              "rows": rows}
    print()
    status = targets.check_linear(report)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {len(rows)} rows to {json_path}")
    print(f"the report took {elapsed:.0f} s; load average at the end: {_bench.load_average()}")
    return report, status


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench.linear_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the shape " + ",".join("x".join(map(str, s)) for s in QUICK_SHAPES))
    parser.add_argument("--shapes", type=parse_shapes,
                        help="comma-separated ROWSxFEATURESxCLASSES (default "
                             + ",".join("x".join(map(str, s)) for s in FULL_SHAPES) + ")")
    parser.add_argument("--threads", type=positive_int, default=THREADS,
                        help=f"threads of every contestant (default {THREADS})")
    parser.add_argument("--rounds", type=positive_int, default=ROUNDS,
                        help=f"timed calls after the measured one (default {ROUNDS})")
    parser.add_argument("--contestants", type=parse_contestants, default=list(CONTESTANTS),
                        help="comma-separated, of " + ", ".join(CONTESTANTS) + " (default all)")
    parser.add_argument("--chunk-rows", type=parse_ints, default=[],
                        help="also cyce.linear_softmax_ce with each of these chunk_rows, e.g. 256,512,1024,2048")
    parser.add_argument("--json", metavar="PATH", help="also write the environment and rows to PATH as JSON")
    parser.add_argument("--check", metavar="PATH",
                        help="measure nothing: print the targets of the report saved at PATH (exit 1 on a MISS)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.check:
        return targets.check_linear(args.check)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    run_report(shapes, args.threads, args.rounds, args.contestants, args.chunk_rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
