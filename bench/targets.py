"""The project's own speed targets, checked against a `python -m cyce bench`
report (its --json file).  They are ours, not a user's: the report itself
prints the table and ratios; `make bench-targets` runs the full report and
this check, which prints one PASS or MISS line per target it can evaluate
and exits 1 on a MISS.

    python -m bench.targets build/bench-full.json

A MISS on a busy machine says little: compare within one quiet run.  The
half-precision targets compare two rows of the same report (the full report
times bfloat16 and float16 right after float32 at each shape).
"""

import json
import sys

from cyce._bench import BASELINE, PEERS, half_speedups, numpy_dtype, option_ratios

# cyce in place on one thread at a large shape: float32 median / half median
HALF_SPEEDUP = {"bfloat16": 1.6, "float16": 1.5}
# `python -m cyce bench --options`: each option's median at most this times
# its plain call's (cyce._bench.OPTION_BASES), 4096x32000 float32, one thread
OPTION_TARGET_SHAPE = "4096x32000"
OPTION_LIMITS = {"cyce stats": 1.25, "cyce smoothing": 1.15, "cyce soft": 1.3, "cyce softcap": 1.5}


def target_checks(rows, overhead_us=None):
    """The project's speed targets that a report measured, one line each:
    "PASS ..." or "MISS ...", with the figures."""
    table = {}
    for row in rows:
        if "error" not in row:
            table[(row["shape"], row["dtype"], row["threads"], row["contestant"])] = row
    shapes = sorted({row["shape"] for row in rows}, key=lambda s: int(s.split("x")[1]))
    large = [s for s in shapes if int(s.split("x")[1]) >= 32000]
    small = [s for s in shapes if int(s.split("x")[1]) < 32000]
    lines = []

    def check(ok, text):
        lines.append(("PASS " if ok else "MISS ") + text)

    def ms(shape, dtype, threads, contestant):
        row = table.get((shape, dtype, threads, contestant))
        return row["median_ms"] if row else None

    for shape in large:
        one = table.get((shape, "float32", 1, BASELINE))
        if one:
            for peer, factor in (("jax", 3), ("torch", 10)):
                peer_ms = ms(shape, "float32", 1, peer)
                if peer_ms:
                    check(peer_ms >= factor * one["median_ms"],
                          f"{shape} float32 1T: {peer} / cyce = {peer_ms / one['median_ms']:.2f} (>= {factor})")
            if "x_floor" in one:
                check(one["x_floor"] <= 1.5, f"{shape} float32 1T: {one['x_floor']:.2f}x the floor (<= 1.5)")
        two = ms(shape, "float32", 2, BASELINE)
        if one and two:
            check(one["median_ms"] / two >= 1.8, f"{shape} float32: 2T speed-up {one['median_ms'] / two:.2f} (>= 1.8)")
    for shape, dtype, threads, speedup in half_speedups(rows):
        if shape in large and threads == 1:
            factor = HALF_SPEEDUP[dtype]
            check(speedup >= factor,
                  f"{shape} {dtype} 1T in place: {speedup:.2f}x as fast as float32 in place (>= {factor})")
    for shape in small:
        one, two = ms(shape, "float32", 1, BASELINE), ms(shape, "float32", 2, BASELINE)
        peers = [v for v in (ms(shape, "float32", 2, "jax"), ms(shape, "float32", 2, "torch")) if v]
        if two and peers:
            check(min(peers) >= 2 * two, f"{shape} float32 2T: fastest peer / cyce = {min(peers) / two:.2f} (>= 2)")
        if one and two:
            check(two <= one * 1.05, f"{shape} float32: 2T {two:.3f} ms vs 1T {one:.3f} ms (never slower)")
    for (shape, dtype, threads, contestant), row in sorted(table.items()):
        if contestant != "cyce loss":
            continue
        jax_ms = ms(shape, dtype, threads, "jax loss")
        if jax_ms:
            check(jax_ms >= 1.5 * row["median_ms"],
                  f"{shape} {dtype} {threads}T loss only: jax loss / cyce loss = {jax_ms / row['median_ms']:.2f} (>= 1.5)")
    for shape in shapes:
        for threads in (1, 2):
            cyce_ms = ms(shape, "float64", threads, BASELINE)
            peers = [v for v in (ms(shape, "float64", threads, p) for p in PEERS) if v]
            if cyce_ms and peers:
                factor = 2 if shape in large else 1
                check(min(peers) >= factor * cyce_ms,
                      f"{shape} float64 {threads}T: fastest peer / cyce = {min(peers) / cyce_ms:.2f} (>= {factor})")
    for (shape, dtype, threads, contestant), row in sorted(table.items()):
        logits_mib = row["n"] * row["c"] * numpy_dtype(dtype).itemsize / 2**20
        # (RSS moves by pages and by the allocator's arenas: 64 KiB of slack)
        if contestant == "cyce inplace":
            check(row["mem_growth_mib"] <= max(0.01 * logits_mib, 1 / 16),
                  f"{shape} {dtype} {threads}T in place: memory growth {row['mem_growth_mib']:.2f} MiB "
                  f"(< 1% of {logits_mib:.1f} MiB)")
        elif contestant == "cyce grad":
            check(row["mem_growth_mib"] <= 1.01 * logits_mib + 1 / 16,
                  f"{shape} {dtype} {threads}T new grad: memory growth {row['mem_growth_mib']:.2f} MiB "
                  f"(the gradient: {logits_mib:.1f} MiB)")
    if overhead_us is not None:
        check(overhead_us < 10, f"8x4 float32 in place: {overhead_us:.2f} us per call (< 10)")
    for shape, dtype, threads, contestant, plain, ratio in option_ratios(rows):
        limit = OPTION_LIMITS.get(contestant)
        if limit and shape == OPTION_TARGET_SHAPE and dtype == "float32" and threads == 1:
            check(ratio <= limit, f"{shape} float32 1T: {contestant} / {plain} = {ratio:.2f} (<= {limit})")
    return lines


