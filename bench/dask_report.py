"""cyce.dask's speed: a dask array in the memory of two workers against one
in-memory cyce call, and the throughput over a zarr store on disk next to
the disk's own read speed.

    .venv/bin/python -m bench.dask_report            # 2 GiB in memory, a 1 GiB store
    .venv/bin/python -m bench.dask_report --smoke    # the same code at 1/256 of the rows

bench/test_speed_dask.py times the same workloads with pytest-benchmark.
Everything is softmax_ce's mean loss of float32 logits with 1024 classes;
the cluster is a LocalCluster of two worker processes with one thread each
(each chunk's kernel on one thread: two cores in all, like the in-memory
call's two OpenMP threads).  "Cold" means the store's files were evicted from
the page cache first (posix_fadvise DONTNEED on those files alone), "warm"
that they were just read.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

N_CLASSES = 1024
IN_MEMORY_ROWS = 2**19        # 2 GiB of float32 logits ...
STORE_ROWS = 2**18            # ... and 1 GiB on disk
ROWS_PER_CHUNK = 2**15        # 128 MiB chunks: 16 in memory, 8 on disk
SMOKE_DIVISOR = 256
GB = 1e9


@contextlib.contextmanager
def two_workers():
    """A Client of a fresh LocalCluster: two worker processes, one thread each."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def in_memory_inputs(client, n_rows, rows_per_chunk):
    """(dask logits, dask labels) in the workers' memory, chunk i of both on
    worker i % 2 (made there: persisting a random array can leave it all on
    one worker), and the same values gathered here as NumPy arrays."""
    import dask
    import dask.array as da
    from dask.distributed import wait

    workers = sorted(client.scheduler_info()["workers"])
    logits, labels = [], []
    for i, start in enumerate(range(0, n_rows, rows_per_chunk)):
        rows = min(rows_per_chunk, n_rows - start)
        rng = np.random.default_rng(i)
        where = dict(workers=[workers[i % len(workers)]], pure=False)
        logits.append(da.from_delayed(dask.delayed(client.submit(
            rng.standard_normal, (rows, N_CLASSES), np.float32, **where)), (rows, N_CLASSES), np.float32))
        labels.append(da.from_delayed(dask.delayed(client.submit(
            rng.integers, 0, N_CLASSES, rows, **where)), (rows,), np.int64))
    x, y = client.persist([da.concatenate(logits), da.concatenate(labels)])
    wait([x, y])
    return (x, y), (x.compute(), y.compute())


def dask_loss(client, x, labels):
    import cyce.dask

    return client.compute(cyce.dask.softmax_ce(x, labels), sync=True)


def numpy_loss(x, labels):
    import cyce

    return cyce.softmax_ce(x, labels, num_threads=2)


def write_store(path, n_rows, rows_per_chunk):
    """An uncompressed zarr group of float32 logits and int64 labels."""
    import zarr

    group = zarr.open_group(str(path), mode="w")
    logits = group.create_array("logits", shape=(n_rows, N_CLASSES), dtype="float32",
                                chunks=(rows_per_chunk, N_CLASSES), compressors=None)
    labels = group.create_array("labels", shape=(n_rows,), dtype="int64", chunks=(rows_per_chunk,),
                                compressors=None)
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, rows_per_chunk):
        logits[start:start + rows_per_chunk] = rng.standard_normal(
            (rows_per_chunk, N_CLASSES), dtype=np.float32)
        labels[start:start + rows_per_chunk] = rng.integers(0, N_CLASSES, rows_per_chunk)
    return path


def store_files(path):
    return sorted(f for f in Path(path).rglob("*") if f.is_file())


