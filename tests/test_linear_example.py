"""examples/linear_head.py keeps working and learns (run at a tiny size)."""

import runpy
from pathlib import Path

import pytest

pytest.importorskip("scipy")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "linear_head.py"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="run from outside the checkout (the wheel's test)")
def test_the_head_learns_the_rule(capsys):
    main = runpy.run_path(str(EXAMPLE))["main"]
    losses = main(["--vocab", "300", "--tokens", "256", "--hidden", "32", "--steps", "30",
                   "--chunk-rows", "100"])
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0]
    assert "were never held" in capsys.readouterr().out
