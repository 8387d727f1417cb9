"""Command line of cyce.

    python -m cyce info
    python -m cyce bench [--quick] [--options] [--shapes 4096x32000,512x256000] [--threads 1,2]
                         [--dtype float32,bfloat16,float16,float64] [--json FILE] [--plot FILE.png]

``info`` prints cyce.show_config(); ``bench`` times softmax cross-entropy
(loss + gradient) for cyce, NumPy and, when installed, PyTorch and JAX (see
cyce/_bench.py); with ``--options``, softmax_stats, label smoothing,
probability targets, the softcap and the temperature beside the plain calls
(4096x32000 float32 on one thread; --quick: 2048x32000).  Options given
explicitly override the --quick / full defaults.
"""

import argparse
import sys

DTYPES = ("float32", "float64", "bfloat16", "float16")


def parse_shapes(text, axes=("ROWS", "CLASSES"), example="4096x32000"):
    """'4096x32000,512x256000' -> [(4096, 32000), (512, 256000)]: shapes of
    len(axes) positive sizes each."""
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != len(axes) or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(f"shape {item!r} is not {'x'.join(axes)}, e.g. {example}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def parse_threads(text):
    """'1,2' -> [1, 2]."""
    counts = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise argparse.ArgumentTypeError(f"thread count {item!r} is not a positive integer")
        counts.append(int(item))
    return counts


def parse_dtypes(text):
    """'float32,bfloat16' -> ['float32', 'bfloat16']."""
    dtypes = [item.strip() for item in text.split(",")]
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise argparse.ArgumentTypeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtypes


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m cyce", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("info", help="print version, build flags, OpenMP and SIMD level")

    bench = commands.add_parser(
        "bench",
        help="time softmax cross-entropy loss + gradient against NumPy/PyTorch/JAX",
        description="Time softmax cross-entropy (mean loss + gradient) of cyce and other "
        "libraries, each in a fresh process, and print a comparison table.",
    )
    bench.add_argument(
        "--quick", action="store_true",
        help="small run: shapes 65536x10,16384x1000,2048x32000, float32 and bfloat16, threads 1,2, 3 repeats",
    )
    bench.add_argument(
        "--options", action="store_true",
        help="time softmax_stats and softmax_ce's options (smoothing, probability targets, softcap, "
        "temperature) against the plain calls instead, at 4096x32000 float32, 1 thread",
    )
    bench.add_argument(
        "--shapes", type=parse_shapes,
        help="comma-separated ROWSxCLASSES (default 65536x10,16384x1000,4096x32000,512x256000)",
    )
    bench.add_argument("--threads", type=parse_threads, help="comma-separated thread counts (default 1,2)")
    bench.add_argument(
        "--dtype", type=parse_dtypes,
        help="comma-separated, of float32, float64, bfloat16 (needs ml_dtypes), float16 (default all four)",
    )
    bench.add_argument("--json", metavar="FILE", help="also write the floors, overhead and rows to FILE as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart to FILE.png (needs matplotlib)")
    return parser


def bench_settings(args):
    """The quick or full defaults, with any explicitly given option applied."""
    from ._bench import FULL, OPTIONS_FULL, OPTIONS_QUICK, QUICK

    if args.options:
        settings = dict(OPTIONS_QUICK if args.quick else OPTIONS_FULL)
    else:
        settings = dict(QUICK if args.quick else FULL)
    if args.shapes:
        settings["shapes"] = args.shapes
    if args.threads:
        settings["threads"] = args.threads
    if args.dtype:
        settings["dtypes"] = args.dtype
    return settings


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "info":
        from ._info import show_config

        show_config()
    elif args.command == "bench":
        from ._bench import run_benchmark

        run_benchmark(bench_settings(args), json_path=args.json, plot_path=args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
