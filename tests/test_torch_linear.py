"""cyce.torch.linear_cross_entropy (the torch.ops.cyce.linear_cross_entropy
custom op) against torch.nn.functional.linear_cross_entropy and
F.cross_entropy(F.linear(...)) (of the mapped logits, for cyce's
temperature and logit_softcap): values and gradients with respect to input,
linear_weight and linear_bias, gradcheck, opcheck, torch.compile and
torch's exception types.  Skipped where torch is not installed.

float64 is compared within 1e-10; float32 against torch's float64 result for
the same (float32) inputs, 1e-5 on the loss and 1e-4 of the gradient's
largest entry (the GEMMs round each logit by ~sqrt(H) eps); bfloat16 loosely
against float32 math.  torch.compile is slow: built once per module.
"""

import functools
import itertools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy.linalg")  # cyce.linear_softmax_ce's GEMMs
import cyce.torch as ct  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

F = torch.nn.functional
# (emitted by torch's own compile machinery, not by cyce)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["mean", "sum", "none"]
TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-10)}  # (loss, gradient)


def make_inputs(dtype, n=29, hidden=16, classes=23, bias=True, seed=0, batched=True):
    """(input, linear_weight, linear_bias or None, target), the floats leaves
    requiring grad; logits ~ N(0, 4)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (n, hidden) if batched else (hidden,)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    w = torch.randn(classes, hidden, generator=generator, dtype=torch.float64) * (2 / hidden**0.5)
    b = torch.randn(classes, generator=generator, dtype=torch.float64) if bias else None
    target = torch.randint(0, classes, shape[:-1], generator=generator)
    leaves = [t.to(dtype).requires_grad_() if t is not None else None for t in (x, w, b)]
    return (*leaves, target)


def option_kwargs(option, target, classes, dtype):
    """Keyword arguments (shared by cyce and torch) and the target to use."""
    generator = torch.Generator().manual_seed(len(option))
    target = target.clone()
    kwargs = {}
    if option == "weight":
        kwargs["weight"] = torch.rand(classes, generator=generator, dtype=dtype) * 1.9 + 0.1
    elif option == "ignore_index":  # torch's default, -100
        target.reshape(-1)[::3] = -100
    elif option == "ignore_class":
        target.reshape(-1)[::4] = 2
        kwargs["ignore_index"] = 2
    elif option == "all_ignored":
        target.fill_(-100)
    elif option == "smoothing":
        kwargs["label_smoothing"] = 0.2
    elif option == "everything":
        kwargs.update(weight=torch.rand(classes, generator=generator, dtype=dtype) + 0.2,
                      label_smoothing=0.1, ignore_index=1)
        target.reshape(-1)[::4] = 1
    return kwargs, target


OPTIONS = ["plain", "weight", "ignore_index", "ignore_class", "all_ignored", "smoothing", "everything"]


def float64_copies(tensors):
    return [None if t is None else t.detach().to(torch.float64).requires_grad_() for t in tensors]


def grads_of(loss, leaves, grad_output):
    """d(loss * grad_output).sum() / d leaves (None for a leaf that is None
    or does not require grad)."""
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(loss, wanted, grad_outputs=grad_output))
    return [next(got) if t is not None and t.requires_grad else None for t in leaves]


def grad_output_for(loss, reduction, dtype):
    """A non-uniform grad_output: one weight per row for "none"."""
    if reduction == "none":
        n = loss.numel()
        return torch.linspace(-1.5, 2.0, n, dtype=dtype).reshape(loss.shape)
    return torch.tensor(1.7, dtype=dtype)


def assert_close(actual, expected, rtol, what):
    """Within rtol relative, with an absolute floor of rtol times the
    largest finite |expected|; nan matches nan.  Compared in float64."""
    expected = expected.detach().to(torch.float64)
    finite = expected[torch.isfinite(expected)].abs()
    scale = finite.max().item() if finite.numel() else 0.0
    torch.testing.assert_close(actual.detach().to(torch.float64), expected, rtol=rtol,
                               atol=rtol * scale, equal_nan=True, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------- values and gradients

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_matches_torch(dtype, reduction, option, with_bias):
    """Loss and the three gradients (with a non-uniform grad_output) against
    F.linear_cross_entropy and F.cross_entropy(F.linear(...)), both in
    float64 on the same inputs; the result's dtype and shape."""
    x, w, b, target = make_inputs(dtype, bias=with_bias, seed=sum(map(ord, reduction + option)))
    kwargs, target = option_kwargs(option, target, w.shape[0], dtype)
    ref_kwargs = {k: v.to(torch.float64) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}

    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, reduction=reduction, **kwargs)
    assert loss.dtype == dtype
    assert loss.shape == (target.shape if reduction == "none" else ())
    grad_output = grad_output_for(loss, reduction, dtype)
    grads = grads_of(loss, [x, w, b], grad_output)

    loss_rtol, grad_rtol = TOL[dtype]
    for name in ("linear_cross_entropy", "cross_entropy of linear"):
        x64, w64, b64 = float64_copies([x, w, b])
        if name == "linear_cross_entropy":
            expected = F.linear_cross_entropy(x64, w64, target, linear_bias=b64, reduction=reduction,
                                              **ref_kwargs)
        else:
            expected = F.cross_entropy(F.linear(x64, w64, b64), target, reduction=reduction, **ref_kwargs)
        expected_grads = grads_of(expected, [x64, w64, b64], grad_output.to(torch.float64))
        assert_close(loss, expected, loss_rtol, f"loss vs {name}")
        for what, got, want in zip(["input", "linear_weight", "linear_bias"], grads, expected_grads):
            if want is None:
                assert got is None
                continue
            assert got.dtype == dtype and got.shape == want.shape, what
            assert_close(got, want, grad_rtol, f"grad {what} vs {name}")
    if option == "all_ignored" and reduction == "mean":
        assert torch.isnan(loss)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wanted", [subset for r in range(4) for subset in
                                    itertools.combinations(["input", "linear_weight", "linear_bias"], r)],
                         ids=lambda s: "+".join(s) or "nothing")
