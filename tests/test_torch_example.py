"""examples/torch_training.py keeps working (run at a tiny size; skipped
where torch is not installed)."""

import runpy
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_training.py"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="run from outside the checkout (the wheel's test)")
def test_training_example_runs_and_both_losses_agree(capsys):
    main = runpy.run_path(str(EXAMPLE))["main"]
    results = main(["--vocab", "50", "--batch", "8", "--hidden", "16", "--steps", "3"])
    torch_losses, cyce_losses = results["torch"][0], results["cyce.torch"][0]
    assert len(cyce_losses) == 3
    assert cyce_losses == pytest.approx(torch_losses, rel=1e-5)
    assert "faster" in capsys.readouterr().out
