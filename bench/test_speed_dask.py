"""cyce.dask: a dask array in the memory of two workers against one in-memory
cyce call, and the throughput over a zarr store next to the disk's read speed.

The workloads are bench/dask_report.py's (softmax_ce's mean loss, float32,
1024 classes, 128 MiB chunks): 2 GiB in memory and a 1 GiB store in full,
1/256 of the rows with --cyce-shapes=smoke.  Each group's extra_info has the
GB/s; `python -m bench.dask_report` prints them with the ratios.
"""

import numpy as np
import pytest

from . import dask_report as report

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def divisor(request):
    return report.SMOKE_DIVISOR if request.config.getoption("cyce_shapes") == "smoke" else 1


@pytest.fixture(scope="module")
def client():
    with report.two_workers() as client:
        yield client


@pytest.fixture(scope="module")
def in_memory(client, divisor):
    """((dask logits, labels) on the workers, (NumPy logits, labels) here, the loss)."""
    on_workers, here = report.in_memory_inputs(client, report.IN_MEMORY_ROWS // divisor,
                                               report.ROWS_PER_CHUNK // divisor)
    yield on_workers, here, report.numpy_loss(*here)
    client.cancel(list(on_workers))


@pytest.fixture(scope="module")
def store(tmp_path_factory, divisor):
    return report.write_store(tmp_path_factory.mktemp("bench") / "bench.zarr",
                              report.STORE_ROWS // divisor, report.ROWS_PER_CHUNK // divisor)


def record(benchmark, group, n_bytes):
    benchmark.group = group
    benchmark.extra_info["bytes"] = n_bytes


@pytest.mark.parametrize("contestant", ["cyce_in_memory_2_threads", "dask_2_workers"])
def test_in_memory(benchmark, client, in_memory, contestant):
    (x, labels), (local_x, local_labels), expected = in_memory
    record(benchmark, "dask: 2 GiB in memory, softmax_ce mean", local_x.nbytes)
    if contestant == "dask_2_workers":
        run = lambda: report.dask_loss(client, x, labels)  # noqa: E731
    else:
        run = lambda: report.numpy_loss(local_x, local_labels)  # noqa: E731
    loss = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert np.isclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.parametrize("contestant", ["disk_read", "dask_read_only", "dask_2_workers"])
def test_store(benchmark, client, store, contestant, cache):
    n_bytes = report.logits_bytes(store)
    record(benchmark, f"dask: a zarr store on disk, {cache}", n_bytes)
    run = {"disk_read": lambda: report.read_files(store),
           "dask_read_only": lambda: report.store_max(client, store),
           "dask_2_workers": lambda: report.store_loss(client, store)}[contestant]
    if cache == "cold":
        result = benchmark.pedantic(run, setup=lambda: report.evict(store), rounds=3, iterations=1)
    else:
        report.read_files(store)
        result = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert np.isfinite(result) and result > 0
