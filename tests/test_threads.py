"""Threads the ecosystem's way: num_threads=None follows OpenMP's default,
which OMP_NUM_THREADS and threadpoolctl set, as for scikit-learn and NumPy's
BLAS.  cyce has no set_num_threads of its own: threadpoolctl already limits
its OpenMP runtime, per call site or globally."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cyce
import cyce._core
import cyce._dispatch
from cyce._info import config

OPENMP = config()["openmp"]
BIG = (1 << 20, 1 << 30)  # (rows, elements): large enough for every thread


def threads_now():
    """What the module reports, and what a large call would use."""
    return cyce._core.default_threads(), cyce._dispatch.threads_for(None, *BIG)


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """The exact thread counts below hold on a machine that is not busy;
    the busy case has tests of its own."""
    monkeypatch.setattr(cyce._dispatch, "LOAD_AWARE", False)


def run_python(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environ["CYCE_LOAD_AWARE"] = "0"
    environ.update(env)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=environ, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("omp_num_threads", ["1", "3"])
def test_default_follows_omp_num_threads(omp_num_threads):
    out = run_python("""
        import cyce._dispatch, cyce._info
        print(cyce._core.default_threads(), cyce._dispatch.threads_for(None, 1 << 20, 1 << 30),
              cyce._info.config()["default_threads"])
    """, OMP_NUM_THREADS=omp_num_threads)
    expected = omp_num_threads if OPENMP else "1"
    assert out.split() == [expected] * 3


def test_threadpoolctl_limits_cyce():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not OPENMP:
        pytest.skip("a serial build always runs on one thread")
    before = threads_now()
    with threadpoolctl.threadpool_limits(3, user_api="openmp"):
        assert threads_now() == (3, 3)
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert threads_now() == (1, 1)
        assert threads_now() == (3, 3)
    assert threads_now() == before
    # an explicit num_threads is the caller's choice, limit or not
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cyce._dispatch.threads_for(2, *BIG) == 2


def test_results_do_not_depend_on_the_limit(rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    logits = rng.standard_normal((4096, 64)).astype(np.float32)
    labels = rng.integers(0, 64, 4096)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        one = cyce.softmax_ce(logits, labels, return_grad=True)
    with threadpoolctl.threadpool_limits(2, user_api="openmp"):
        two = cyce.softmax_ce(logits, labels, return_grad=True)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])


def test_threadpoolctl_sees_cyces_openmp_runtime():
    pytest.importorskip("threadpoolctl")
    if not OPENMP:
        pytest.skip("a serial build loads no OpenMP runtime")
    out = run_python("""
        import json, os, numpy, threadpoolctl
        def openmp():
            return {os.path.realpath(lib["filepath"]) for lib in threadpoolctl.threadpool_info()
                    if lib["user_api"] == "openmp"}
        before = openmp()
        import cyce
        print(json.dumps({"new": sorted(openmp() - before), "package": os.path.dirname(cyce.__file__)}))
    """)
    seen = json.loads(out)
    assert seen["new"], "importing cyce loaded no OpenMP library that threadpoolctl can see"
    vendored = os.path.join(os.path.dirname(seen["package"]), "cyce.libs")
    if os.path.isdir(vendored):  # a repaired wheel: its own libgomp, which threadpoolctl must find
        assert any(path.startswith(os.path.realpath(vendored)) for path in seen["new"]), seen


def test_small_inputs_run_on_one_thread_whatever_is_asked():
    """num_threads is a most: below SERIAL_BELOW elements a call runs on one
    thread (waking a second costs more than it saves; see cyce._dispatch)."""
    from cyce._dispatch import SERIAL_BELOW, threads_for

    assert threads_for(2, 1000, SERIAL_BELOW - 1) == 1
    assert threads_for(None, 1000, SERIAL_BELOW - 1) == 1
    assert threads_for(2, 1000, SERIAL_BELOW) == 2
    assert threads_for(7, 3, SERIAL_BELOW * 10) == 3


@pytest.mark.parametrize("load, expected", [(0.3, 4), (4.0, 4), (4.5, 4), (4.6, 3), (6.4, 2), (30.0, 1)])
def test_a_busy_machine_lowers_the_default(monkeypatch, load, expected):
    """More than half a core above a 1-minute load average of one per core,
    a default-thread call leaves the cores the load takes: 4 cores at load
    6.4 give 2 threads."""
    monkeypatch.setattr(cyce._dispatch, "LOAD_AWARE", True)
    monkeypatch.setattr(cyce._dispatch, "CORES", 4)
    monkeypatch.setattr(cyce._dispatch.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(cyce._core, "default_threads", lambda: 4)
    assert cyce._dispatch.threads_for(None, *BIG) == expected
    # an explicit count is the caller's, busy or not
    assert cyce._dispatch.threads_for(4, *BIG) == 4


def test_load_awareness_can_be_turned_off():
    out = run_python("""
        import os, cyce._dispatch
        os.getloadavg = lambda: (99.0, 99.0, 99.0)
        print(cyce._dispatch.LOAD_AWARE, cyce._dispatch.busy_cap())
    """)
    assert out.split() == ["False", "None"]
