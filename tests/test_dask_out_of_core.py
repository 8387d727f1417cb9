"""cyce.dask over a zarr store on disk larger than the workers' memory.

Two worker processes capped in memory (dask's nanny restarts a worker that
goes past its cap, and the computation would then fail or be retried) read
a store of float32 logits three times the size of one worker's cap.  The
loss equals a streaming float64 reference that reads the store with zarr
chunk by chunk (no dask); no worker went past its cap or restarted.  A
worker killed mid-computation still gives the same bits.  The default run
uses a 512 MiB store and workers capped at 200 MiB; the slow test a
3 GiB store and workers capped at 1 GiB.
"""

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")
cloudpickle = pytest.importorskip("cloudpickle")

import cyce.dask as cd  # noqa: E402
import reference  # noqa: E402

MIB = 2**20
N_CLASSES = 512
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dask_eval.py"


def write_store(path, n_rows, rows_per_chunk, seed=1):
    """float32 logits and int64 labels, written chunk by chunk with zarr alone."""
    group = zarr.open_group(path, mode="w")
    logits = group.create_array("logits", shape=(n_rows, N_CLASSES), dtype="float32",
                                chunks=(rows_per_chunk, N_CLASSES), compressors=None)
    labels = group.create_array("labels", shape=(n_rows,), dtype="int64", chunks=(rows_per_chunk,))
    rng = np.random.default_rng(seed)
    for start in range(0, n_rows, rows_per_chunk):
        rows = min(rows_per_chunk, n_rows - start)
        logits[start:start + rows] = 3 * rng.standard_normal((rows, N_CLASSES), dtype=np.float32)
        chunk_labels = rng.integers(0, N_CLASSES, rows)
        chunk_labels[::5] = -100
        labels[start:start + rows] = chunk_labels
    return path


def streaming_mean(path):
    """The mean loss in float64, one zarr chunk in memory at a time."""
    group = zarr.open_group(path, mode="r")
    logits, labels = group["logits"], group["labels"]
    rows_per_chunk = logits.chunks[0]
    total, counted = 0.0, 0
    for start in range(0, logits.shape[0], rows_per_chunk):
        y = labels[start:start + rows_per_chunk]
        loss, _ = reference.softmax_ce(logits[start:start + rows_per_chunk], y, reduction="sum")
        total += loss
        counted += int(np.count_nonzero(y != -100))
    return total / counted


def peak_rss():
    """This process's peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def capped_cluster(memory_limit):
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None,
                                    memory_limit=memory_limit)


def mean_over_store(path):
    logits = da.from_zarr(str(path), component="logits")
    labels = da.from_zarr(str(path), component="labels")
    return cd.softmax_ce(logits, labels)


def check_out_of_core(path, memory_limit):
    """The loss over the store on capped workers: exact, and within the caps."""
    with capped_cluster(memory_limit) as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        baseline = client.run(peak_rss)
        loss = client.compute(mean_over_store(path), sync=True)
        peaks = client.run(peak_rss)
        assert client.run(os.getpid) == pids, "a worker was restarted"
    store_bytes = sum(f.stat().st_size for f in Path(path, "logits").rglob("*") if f.is_file())
    assert store_bytes > 2 * memory_limit  # more than both workers hold
    for worker, peak in peaks.items():
        print(f"{worker}: peak {peak / MIB:.0f} MiB, {baseline[worker] / MIB:.0f} MiB before")
        assert peak < memory_limit, f"{worker}: peak {peak / MIB:.0f} MiB"
        assert peak - baseline[worker] < memory_limit / 2
    assert loss.dtype == np.float32
    np.testing.assert_allclose(float(loss), streaming_mean(path), rtol=1e-5)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    # 512 MiB of logits in 8 MiB chunks
    return write_store(tmp_path_factory.mktemp("zarr") / "small.zarr", 2**18, 4096)


def test_store_larger_than_worker_memory(small_store):
    # a cap of 128 MiB above a worker's own memory (about 70 MiB once cyce is imported)
    check_out_of_core(small_store, 200 * MIB)


@pytest.mark.slow
def test_3_gib_store_on_1_gib_workers(tmp_path):
    # 3 GiB of logits in 64 MiB chunks
    check_out_of_core(write_store(tmp_path / "large.zarr", 6 * 2**18, 32768), 1024 * MIB)


def slowly(block):
    """Hold each chunk a moment, so that a worker can be killed mid-way."""
    time.sleep(0.05)
    return block


def test_killed_worker_gives_the_same_bits(small_store):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # `slowly`, on the workers
    try:
        with capped_cluster(400 * MIB) as cluster, distributed.Client(cluster) as client:
            expected = client.compute(mean_over_store(small_store), sync=True)
            logits = da.from_zarr(str(small_store), component="logits").map_blocks(slowly)
            labels = da.from_zarr(str(small_store), component="labels")
            future = client.compute(cd.softmax_ce(logits, labels))
            victim, pid = sorted(client.run(os.getpid).items())[0]
            while not client.processing()[victim]:
                time.sleep(0.01)
            time.sleep(0.2)  # a few chunks in
            assert not future.done()
            os.kill(pid, signal.SIGKILL)
            loss = future.result()
            assert victim not in client.scheduler_info()["workers"] or client.run(os.getpid)[victim] != pid
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert loss.tobytes() == expected.tobytes()


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="examples/ is not beside the tests (an installed wheel)")
def test_example_evaluates_a_store(tmp_path):
    """examples/dask_eval.py end to end, at a tiny size."""
    import runpy
    import contextlib
    import io

    example = runpy.run_path(str(EXAMPLE))
    store = str(tmp_path / "demo.zarr")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        example["main"]([store, "--make-demo", "3000", "50", "--workers", "1"])
    group = zarr.open_group(store, mode="r")
    x, y = group["logits"][:], group["labels"][:]
    expected, _ = reference.softmax_ce(x, y)
    assert f"mean loss {expected:.6f}" in printed.getvalue()