def test_any_subset_requires_grad(reduction, wanted):
    """Only some of input, linear_weight, linear_bias require grad: those get
    torch's gradients, the others none; with none of them the loss has no
    graph and is still torch's value."""
    x, w, b, target = make_inputs(torch.float64, seed=3)
    target[::5] = -100
    names = ["input", "linear_weight", "linear_bias"]
    leaves = [t.detach().requires_grad_(name in wanted) for t, name in zip([x, w, b], names)]
    loss = ct.linear_cross_entropy(leaves[0], leaves[1], target, linear_bias=leaves[2],
                                   reduction=reduction, label_smoothing=0.1)
    refs = [t.detach().requires_grad_(name in wanted) for t, name in zip([x, w, b], names)]
    expected = F.linear_cross_entropy(refs[0], refs[1], target, linear_bias=refs[2],
                                      reduction=reduction, label_smoothing=0.1)
    assert_close(loss, expected, 1e-10, "loss")
    if not wanted:
        assert not loss.requires_grad and loss.grad_fn is None
        return
    grad_output = grad_output_for(loss, reduction, torch.float64)
    (loss * grad_output).sum().backward()
    (expected * grad_output).sum().backward()
    for name, got, ref in zip(names, leaves, refs):
        if name in wanted:
            assert_close(got.grad, ref.grad, 1e-10, name)
        else:
            assert got.grad is None, name


def test_loss_under_no_grad():
    """Under torch.no_grad the loss is the same value, without a graph."""
    x, w, b, target = make_inputs(torch.float32, seed=4)
    with torch.no_grad():
        loss = ct.linear_cross_entropy(x, w, target, linear_bias=b)
    assert loss.grad_fn is None
    expected = F.linear_cross_entropy(*float64_copies([x, w]), target, linear_bias=b.detach().double())
    assert_close(loss, expected, 1e-5, "loss")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignored", [False, True])
