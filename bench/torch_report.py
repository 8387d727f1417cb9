"""cyce.torch against torch.nn.functional.cross_entropy in one run: forward +
backward time and peak memory, each contestant in a fresh process
(bench/torch_probe.py), as a table of ratios to F.cross_entropy.

    python -m bench.torch_report [N_ROWS N_CLASSES [THREADS [ROUNDS]]]

Defaults: 4096 x 32000 float32, one thread, 5 timed rounds after one
measured call.  rows() returns the table's rows for a larger report.
"""

import sys

from .test_speed_torch import run_probe

CONTESTANTS = ("torch", "cyce_torch", "cyce_torch_inplace")
TARGETS = {  # what the contract asks of each cyce contestant against torch
    "cyce_torch": "speed-up >= 10x, memory <= 1.1x the logits",
    "cyce_torch_inplace": "memory ~0",
}


def rows(n_rows=4096, n_classes=32000, threads=1, rounds=5, dtype="float32"):
    """One dict per contestant: median and minimum ms, speed-up over torch
    (its median over this one's), and the peak memory the first call added,
    in logits' sizes."""
    probes = {name: run_probe(name, n_rows, n_classes, dtype, threads, rounds) for name in CONTESTANTS}
    torch_median = probes["torch"]["median_s"]
    table = []
    for name, probe in probes.items():
        table.append({
            "contestant": name,
            "shape": f"{n_rows}x{n_classes}",
            "dtype": dtype,
            "threads": threads,
            "median_ms": 1e3 * probe["median_s"],
            "min_ms": 1e3 * probe["min_s"],
            "speedup_vs_torch": torch_median / probe["median_s"],
            "peak_growth_x_logits": probe["peak_growth"] / probe["nbytes"],
            "target": TARGETS.get(name, ""),
        })
    return table


def main(argv=None):
    args = [int(a) for a in (sys.argv[1:] if argv is None else argv)]
    table = rows(*args)
    first = table[0]
    print(f"cross-entropy forward + backward, {first['shape']} {first['dtype']}, "
          f"{first['threads']} thread(s), medians")
    print(f"{'contestant':<20} {'median ms':>10} {'min ms':>9} {'vs torch':>9} {'peak memory':>12}  target")
    for row in table:
        print(f"{row['contestant']:<20} {row['median_ms']:>10.1f} {row['min_ms']:>9.1f} "
              f"{row['speedup_vs_torch']:>8.1f}x {row['peak_growth_x_logits']:>11.2f}x  {row['target']}")
    return table


if __name__ == "__main__":
    main()