def evict(path):
    """Drop the store's files (only them) from the page cache."""
    for name in store_files(path):
        with open(name, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def read_files(path):
    """Read every file of the store once, 16 MiB at a time: bytes read."""
    total = 0
    buffer = bytearray(16 * 2**20)
    for name in store_files(path):
        with open(name, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                total += n
    return total


def store_loss(client, path):
    import dask.array as da

    import cyce.dask

    logits = da.from_zarr(str(path), component="logits")
    labels = da.from_zarr(str(path), component="labels")
    return client.compute(cyce.dask.softmax_ce(logits, labels), sync=True)


def store_max(client, path):
    """dask reading the store's logits alone (their max: a pass at memory
    speed), to tell zarr's and dask's share of store_loss from cyce's."""
    import dask.array as da

    return client.compute(da.from_zarr(str(path), component="logits").max(), sync=True)


def logits_bytes(path):
    return sum(f.stat().st_size for f in store_files(Path(path) / "logits"))


def timed(run, rounds, prepare=None):
    """(min, median) seconds of `rounds` calls of run, each after prepare."""
    times = []
    for _ in range(rounds):
        if prepare:
            prepare()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def measure(smoke=False, rounds=5):
    """{name: (min s, median s, bytes)} of every workload."""
    divisor = SMOKE_DIVISOR if smoke else 1
    rows_per_chunk = ROWS_PER_CHUNK // divisor
    results = {}
    with two_workers() as client, tempfile.TemporaryDirectory(dir=os.environ.get("CYCE_BENCH_DIR")) as tmp:
        (x, labels), (local_x, local_labels) = in_memory_inputs(client, IN_MEMORY_ROWS // divisor, rows_per_chunk)
        expected = numpy_loss(local_x, local_labels)
        assert np.isclose(dask_loss(client, x, labels), expected, rtol=1e-5)
        results["in-memory cyce call (2 threads)"] = timed(lambda: numpy_loss(local_x, local_labels), rounds) + (local_x.nbytes,)
        results["dask, 2 workers, in memory"] = timed(lambda: dask_loss(client, x, labels), rounds) + (local_x.nbytes,)
        del x, labels, local_x, local_labels
        client.cancel(list(client.futures))

        store = write_store(Path(tmp) / "bench.zarr", STORE_ROWS // divisor, rows_per_chunk)
        n_bytes = logits_bytes(store)
        store_rounds = max(2, rounds // 2)
        results["disk read, cold"] = timed(lambda: read_files(store), store_rounds, lambda: evict(store)) + (n_bytes,)
        results["dask over the store, cold"] = timed(lambda: store_loss(client, store), store_rounds,
                                                     lambda: evict(store)) + (n_bytes,)
        read_files(store)
        results["disk read, warm"] = timed(lambda: read_files(store), store_rounds) + (n_bytes,)
        results["dask over the store, warm"] = timed(lambda: store_loss(client, store), store_rounds) + (n_bytes,)
        results["dask reading the store alone, warm"] = timed(lambda: store_max(client, store), store_rounds) + (n_bytes,)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description="cyce.dask's speed figures")
    parser.add_argument("--smoke", action="store_true", help=f"1/{SMOKE_DIVISOR} of the rows")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    results = measure(args.smoke, args.rounds)
    print(f"softmax_ce mean loss, float32, {N_CLASSES} classes, {ROWS_PER_CHUNK // (SMOKE_DIVISOR if args.smoke else 1)}-row chunks")
    print(f"{'workload':36} {'GiB':>6} {'min ms':>9} {'median ms':>10} {'GB/s':>7}  ratio")
    pairs = {"dask, 2 workers, in memory": "in-memory cyce call (2 threads)",
             "dask over the store, cold": "disk read, cold",
             "dask over the store, warm": "disk read, warm",
             "dask reading the store alone, warm": "disk read, warm"}
    for name, (best, median, n_bytes) in results.items():
        ratio = ""
        if name in pairs:
            ratio = f"{best / results[pairs[name]][0]:.2f}x the time of '{pairs[name]}'"
        print(f"{name:36} {n_bytes / 2**30:6.2f} {best * 1e3:9.1f} {median * 1e3:10.1f} "
              f"{n_bytes / GB / best:7.2f}  {ratio}")
    return results


if __name__ == "__main__":
    main()