def test_unbatched_input(reduction, ignored):
    """(H,) input with a () target, as torch: a 0-d loss for every reduction."""
    x, w, b, target = make_inputs(torch.float64, batched=False, seed=5)
    if ignored:
        target = torch.tensor(-100)
    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, reduction=reduction)
    assert loss.shape == ()
    grads = torch.autograd.grad(loss, (x, w, b))
    x64, w64, b64 = float64_copies([x, w, b])
    expected = F.linear_cross_entropy(x64, w64, target, linear_bias=b64, reduction=reduction)
    assert_close(loss, expected, 1e-10, "loss")
    for got, want in zip(grads, torch.autograd.grad(expected, (x64, w64, b64))):
        assert got.shape == want.shape
        assert_close(got, want, 1e-10, "grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(reduction):
    """N = 0 as torch: mean nan, sum 0, "none" an empty loss; zero gradients."""
    x, w, b, target = make_inputs(torch.float64, n=0, seed=6)
    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, reduction=reduction)
    x64, w64, b64 = float64_copies([x, w, b])
    expected = F.linear_cross_entropy(x64, w64, target, linear_bias=b64, reduction=reduction)
    assert loss.shape == expected.shape
    assert_close(loss, expected, 1e-10, "loss")
    grads = torch.autograd.grad(loss.sum(), (x, w, b))
    for got, leaf in zip(grads, (x, w, b)):
        assert got.shape == leaf.shape and not got.any()


def test_non_contiguous_input_and_weight():
    """A sliced input and a transposed-view weight (a tied embedding stored
    (H, V)) give torch's values and gradients of their own shapes."""
    generator = torch.Generator().manual_seed(7)
    big = torch.randn(20, 32, generator=generator, dtype=torch.float64)
    x = big[:, ::2].detach().requires_grad_()  # (20, 16) with strides (32, 2)
    embedding = (torch.randn(16, 23, generator=generator, dtype=torch.float64) / 2).requires_grad_()
    target = torch.randint(0, 23, (20,), generator=generator)
    assert not x.is_contiguous()
    loss = ct.linear_cross_entropy(x, embedding.T, target, reduction="sum")
    grads = torch.autograd.grad(loss, (x, embedding))
    x64, e64 = float64_copies([x, embedding])
    expected = F.linear_cross_entropy(x64, e64.T, target, reduction="sum")
    assert_close(loss, expected, 1e-10, "loss")
    for got, want in zip(grads, torch.autograd.grad(expected, (x64, e64))):
        assert got.shape == want.shape
        assert_close(got, want, 1e-10, "grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "everything"])
def test_z_loss_against_a_manual_reference(reduction, option):
    """z_loss adds z * lse_i**2 to each row not ignored (not scaled by the
    class weights); "mean" still divides by sum_i w[y_i] over kept rows."""
    z = 1e-2
    x, w, b, target = make_inputs(torch.float64, seed=8)
    kwargs, target = option_kwargs(option, target, w.shape[0], torch.float64)
    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, reduction=reduction, z_loss=z, **kwargs)
    grad_output = grad_output_for(loss, reduction, torch.float64)
    grads = grads_of(loss, [x, w, b], grad_output)

    x64, w64, b64 = float64_copies([x, w, b])
    logits = F.linear(x64, w64, b64)
    ignore_index = kwargs.get("ignore_index", -100)
    row = F.cross_entropy(logits, target, weight=kwargs.get("weight"), ignore_index=ignore_index,
                          label_smoothing=kwargs.get("label_smoothing", 0.0), reduction="none")
    kept = target != ignore_index
    row = row + torch.where(kept, z * torch.logsumexp(logits, 1) ** 2, 0.0)
    class_weight = kwargs.get("weight", torch.ones(w.shape[0], dtype=torch.float64))
    denom = class_weight[target[kept]].sum()
    expected = {"mean": row.sum() / denom, "sum": row.sum(), "none": row}[reduction]
    assert_close(loss, expected, 1e-10, "loss")
    for got, want in zip(grads, grads_of(expected, [x64, w64, b64], grad_output)):
        assert_close(got, want, 1e-10, "grad")


def logit_map(logits, temperature, logit_softcap):
    """cyce's map in torch ops: c tanh(x / c) / T, a -inf logit kept."""
    if logit_softcap is not None:
        logits = torch.where(logits == -torch.inf, logits,
                             logit_softcap * torch.tanh(logits / logit_softcap))
    return logits / temperature


LOGIT_MAPS = [(0.5, None), (0.5, 5.0), (2.0, None), (2.0, 5.0)]


