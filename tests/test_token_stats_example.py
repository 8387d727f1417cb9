"""examples/token_stats.py keeps working, and its figures are what NumPy
computes from the same logits in float64 (run at a small size)."""

import runpy
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "token_stats.py"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="run from outside the checkout (the wheel's test)")
def test_the_example_computes_what_numpy_does(capsys):
    main = runpy.run_path(str(EXAMPLE))["main"]
    temperature = 0.7
    stats, tokens, advantages, loss, grad, evaluation, labels, logits = main(
        ["--tokens", "300", "--vocab", "1000", "--temperature", str(temperature)])
    z = logits.astype(np.float64) / temperature
    lse = np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1)) + z.max(1)
    p = np.exp(z - lse[:, None])
    rows = np.arange(len(tokens))
    logprob = z[rows, tokens] - lse
    np.testing.assert_allclose(stats.logprob, logprob, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.entropy, lse - np.sum(p * z, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, -np.mean(advantages * logprob), rtol=1e-5, atol=1e-6)
    # d/dx of -mean(A log p_y) at temperature T: A (p - onehot) / (T N)
    expected = p.copy()
    expected[rows, tokens] -= 1
    expected *= advantages[:, None] / (temperature * len(tokens))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)
    # evaluation at T = 1
    x = logits.astype(np.float64)
    lse1 = np.log(np.sum(np.exp(x - x.max(1, keepdims=True)), 1)) + x.max(1)
    accuracy, perplexity, mean_lse_sq = evaluation
    assert accuracy == np.mean(np.argmax(logits, 1) == labels)
    np.testing.assert_allclose(perplexity, np.exp(np.mean(lse1 - x[rows, labels])), rtol=1e-5)
    np.testing.assert_allclose(mean_lse_sq, np.mean(lse1**2), rtol=1e-5)
    assert "perplexity" in capsys.readouterr().out
