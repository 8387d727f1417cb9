"""Train the output head of a small language model with cyce.linear_softmax_ce:
the loss and gradients of ``hidden @ head.T + bias`` without its (N, V)
logits, in NumPy alone (plus SciPy's BLAS).

    python examples/linear_head.py [--vocab 32000] [--tokens 2048] [--hidden 256]
                                   [--steps 20] [--chunk-rows N] [--threads N]

The "model body" is a fixed random embedding: token t's hidden state is row
t of it, and the next token follows a rule (t * 7 + 3 mod V), so the head can
learn it.  Adam updates the head; the script prints the loss per step, the
step time, and how much memory the logits would have taken.
"""

import argparse
import time

import numpy as np

import cyce


def adam(params, grads, state, step, lr=1e-2, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step, in place."""
    for name, grad in grads.items():
        m, v = state.setdefault(name, (np.zeros_like(grad), np.zeros_like(grad)))
        m *= betas[0]
        m += (1 - betas[0]) * grad
        v *= betas[1]
        v += (1 - betas[1]) * grad * grad
        m_hat = m / (1 - betas[0] ** step)
        v_hat = v / (1 - betas[1] ** step)
        params[name] -= lr * m_hat / (np.sqrt(v_hat) + eps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per step")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((args.vocab, args.hidden), dtype=np.float32)
    params = {
        "head": rng.standard_normal((args.vocab, args.hidden), dtype=np.float32)
        / np.float32(np.sqrt(args.hidden)),
        "bias": np.zeros(args.vocab, dtype=np.float32),
    }
    state, losses, seconds = {}, [], []
    for step in range(1, args.steps + 1):
        tokens = rng.integers(0, args.vocab, args.tokens)
        hidden = embedding[tokens]
        next_tokens = (tokens * 7 + 3) % args.vocab
        start = time.perf_counter()
        result = cyce.linear_softmax_ce(
            hidden, params["head"], next_tokens, linear_bias=params["bias"], return_grad=True,
            label_smoothing=0.0, chunk_rows=args.chunk_rows, num_threads=args.threads)
        adam(params, {"head": result.grad_linear_weight, "bias": result.grad_linear_bias},
             state, step)
        seconds.append(time.perf_counter() - start)
        losses.append(float(result.loss))
        print(f"step {step:3d}  loss {losses[-1]:.4f}  {seconds[-1] * 1e3:7.1f} ms")

    logits_mib = args.tokens * args.vocab * 4 / 2**20
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {args.steps} steps; the "
          f"{args.tokens} x {args.vocab} float32 logits ({logits_mib:.0f} MiB) were never held")
    return losses


if __name__ == "__main__":
    main()