@pytest.mark.parametrize("temperature, logit_softcap", LOGIT_MAPS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_logit_map_matches_torch(temperature, logit_softcap, dtype, reduction, with_bias):
    """temperature and logit_softcap: the loss and the three gradients (a
    non-uniform grad_output) are float64 autograd's of
    F.cross_entropy(map(F.linear(...))), with class weights, smoothing and
    an ignore_index."""
    seed = sum(map(ord, reduction)) + int(4 * temperature) + (logit_softcap is None)
    x, w, b, target = make_inputs(dtype, bias=with_bias, seed=seed)
    kwargs, target = option_kwargs("everything", target, w.shape[0], dtype)
    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, reduction=reduction,
                                   temperature=temperature, logit_softcap=logit_softcap, **kwargs)
    assert loss.dtype == dtype
    grad_output = grad_output_for(loss, reduction, dtype)
    grads = grads_of(loss, [x, w, b], grad_output)

    x64, w64, b64 = float64_copies([x, w, b])
    expected = F.cross_entropy(logit_map(F.linear(x64, w64, b64), temperature, logit_softcap),
                               target, reduction=reduction, weight=kwargs["weight"].double(),
                               ignore_index=kwargs["ignore_index"],
                               label_smoothing=kwargs["label_smoothing"])
    expected_grads = grads_of(expected, [x64, w64, b64], grad_output.to(torch.float64))
    loss_rtol, grad_rtol = TOL[dtype]
    assert_close(loss, expected, loss_rtol, "loss")
    for what, got, want in zip(["input", "linear_weight", "linear_bias"], grads, expected_grads):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype and got.shape == want.shape, what
        assert_close(got, want, grad_rtol, f"grad {what}")


def test_logit_map_where_torch_computes():
    """Inputs cyce hands to torch (here probability targets) get the map as
    torch ops between F.linear and F.cross_entropy: the same values and
    gradients; without the map they go to F.linear_cross_entropy as they are."""
    x, w, b, target = make_inputs(torch.float64, n=7, seed=17)
    probs = torch.softmax(torch.randn(7, w.shape[0], dtype=torch.float64), 1)
    loss = ct.linear_cross_entropy(x, w, probs, linear_bias=b, temperature=2.0, logit_softcap=5.0,
                                   label_smoothing=0.1)
    grads = torch.autograd.grad(loss, (x, w, b))
    x64, w64, b64 = float64_copies([x, w, b])
    expected = F.cross_entropy(logit_map(F.linear(x64, w64, b64), 2.0, 5.0), probs,
                               label_smoothing=0.1)
    assert_close(loss, expected, 1e-12, "loss")
    for got, want in zip(grads, torch.autograd.grad(expected, (x64, w64, b64))):
        assert_close(got, want, 1e-12, "grad")
    # (ignore_index left at None: probability targets are torch's own case)
    assert_close(ct.linear_cross_entropy(x, w, probs, linear_bias=b),
                 F.linear_cross_entropy(x64, w64, probs, linear_bias=b64), 1e-12, "unmapped")


def test_logit_map_fallback_agrees_with_cyce(monkeypatch):
    """The torch-ops map of the fallback and cyce's kernel give the same
    loss and gradients (class-index targets, forced onto torch's path)."""
    x, w, b, target = make_inputs(torch.float64, n=9, seed=18)
    target[::4] = -100
    options = dict(linear_bias=b, temperature=0.5, logit_softcap=5.0, label_smoothing=0.2,
                   reduction="sum")
    results = []
    for on_cyce in (True, False):
        if not on_cyce:
            monkeypatch.setattr(ct, "_runs_on_cyce", lambda t: False)
        loss = ct.linear_cross_entropy(x, w, target, **options)
        results.append((loss, torch.autograd.grad(loss, (x, w, b))))
    (loss, grads), (expected, expected_grads) = results
    assert_close(loss, expected, 1e-12, "loss")
    for got, want in zip(grads, expected_grads):
        assert_close(got, want, 1e-12, "grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bfloat16(reduction):
    """bfloat16 in, bfloat16 loss and gradients out, near float32 math on
    the same (bfloat16) values."""
    x, w, b, target = make_inputs(torch.bfloat16, seed=9)
    target[::3] = -100
    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, label_smoothing=0.1, reduction=reduction)
    grad_output = grad_output_for(loss, reduction, torch.float32)
    grads = grads_of(loss, [x, w, b], grad_output.to(torch.bfloat16))
    assert loss.dtype == torch.bfloat16
    assert all(g.dtype == torch.bfloat16 for g in grads)
    x32, w32, b32 = [t.detach().float().requires_grad_() for t in (x, w, b)]
    expected = F.linear_cross_entropy(x32, w32, target, linear_bias=b32, label_smoothing=0.1,
                                      reduction=reduction)
    assert_close(loss, expected, 2e-2, "loss")
    for got, want in zip(grads, grads_of(expected, [x32, w32, b32], grad_output)):
        assert_close(got, want, 3e-2, "grad")


