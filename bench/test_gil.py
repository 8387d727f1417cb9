"""cyce releases the GIL in its kernels: two Python threads, each calling a
one-thread cyce on a large input, take about half the time of the same two
calls made one after the other (on a machine with two free cores).

A measurement, not a unit test (tests/test_concurrency.py checks that such
calls give the serial results): for each function, `serial` times two calls
in a row and `two_threads` the same two calls started together on two Python
threads; pytest-benchmark prints both in one group, and the threaded test
records `ratio_to_serial` (its min over the serial min: about 0.5 when the
GIL is released, about 1.0 if it were held) in its extra_info and prints it.
Each call writes its gradient into a buffer of its own, allocated once.

Run it alone with `.venv/bin/python -m pytest bench/test_gil.py` (add
`-s` to see the ratios).
"""

import threading

import numpy as np
import pytest

import cyce

# float32 inputs taking tens to hundreds of milliseconds per one-thread call
SHAPES = {"softmax_ce": (2048, 8192), "sigmoid_bce": (512, 8192)}
ROUNDS = 10
_serial_min = {}


def _inputs(function):
    shape = SHAPES[function]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 3
    if function == "softmax_ce":
        target = rng.integers(0, shape[1], shape[0])
    else:
        target = rng.random(shape, dtype=np.float32)
    return x, target


def _one_call(function, x, target):
    """One single-thread call writing into its own gradient buffer."""
    fn = getattr(cyce, function)
    grad = np.empty_like(x)

    def call():
        return fn(x, target, grad_out=grad, num_threads=1)
    return call


@pytest.mark.parametrize("function", ["softmax_ce", "sigmoid_bce"])
@pytest.mark.parametrize("mode", ["serial", "two_threads"])
def test_gil_released(benchmark, function, mode):
    x, target = _inputs(function)
    first, second = _one_call(function, x, target), _one_call(function, x, target)

    def serial():
        first()
        second()

    def two_threads():
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    shape = "x".join(map(str, SHAPES[function]))
    benchmark.group = f"GIL: two 1-thread {function} calls on {shape} float32"
    benchmark.extra_info.update(function=function, mode=mode, shape=shape)
    benchmark.pedantic(serial if mode == "serial" else two_threads, rounds=ROUNDS, iterations=1,
                       warmup_rounds=1)
    if benchmark.disabled:
        return
    if mode == "serial":
        _serial_min[function] = benchmark.stats.stats.min
    elif function in _serial_min:
        ratio = benchmark.stats.stats.min / _serial_min[function]
        benchmark.extra_info["ratio_to_serial"] = round(ratio, 3)
        print(f"\n{function}: two threads / two serial calls = {ratio:.2f} (min times)")
