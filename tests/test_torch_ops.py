"""The torch.ops.cyce custom ops: torch.library.opcheck, gradcheck in
float64, and torch.compile(fullgraph=True) of functions calling them (the
op in the traced graph, the same values and gradients as eager).  Skipped
where torch is not installed.  torch.compile is slow: the compiled
functions are built once per module and the shapes kept small."""

import functools

import pytest

torch = pytest.importorskip("torch")
import cyce.torch as ct  # noqa: E402

F = torch.nn.functional
# (emitted by torch's own compile machinery, not by cyce)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def ops_samples():
    """(op, args) covering each op's options, float64, inputs requiring grad."""
    generator = torch.Generator().manual_seed(11)

    def logits(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()

    labels = torch.randint(0, 5, (6,), generator=generator)
    probs = torch.softmax(torch.randn(6, 5, generator=generator, dtype=torch.float64), 1)
    weight = torch.rand(5, generator=generator, dtype=torch.float64)
    bits = torch.rand(6, 5, generator=generator, dtype=torch.float64).round()
    ops = torch.ops.cyce
    return [
        # (..., label_smoothing, z_loss, temperature, logit_softcap (0.0: none), reduction, want_grad)
        (ops.softmax_ce.default, (logits(6, 5), labels, None, None, -100, 0.0, 0.0, 1.0, 0.0, "mean",
                                  True)),
        (ops.softmax_ce.default, (logits(6, 5), labels, weight, torch.rand(6, dtype=torch.float64),
                                  2, 0.1, 1e-3, 1.0, 0.0, "none", True)),
        (ops.softmax_ce.default, (logits(6, 5), probs, weight, None, -100, 0.2, 0.0, 1.0, 0.0, "sum",
                                  True)),
        (ops.softmax_ce.default, (logits(6, 5).detach(), labels, None, None, -100, 0.0, 0.0, 1.0, 0.0,
                                  "mean", False)),
        (ops.softmax_ce.default, (logits(6, 5), labels, weight, None, 2, 0.1, 0.0, 0.5, 5.0, "mean",
                                  True)),
        (ops.softmax_ce.default, (logits(6, 5), probs, None, None, -100, 0.0, 1e-3, 2.0, 3.0, "none",
                                  True)),
        (ops.sigmoid_bce.default, (logits(6, 5), bits, None, None, "mean", True)),
        (ops.sigmoid_bce.default, (logits(6, 5), bits, torch.rand(6, 1, dtype=torch.float64), weight,
                                   "none", True)),
        (ops.binary_ce.default, (torch.rand(6, 5, dtype=torch.float64, generator=generator).requires_grad_(),
                                 bits, weight, "sum", True)),
        (ops.loss_with_grad.default, (logits(6, 5), torch.tensor(1.5, dtype=torch.float64),
                                      torch.rand(6, 5, dtype=torch.float64), 1)),
        (ops.loss_with_grad.default, (logits(6, 5), torch.rand(6, dtype=torch.float64),
                                      torch.rand(6, 5, dtype=torch.float64), 1)),
        (ops.linear_cross_entropy.default, (logits(6, 3), logits(5, 3), labels, logits(5), weight,
                                            None, -100, 0.1, 1e-3, 1.0, 0.0, "mean", True, True,
                                            True)),
        (ops.linear_cross_entropy.default, (logits(6, 3), logits(5, 3), labels, None, None,
                                            torch.rand(6, dtype=torch.float64), 2, 0.0, 0.0, 1.0,
                                            0.0, "none", False, True, True)),
        (ops.linear_cross_entropy.default, (logits(6, 3).detach(), logits(5, 3), labels, None,
                                            None, None, -100, 0.0, 0.0, 1.0, 0.0, "sum", True,
                                            False, True)),
        (ops.linear_cross_entropy.default, (logits(6, 3), logits(5, 3), labels, logits(5), weight,
                                            None, 2, 0.1, 0.0, 0.5, 5.0, "sum", True, True, True)),
        (ops.linear_cross_entropy.default, (logits(6, 3), logits(5, 3), labels, None, None,
                                            torch.rand(6, dtype=torch.float64), -100, 0.0, 0.0, 2.0,
                                            3.0, "none", False, True, True)),
    ]


def inplace_samples():
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    bits = torch.rand(6, 5, dtype=torch.float64).round()
    return [
        (torch.ops.cyce.softmax_ce_.default,
         (torch.randn(6, 5, dtype=torch.float64), labels, None, None, -100, 0.1, 0.0, 1.0, 0.0,
          "mean")),
        (torch.ops.cyce.softmax_ce_.default,
         (torch.randn(6, 5, dtype=torch.float64), labels, None, None, -100, 0.1, 0.0, 0.5, 5.0,
          "sum")),
        (torch.ops.cyce.sigmoid_bce_.default,
         (torch.randn(6, 5, dtype=torch.float64), bits, None, None, "none")),
    ]


@pytest.mark.parametrize("op, args", ops_samples() + inplace_samples(),
                         ids=lambda value: str(value) if isinstance(value, torch._ops.OpOverload) else "")
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_every_registered_op_is_checked():
    checked = {op._schema.name for op, _ in ops_samples() + inplace_samples()}
    registered = {name for name in torch._C._dispatch_get_all_op_names() if name.startswith("cyce::")}
    assert checked == registered


GRADCHECK_CASES = {
    "cross_entropy index": lambda x: ct.cross_entropy(x, torch.tensor([0, 4, 2, -100, 1, 3]), label_smoothing=0.1),
    "cross_entropy weight none": lambda x: ct.cross_entropy(
        x, torch.tensor([0, 4, 2, 1, 1, 3]), torch.linspace(0.5, 2, 5, dtype=torch.float64), reduction="none"),
    "cross_entropy probabilities z_loss": lambda x: ct.cross_entropy(
        x, torch.softmax(torch.linspace(-1, 1, 30, dtype=torch.float64).reshape(6, 5), 1), z_loss=1e-2),
    "cross_entropy K-dim": lambda x: ct.cross_entropy(x.reshape(2, 5, 3), torch.tensor([[0, 1, 2], [3, 4, 0]])),
    "cross_entropy temperature softcap": lambda x: ct.cross_entropy(
        x, torch.tensor([0, 4, 2, -100, 1, 3]), reduction="none", label_smoothing=0.1,
        temperature=0.5, logit_softcap=2.0),
    "cross_entropy probabilities temperature": lambda x: ct.cross_entropy(
        x, torch.softmax(torch.linspace(-1, 1, 30, dtype=torch.float64).reshape(6, 5), 1),
        temperature=2.0),
    "cross_entropy inplace_backward": lambda x: ct.cross_entropy(
        x * 1, torch.tensor([0, 4, 2, 1, 1, 3]), reduction="none", inplace_backward=True),
    "bce_with_logits pos_weight": lambda x: ct.binary_cross_entropy_with_logits(
        x, torch.linspace(0, 1, 30, dtype=torch.float64).reshape(6, 5),
        pos_weight=torch.linspace(0.5, 2, 5, dtype=torch.float64), reduction="none"),
    "bce": lambda x: ct.binary_cross_entropy(
        torch.sigmoid(x), torch.linspace(0, 1, 30, dtype=torch.float64).reshape(6, 5)),
}


@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_gradcheck(case):
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    assert torch.autograd.gradcheck(GRADCHECK_CASES[case], (x,))


# ---- torch.compile ----

def head_loss(x, target, soft_target, bits):
    """A function mixing the three losses and ops around them."""
    loss = ct.cross_entropy(x * 2, target, label_smoothing=0.1)
    loss = loss + ct.cross_entropy(x, soft_target, reduction="none").sum() * 0.5
    loss = loss + ct.binary_cross_entropy_with_logits(x, bits, pos_weight=torch.ones(x.shape[1]))
    return loss + ct.binary_cross_entropy(torch.sigmoid(x), bits, reduction="sum")


@functools.lru_cache(maxsize=None)
def compiled_head_loss(backend):
    """torch.compile of head_loss with fullgraph (a graph break is an
    error), and the graphs Dynamo traced."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    recorder = EagerAndRecordGraphs()
    traced = torch.compile(head_loss, fullgraph=True, backend=recorder)
    return torch.compile(head_loss, fullgraph=True, backend=backend), traced, recorder


def compile_inputs(dtype):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(8, 6, dtype=dtype, generator=generator).requires_grad_()
    target = torch.randint(0, 6, (8,), generator=generator)
    soft_target = torch.softmax(torch.randn(8, 6, dtype=dtype, generator=generator), 1)
    bits = torch.rand(8, 6, dtype=dtype, generator=generator).round()
    return x, target, soft_target, bits


# aot_eager: AOTAutograd's traced forward and backward, run eagerly (fast to
# build); inductor: torch.compile's default, once (it takes ~20 s to build)
@pytest.mark.parametrize("backend, dtype", [("aot_eager", torch.float32), ("aot_eager", torch.float64),
                                            ("inductor", torch.float32)])
def test_compile_fullgraph_matches_eager(backend, dtype):
    compiled, traced, recorder = compiled_head_loss(backend)
    x, *rest = compile_inputs(dtype)
    loss = compiled(x, *rest)
    (grad,) = torch.autograd.grad(loss, x)
    expected_loss = head_loss(x, *rest)
    (expected_grad,) = torch.autograd.grad(expected_loss, x)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(grad, expected_grad)
    traced(x, *rest)
    code = recorder.graphs[0].code
    for op in ("cyce.softmax_ce", "cyce.sigmoid_bce", "cyce.binary_ce"):
        assert f"torch.ops.{op}" in code, code


def mapped_head_loss(x, head, target):
    """cyce's temperature and softcap through both softmax ops."""
    loss = ct.linear_cross_entropy(x, head, target, temperature=2.0, logit_softcap=5.0,
                                   label_smoothing=0.1)
    per_row = ct.cross_entropy(x @ head.T, target, reduction="none", temperature=0.5,
                               logit_softcap=3.0)
    return loss + (per_row * torch.arange(per_row.shape[0], dtype=per_row.dtype)).mean()


def test_compile_fullgraph_with_the_logit_map():
    """torch.compile(fullgraph=True) with temperature and logit_softcap: no
    graph break, eager's loss and gradients, the ops in the traced graph."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    generator = torch.Generator().manual_seed(9)
    x = torch.randn(8, 4, generator=generator).requires_grad_()
    head = torch.randn(6, 4, generator=generator).requires_grad_()
    target = torch.tensor([0, 1, 2, 3, 4, 5, -100, 1])
    recorder = EagerAndRecordGraphs()
    torch.compile(mapped_head_loss, fullgraph=True, backend=recorder)(x, head, target)
    code = recorder.graphs[0].code
    assert "torch.ops.cyce.linear_cross_entropy" in code and "torch.ops.cyce.softmax_ce" in code, code
    compiled = torch.compile(mapped_head_loss, fullgraph=True, backend="aot_eager")
    loss = compiled(x, head, target)
    grads = torch.autograd.grad(loss, (x, head))
    expected = mapped_head_loss(x, head, target)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, torch.autograd.grad(expected, (x, head))):
        torch.testing.assert_close(got, want)


def test_compile_inplace_backward_takes_the_functional_op():
    def loss_of(x, target):
        return ct.cross_entropy(x * 1, target, inplace_backward=True)

    x, target, _, _ = compile_inputs(torch.float32)
    compiled = torch.compile(loss_of, fullgraph=True, backend="aot_eager")
    (grad,) = torch.autograd.grad(compiled(x, target), x)
    torch.testing.assert_close(grad, torch.autograd.grad(F.cross_entropy(x, target), x)[0])