def test_non_finite_grad_output_propagates():
    """reduction="none" with an inf in grad_output (an overflowed loss
    scale): no error, the gradients go non-finite where torch's do and the
    rows with a finite grad_output keep torch's input gradient."""
    x, w, b, target = make_inputs(torch.float64, n=6, seed=16)
    grad_output = torch.tensor([1.0, float("inf"), 0.0, 1.0, -2.0, 1.0], dtype=torch.float64)
    loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, reduction="none")
    grad_x, grad_w = torch.autograd.grad(loss, (x, w), grad_output)
    x64, w64, b64 = float64_copies([x, w, b])
    expected = F.linear_cross_entropy(x64, w64, target, linear_bias=b64, reduction="none")
    want_x, want_w = torch.autograd.grad(expected, (x64, w64), grad_output)
    finite = torch.isfinite(grad_output)
    assert_close(grad_x[finite], want_x[finite], 1e-10, "finite rows")
    assert not torch.isfinite(grad_x[1]).any() and not torch.isfinite(want_x[1]).any()
    assert not torch.isfinite(grad_w).all() and not torch.isfinite(want_w).all()


# ---------------------------------------------------------------- gradcheck

GRADCHECK_CASES = {
    "mean bias weight ignore smoothing": dict(
        target=[0, 4, -100, 2], weight=torch.linspace(0.5, 2, 5, dtype=torch.float64),
        label_smoothing=0.1),
    "sum z_loss": dict(target=[1, 1, 3, 0], reduction="sum", z_loss=1e-2),
    "none": dict(target=[0, 4, 2, 3], reduction="none", label_smoothing=0.2),
    "none ignore_index weight": dict(target=[0, 3, 2, 3], reduction="none", ignore_index=3,
                                     weight=torch.linspace(0.5, 2, 5, dtype=torch.float64)),
    "none temperature softcap": dict(target=[0, 4, -100, 3], reduction="none", temperature=0.5,
                                     logit_softcap=2.0, label_smoothing=0.1),
    "mean temperature": dict(target=[0, 4, 2, 3], temperature=2.0, z_loss=1e-2),
}


@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_gradcheck(case):
    """torch.autograd.gradcheck in float64 at N=4, H=3, V=5 with respect to
    input, linear_weight and linear_bias."""
    kwargs = dict(GRADCHECK_CASES[case])
    target = torch.tensor(kwargs.pop("target"))
    x, w, b, _ = make_inputs(torch.float64, n=4, hidden=3, classes=5, seed=10)

    def loss_of(x, w, b):
        return ct.linear_cross_entropy(x, w, target, linear_bias=b, **kwargs)

    assert torch.autograd.gradcheck(loss_of, (x, w, b))


# ---------------------------------------------------------------- opcheck

class _RecordCyceOps(TorchDispatchMode):
    """Records every torch.ops.cyce call (op, args) that reaches dispatch."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "cyce":
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _fresh(value):
    """A tensor argument as a new leaf (requiring grad as the original did)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


OPCHECK_CALLS = {
    "mean bias": dict(bias=True, kwargs=dict(label_smoothing=0.1)),
    "sum no bias weight ignore": dict(bias=False, kwargs=dict(
        reduction="sum", ignore_index=2, weight=torch.linspace(0.5, 2, 5, dtype=torch.float64))),
    "none z_loss": dict(bias=True, kwargs=dict(reduction="none", z_loss=1e-3)),
    "no grad": dict(bias=True, kwargs=dict(), no_grad=True),
    "mean temperature softcap": dict(bias=True, kwargs=dict(temperature=0.5, logit_softcap=5.0,
                                                            label_smoothing=0.1)),
    "none temperature": dict(bias=False, kwargs=dict(reduction="none", temperature=2.0)),
}


