"""Evaluate a model's softmax cross entropy over logits stored on disk, with dask.

    python examples/dask_eval.py STORE --make-demo 200000 1000   # write a demo store first
    python examples/dask_eval.py STORE                           # a local cluster of 2 workers
    python examples/dask_eval.py STORE --scheduler tcp://10.0.0.5:8786   # an existing cluster

STORE is a zarr group holding ``logits`` (N, C) float32 and ``labels`` (N,)
integers, chunked by rows with every class of a row in one chunk.  The
workers read the chunks from the store themselves (``da.from_zarr``), so the
data never has to fit in memory, on the workers or here; on a cluster the
store must be on a path (or an object store URL) that every worker can read.
Prints the mean loss, the worst row's loss and the throughput.
"""

import argparse
import contextlib
import time

import dask
import dask.array as da
import numpy as np
import zarr
from dask.distributed import Client, LocalCluster

import cyce.dask


def write_demo_store(path, n_rows, n_classes, rows_per_chunk=8192, seed=0):
    """Random logits and labels, written one chunk at a time (uncompressed)."""
    group = zarr.open_group(path, mode="w")
    logits = group.create_array("logits", shape=(n_rows, n_classes), dtype="float32",
                                chunks=(rows_per_chunk, n_classes), compressors=None)
    labels = group.create_array("labels", shape=(n_rows,), dtype="int64",
                                chunks=(rows_per_chunk,), compressors=None)
    rng = np.random.default_rng(seed)
    for start in range(0, n_rows, rows_per_chunk):
        rows = min(rows_per_chunk, n_rows - start)
        logits[start:start + rows] = 2 * rng.standard_normal((rows, n_classes), dtype=np.float32)
        labels[start:start + rows] = rng.integers(0, n_classes, rows)


def evaluate(path):
    """(mean loss, worst row's loss, bytes of logits) of the store, computed
    on the current dask scheduler in one pass over the logits."""
    logits = da.from_zarr(path, component="logits")
    labels = da.from_zarr(path, component="labels")
    mean = cyce.dask.softmax_ce(logits, labels)
    worst = cyce.dask.softmax_ce(logits, labels, reduction="none").max()
    mean, worst = dask.compute(mean, worst)
    return float(mean), float(worst), logits.nbytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="path of the zarr group")
    parser.add_argument("--make-demo", nargs=2, type=int, metavar=("ROWS", "CLASSES"),
                        help="first write a demo store of this shape")
    parser.add_argument("--scheduler", help="address of a running scheduler (tcp://host:port)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster's worker processes")
    args = parser.parse_args(argv)
    if args.make_demo:
        write_demo_store(args.store, *args.make_demo)
    with contextlib.ExitStack() as stack:
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=args.workers, threads_per_worker=1, dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        start = time.perf_counter()
        mean, worst, n_bytes = evaluate(args.store)
        seconds = time.perf_counter() - start
        print(f"mean loss {mean:.6f}, worst row {worst:.4f}: {n_bytes / 1e9:.2f} GB of logits "
              f"in {seconds:.2f} s ({n_bytes / 1e9 / seconds:.2f} GB/s) on "
              f"{len(client.scheduler_info()['workers'])} workers")


if __name__ == "__main__":
    main()
