"""Per-token statistics with cyce.softmax_stats, in NumPy alone: what a
reinforcement-learning trainer and an evaluator read off a model's logits.

    python examples/token_stats.py [--tokens 4096] [--vocab 32000] [--temperature 0.7]

1. RL (policy gradient at a sampling temperature): tokens are sampled from
   softmax(logits / T); one softmax_stats call gives each token's
   log-probability and each row's entropy at T (what a PPO ratio and an
   entropy bonus need), and softmax_ce with the advantages as sample weights
   gives the policy-gradient loss and its gradient in one more pass.
2. Evaluation: accuracy (argmax against the labels), perplexity
   (exp of the mean negative log-probability) and the mean lse**2 (what a
   z-loss would add), from one softmax_stats call.
"""

import argparse

import numpy as np

import cyce


def sample_at_temperature(rng, logits, temperature):
    """One token per row from softmax(logits / T), by the Gumbel-max trick
    (argmax of logits / T plus Gumbel noise)."""
    noise = rng.gumbel(size=logits.shape).astype(logits.dtype)
    return np.argmax(logits / temperature + noise, axis=-1)


def rl_step(rng, logits, temperature):
    """The per-token statistics of sampled tokens at T, and the
    policy-gradient loss -mean(advantage * logprob) with its gradient."""
    tokens = sample_at_temperature(rng, logits, temperature)
    stats = cyce.softmax_stats(logits, tokens, temperature=temperature)
    advantages = rng.standard_normal(len(tokens))  # from the rewards, in a real trainer
    # softmax_ce is -logprob per row: weighted by the advantages and summed,
    # its gradient is the policy gradient (with respect to the raw logits)
    loss, grad = cyce.softmax_ce(logits, tokens, temperature=temperature,
                                 sample_weight=advantages, reduction="sum", return_grad=True)
    return stats, tokens, advantages, loss / len(tokens), grad / len(tokens)


def evaluate(logits, labels):
    """Accuracy, perplexity and mean lse**2 of a batch, from one pass."""
    stats = cyce.softmax_stats(logits, labels)
    accuracy = float(np.mean(stats.argmax == labels))
    perplexity = float(np.exp(-np.mean(stats.logprob, dtype=np.float64)))
    mean_lse_sq = float(np.mean(np.square(stats.lse, dtype=np.float64)))
    return accuracy, perplexity, mean_lse_sq


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((args.tokens, args.vocab))).astype(np.float32)

    stats, tokens, advantages, loss, grad = rl_step(rng, logits, args.temperature)
    print(f"RL at T={args.temperature}: mean logprob {np.mean(stats.logprob):.4f}, "
          f"mean entropy {np.mean(stats.entropy):.4f}, policy-gradient loss {loss:.4f}, "
          f"|grad| {np.linalg.norm(grad):.4f}")

    labels = rng.integers(0, args.vocab, args.tokens)
    labels[: args.tokens // 4] = np.argmax(logits[: args.tokens // 4], axis=-1)
    accuracy, perplexity, mean_lse_sq = evaluate(logits, labels)
    print(f"evaluation: accuracy {accuracy:.3f}, perplexity {perplexity:.1f}, "
          f"mean lse^2 {mean_lse_sq:.1f}")
    return stats, tokens, advantages, loss, grad, (accuracy, perplexity, mean_lse_sq), labels, logits


if __name__ == "__main__":
    main()