def recorded_op_calls(bias, kwargs, no_grad=False):
    """The cyce op calls (forward and backward) of one public call."""
    x, w, b, _ = make_inputs(torch.float64, n=6, hidden=3, classes=5, bias=bias, seed=12)
    target = torch.tensor([0, 1, 2, 3, 4, 2])
    if no_grad:
        x, w = x.detach(), w.detach()
        b = None if b is None else b.detach()
    with _RecordCyceOps() as recorder:
        loss = ct.linear_cross_entropy(x, w, target, linear_bias=b, **kwargs)
        if loss.requires_grad:
            loss.sum().backward()
    return [(op, tuple(_fresh(a) for a in args), {k: _fresh(v) for k, v in kw.items()})
            for op, args, kw in recorder.calls]


@pytest.mark.parametrize("case", sorted(OPCHECK_CALLS))
def test_opcheck(case):
    """torch.library.opcheck (schema, fake tensor, autograd registration,
    AOT dispatch) on every call of torch.ops.cyce.linear_cross_entropy that
    a forward and backward make, with the arguments they passed."""
    calls = recorded_op_calls(**OPCHECK_CALLS[case])
    assert calls and all(op._schema.name == "cyce::linear_cross_entropy" for op, _, _ in calls), calls
    for op, args, kwargs in calls:
        torch.library.opcheck(op, args, kwargs)


def test_the_op_is_registered():
    assert hasattr(torch.ops.cyce, "linear_cross_entropy")
    assert "cyce::linear_cross_entropy" in torch._C._dispatch_get_all_op_names()


# ---------------------------------------------------------------- torch.compile

def lm_head_loss(hidden, weight, bias, target):
    """A language-model head's loss, two calls and ops around them."""
    loss = ct.linear_cross_entropy(hidden * 2, weight, target, linear_bias=bias, label_smoothing=0.1)
    per_row = ct.linear_cross_entropy(hidden, weight, target, reduction="none", z_loss=1e-3)
    return loss + (per_row * torch.arange(per_row.shape[0], dtype=per_row.dtype)).mean()


