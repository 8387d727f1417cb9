"""A small CPU training loop with a 32000-class output head, its loss taken
by torch.nn.functional.cross_entropy and by cyce.torch.cross_entropy (the
same model, data and initial weights), and the median step time of each.

    python examples/torch_training.py [--vocab 32000] [--batch 1024] [--hidden 128]
                                      [--steps 6] [--threads N]

The logits are a temporary of each step (hidden @ head.T), so cyce writes
the gradient over them (inplace_backward=True): the head's backward is all
that reads them after the loss.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import cyce.torch as ct


class TinyLanguageModel(torch.nn.Module):
    """Embedding -> one hidden layer -> a vocab-sized linear head."""

    def __init__(self, vocab, hidden):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.body = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU())
        self.head = torch.nn.Linear(hidden, vocab, bias=False)

    def forward(self, tokens):
        return self.head(self.body(self.embed(tokens)))


def train(loss_function, args, seed=0):
    """Train a fresh model for args.steps steps: (losses, step seconds)."""
    torch.manual_seed(seed)
    model = TinyLanguageModel(args.vocab, args.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    data = torch.Generator().manual_seed(seed + 1)
    losses, seconds = [], []
    for _ in range(args.steps):
        tokens = torch.randint(0, args.vocab, (args.batch,), generator=data)
        next_tokens = (tokens * 7 + 3) % args.vocab  # a learnable rule
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(tokens), next_tokens)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    return losses, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def cyce_loss(logits, target):
        return ct.cross_entropy(logits, target, inplace_backward=True)

    results = {}
    for name, loss_function in [("torch", F.cross_entropy), ("cyce.torch", cyce_loss)]:
        losses, seconds = train(loss_function, args)
        # the first step pays for one-time set-up (allocations, lazy imports)
        results[name] = (losses, statistics.median(seconds[1:] or seconds))
        print(f"{name:>10}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"median step {1e3 * results[name][1]:.1f} ms")
    torch_losses, cyce_losses = results["torch"][0], results["cyce.torch"][0]
    drift = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(torch_losses, cyce_losses))
    print(f"{args.batch} x {args.vocab} logits, hidden {args.hidden}, {torch.get_num_threads()} thread(s): "
          f"cyce.torch step {results['torch'][1] / results['cyce.torch'][1]:.2f}x faster; "
          f"largest relative difference of the losses {drift:.1e}")
    return results


if __name__ == "__main__":
    main()