# ---------------------------------------------------------------------------
# linear_softmax_ce / cyce.torch.linear_cross_entropy: bench/linear_report.py's
# --json report (python -m bench.linear_report --check REPORT.json prints these)
# ---------------------------------------------------------------------------

LINEAR_TARGET_CLASSES = 32000   # the vocabulary at which the issue sets the targets
LINEAR_VS_EAGER = 0.9           # cyce's median <= this x torch eager's (h @ W.T, F.cross_entropy)
LINEAR_VS_CHUNKED = 1.0         # ... <= this x F.linear_cross_entropy's chunked path
LINEAR_MEMORY_VS_EAGER = 0.25   # cyce's peak extra memory <= this x torch eager's
LINEAR_VS_FLOOR = 1.15          # cyce.linear_softmax_ce's median <= this x the three GEMMs alone


def linear_target_checks(rows):
    """The fused head's targets that a linear report measured, one line
    each ("PASS ..." or "MISS ...", with the figures), at every shape with
    LINEAR_TARGET_CLASSES classes: cyce.linear_softmax_ce (NumPy) against
    torch eager, the chunked F.linear_cross_entropy and the GEMM floor, and
    cyce.torch.linear_cross_entropy against the first two.  Rows of a
    chunk_rows sweep (an explicit chunk_rows) are not the default call and
    are left out."""
    table = {}
    for row in rows:
        if "error" not in row and row.get("requested_chunk_rows") is None:
            table[(row["shape"], row["threads"], row["contestant"])] = row
    shapes = sorted({row["shape"] for row in rows if row["v"] == LINEAR_TARGET_CLASSES},
                    key=lambda s: [int(p) for p in s.split("x")])
    lines = []

    def check(ok, text):
        lines.append(("PASS " if ok else "MISS ") + text)

    for shape in shapes:
        for threads in sorted({t for (s, t, _) in table if s == shape}):
            def row_of(contestant):
                return table.get((shape, threads, contestant))

            eager, chunked, floor = row_of("torch_eager"), row_of("torch_linear_ce_chunked"), row_of("gemm_floor")
            for contestant, name in (("cyce", "cyce"), ("cyce_torch", "cyce.torch")):
                row = row_of(contestant)
                if not row:
                    continue
                where = f"{shape} float32 {threads}T {name}"
                if eager:
                    ratio = row["median_s"] / eager["median_s"]
                    check(ratio <= LINEAR_VS_EAGER,
                          f"{where}: {ratio:.2f}x torch eager's time (<= {LINEAR_VS_EAGER})")
                if chunked:
                    ratio = row["median_s"] / chunked["median_s"]
                    check(ratio <= LINEAR_VS_CHUNKED,
                          f"{where}: {ratio:.2f}x the chunked F.linear_cross_entropy's time "
                          f"(<= {LINEAR_VS_CHUNKED})")
                if eager and eager["peak_growth_mib"] > 0:
                    ratio = row["peak_growth_mib"] / eager["peak_growth_mib"]
                    check(ratio <= LINEAR_MEMORY_VS_EAGER,
                          f"{where}: peak extra memory {row['peak_growth_mib']:.0f} MiB, {ratio:.1%} of "
                          f"torch eager's {eager['peak_growth_mib']:.0f} MiB (<= {LINEAR_MEMORY_VS_EAGER:.0%})")
                if floor and contestant == "cyce":
                    ratio = row["median_s"] / floor["median_s"]
                    check(ratio <= LINEAR_VS_FLOOR,
                          f"{where}: {ratio:.2f}x the three GEMMs alone (<= {LINEAR_VS_FLOOR})")
    return lines


def check_linear(report_json):
    """Print the linear targets of a linear report (a path to its --json
    file, or the report as a dict); 1 if one missed, else 0."""
    if not isinstance(report_json, dict):
        with open(report_json) as f:
            report_json = json.load(f)
    lines = linear_target_checks(report_json["rows"])
    print("linear cross-entropy targets measured in this report:")
    for line in lines or ["(none: no shape with %d classes)" % LINEAR_TARGET_CLASSES]:
        print("  " + line)
    return 1 if any(line.startswith("MISS") for line in lines) else 0


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python -m bench.targets REPORT.json")
    with open(argv[1]) as f:
        report = json.load(f)
    if report.get("kind") == "linear_cross_entropy":  # python -m bench.linear_report --json
        return check_linear(report)
    lines = target_checks(report["rows"], report.get("overhead_us"))
    print("speed targets measured in this report:")
    for line in lines:
        print("  " + line)
    return 1 if any(line.startswith("MISS") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