@functools.lru_cache(maxsize=None)
def compiled_lm_head_loss(backend):
    """torch.compile(fullgraph=True) of lm_head_loss, and a recorder of the
    graphs Dynamo traces."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    recorder = EagerAndRecordGraphs()
    traced = torch.compile(lm_head_loss, fullgraph=True, backend=recorder)
    return torch.compile(lm_head_loss, fullgraph=True, backend=backend), traced, recorder


@pytest.mark.parametrize("backend, dtype", [("aot_eager", torch.float32), ("aot_eager", torch.float64),
                                            ("inductor", torch.float32)])
def test_compile_fullgraph_matches_eager(backend, dtype):
    """The compiled function's loss and gradients are eager's, and the op is
    in the graph (no graph break: fullgraph)."""
    compiled, traced, recorder = compiled_lm_head_loss(backend)
    x, w, b, target = make_inputs(dtype, n=12, hidden=8, classes=11, seed=13)
    target[::5] = -100
    loss = compiled(x, w, b, target)
    grads = torch.autograd.grad(loss, (x, w, b))
    expected = lm_head_loss(x, w, b, target)
    expected_grads = torch.autograd.grad(expected, (x, w, b))
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    traced(x, w, b, target)
    assert "torch.ops.cyce.linear_cross_entropy" in recorder.graphs[-1].code, recorder.graphs[-1].code


# ---------------------------------------------------------------- bad input

def _bad(x, w, b, y):
    """name: (args, kwargs) of one mistake, from valid float32 inputs."""
    return {
        "H mismatch": ((x, w[:, :3], y), {}),
        "H mismatch unbatched": ((x[0], w[:, :3], y[0]), {}),
        "bias wrong length": ((x, w, y), {"linear_bias": b[:4]}),
        "class weight wrong length": ((x, w, y), {"weight": torch.ones(4)}),
        "class weight 2-D": ((x, w, y), {"weight": torch.ones(5, 1)}),
        "class weight float64": ((x, w, y), {"weight": torch.ones(5, dtype=torch.float64)}),
        "bias 2-D": ((x, w, y), {"linear_bias": b.reshape(1, 5)}),
        "2-D target": ((x, w, y.reshape(3, 1)), {}),
        "bool target": ((x, w, y.bool()), {}),
        "label too big": ((x, w, torch.tensor([0, 1, 5])), {}),
        "negative label": ((x, w, torch.tensor([0, -3, 1])), {}),
        "target wrong length": ((x, w, torch.tensor([0, 1])), {}),
        "int32 target": ((x, w, y.int()), {}),
        "float64 weight": ((x, w.double(), y), {}),
        "float64 bias": ((x, w, y), {"linear_bias": b.double()}),
        "1-D linear_weight": ((x, w[0], y), {}),
        "3-D input": ((x.reshape(3, 1, 4), w, y.reshape(3, 1)), {}),
        "unknown reduction": ((x, w, y), {"reduction": "avg"}),
        "smoothing above 1": ((x, w, y), {"label_smoothing": 1.5}),
    }


def valid_inputs():
    """float32 input (3, 4), linear_weight (5, 4), linear_bias (5,), target (3,)."""
    generator = torch.Generator().manual_seed(14)
    return (torch.randn(3, 4, generator=generator), torch.randn(5, 4, generator=generator),
            torch.randn(5, generator=generator), torch.tensor([0, 1, 4]))


BAD_NAMES = list(_bad(*valid_inputs()))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_input_raises_as_torch(name):
    """Each mistake raises the exception type F.linear_cross_entropy raises,
    and no argument is changed."""
    args, kwargs = _bad(*valid_inputs())[name]
    with pytest.raises(Exception) as expected:
        F.linear_cross_entropy(*args, **kwargs)
    leaves = [a.detach().requires_grad_() if a.is_floating_point() else a for a in args]
    kw = {k: v.detach().requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
          for k, v in kwargs.items()}
    before = [a.clone() for a in leaves] + [v.clone() for v in kw.values() if isinstance(v, torch.Tensor)]
    with pytest.raises(expected.type):
        ct.linear_cross_entropy(*leaves, **kw)
    after = leaves + [v for v in kw.values() if isinstance(v, torch.Tensor)]
    for a, c in zip(after, before):
        assert torch.equal(a.detach(), c.detach())


BAD_LOGIT_MAPS = [dict(temperature=0.0), dict(temperature=-2.0), dict(temperature=float("nan")),
                  dict(temperature=float("inf")), dict(logit_softcap=0.0),
                  dict(logit_softcap=-1.0), dict(logit_softcap=float("nan")),
                  dict(logit_softcap=float("inf"))]


@pytest.mark.parametrize("bad", BAD_LOGIT_MAPS, ids=str)
@pytest.mark.parametrize("soft", [False, True], ids=["index", "probabilities"])
def test_bad_logit_map_raises_value_error(bad, soft):
    """A temperature or softcap that is not finite and > 0 raises ValueError,
    on cyce's path and on torch's (probability targets), and changes nothing."""
    x, w, b, target = valid_inputs()
    if soft:
        target = torch.softmax(torch.randn(3, 5), 1)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    before = [t.detach().clone() for t in leaves]
    with pytest.raises(ValueError, match="temperature|logit_softcap"):
        ct.linear_cross_entropy(x, w, target, linear_bias=b, **bad)
    for t, c in zip(leaves, before):
        assert torch.equal(t.detach(), c) and t.grad is None


def test_input_torch_refuses_raises_as_torch_with_a_temperature():
    """3-D input goes to torch, which refuses it: with the map too."""
    x, w, _, y = valid_inputs()
    with pytest.raises(RuntimeError, match="dimensionality"):
        ct.linear_cross_entropy(x.reshape(3, 1, 4), w, y.reshape(3, 1), temperature=2.0)


def test_h_mismatch_is_a_runtime_error():
    x, w, _, y = make_inputs(torch.float64, seed=15)
    with pytest.raises(RuntimeError):
        ct.linear_cross_entropy(x, w[:, :-1], y)
