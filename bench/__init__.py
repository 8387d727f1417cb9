"""pytest-benchmark suites of cyce, with PyTorch, JAX and NumPy as peers.

Not collected by the default ``pytest`` run (``testpaths = ["tests"]``); run
them by naming the directory:

    .venv/bin/python -m pytest bench                        # everything (make bench-suite)
    .venv/bin/python -m pytest bench -m quick               # float32, the two small shapes
    .venv/bin/python -m pytest bench/test_speed_*.py -m "not peer" --benchmark-only   # cyce alone
    .venv/bin/python -m pytest bench -k "4096x32000 and float32 and 2t"
    .venv/bin/python -m pytest bench --benchmark-disable --cyce-shapes=smoke   # CI smoke run

Every timed call is a real call: in-place contestants get their logits back
from a saved copy in pedantic's ``setup``, outside the timing.  Each
benchmark is grouped by function, shape, dtype and thread count, so
pytest-benchmark's table shows cyce and its peers side by side with their
ratios to the fastest.  Markers: ``quick``, ``large``, ``peer``, ``memory``
(see conftest.py); ``--cyce-shapes=smoke`` keeps the class counts but cuts the
rows so that every case runs in milliseconds.
"""
