"""cyce.torch's functions and modules against torch.nn.functional's own, on
PyTorch's OpInfo sample inputs and on the cases they leave out (layouts,
half precision, cyce's extras, in-place backward, bad input).  Skipped
where torch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import cyce.torch as ct  # noqa: E402
import reference  # noqa: E402

F = torch.nn.functional
PAIRS = {  # OpInfo name -> (cyce.torch function, torch function)
    "nn.functional.cross_entropy": (ct.cross_entropy, F.cross_entropy),
    "nn.functional.binary_cross_entropy_with_logits":
        (ct.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
    "nn.functional.binary_cross_entropy": (ct.binary_cross_entropy, F.binary_cross_entropy),
}
# PyTorch accumulates float32 sums in float32; cyce in float64
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}


def opinfo_samples(dtype):
    """(name, sample) for every OpInfo sample input of the three losses."""
    common = pytest.importorskip("torch.testing._internal.common_methods_invocations")
    samples = []
    for op in common.op_db:
        if op.name in PAIRS and not op.variant_test_name:
            for sample in op.sample_inputs("cpu", dtype, requires_grad=True):
                samples.append((op.name, sample))
    return samples


def value_and_grad(function, x, *args, **kwargs):
    """function's value and the input's gradient for a random grad_output
    (so that "none" checks every per-sample scale)."""
    x = x.detach().clone().requires_grad_()
    loss = function(x, *args, **kwargs)
    grad_output = torch.rand(loss.shape, dtype=loss.dtype, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(loss, x, grad_output)
    return loss.detach(), grad


def grad_of(function, x, *args, **kwargs):
    """d function(x, ...).sum() / dx."""
    x = x.detach().clone().requires_grad_()
    return torch.autograd.grad(function(x, *args, **kwargs).sum(), x)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opinfo_samples_match_torch(dtype):
    checked = 0
    for name, sample in opinfo_samples(dtype):
        ours, theirs = PAIRS[name]
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in sample.args]
        kwargs = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in sample.kwargs.items()}
        loss, grad = value_and_grad(ours, sample.input, *args, **kwargs)
        expected_loss, expected_grad = value_and_grad(theirs, sample.input, *args, **kwargs)
        what = f"{name} {tuple(sample.input.shape)} {kwargs}"
        torch.testing.assert_close(loss, expected_loss, **TOLERANCE[dtype], msg=what)
        torch.testing.assert_close(grad, expected_grad, **TOLERANCE[dtype], msg=what)
        checked += 1
    assert checked >= 50  # PyTorch's 58 samples of 2.13: the generator must not silently shrink


def hard_or_soft_target(x, soft, generator):
    """Class indices (some ignored) or probabilities for input x, classes on dim 1 (dim 0 if 1-D)."""
    class_dim = 0 if x.ndim == 1 else 1
    n_classes = x.shape[class_dim]
    if soft:
        return torch.softmax(torch.randn(x.shape, generator=generator, dtype=x.dtype), class_dim)
    batch = x.shape[:class_dim] + x.shape[class_dim + 1:]
    target = torch.randint(0, n_classes, batch, generator=generator)
    if target.ndim:
        target.view(-1)[::4] = -100
    return target


LAYOUTS = {
    "contiguous": lambda x: x,
    "channels-last": lambda x: x.movedim(1, -1).contiguous().movedim(-1, 1) if x.ndim > 2 else x,
    "strided": lambda x: x.transpose(0, -1).contiguous().transpose(0, -1) if x.ndim > 1 else x,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("shape", [(7,), (6, 5), (3, 4, 5), (2, 3, 2, 3)])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_layouts_and_options(layout, shape, soft, reduction):
    generator = torch.Generator().manual_seed(hash((layout, shape, soft, reduction)) % 2**31)
    x = LAYOUTS[layout](torch.randn(shape, generator=generator, dtype=torch.float64) * 3)
    target = hard_or_soft_target(x, soft, generator)
    weight = torch.rand(shape[0 if len(shape) == 1 else 1], generator=generator, dtype=torch.float64)
    kwargs = dict(weight=weight, reduction=reduction, label_smoothing=0.2)
    loss, grad = value_and_grad(ct.cross_entropy, x, target, **kwargs)
    expected_loss, expected_grad = value_and_grad(F.cross_entropy, x, target, **kwargs)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE[torch.float64])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCE[torch.float64])


def test_zero_copy_layouts_share_the_input_memory():
    """(N, C) and channels-last inputs are read in place: written over with
    inplace_backward, their own storage holds the gradient."""
    for x in [torch.randn(6, 5), torch.randn(2, 3, 4).movedim(1, -1).contiguous().movedim(-1, 1)]:
        leaf = x.clone().requires_grad_()
        logits = leaf * 1
        target = torch.zeros(x.shape[:1] + x.shape[2:], dtype=torch.long)
        (expected,) = torch.autograd.grad(F.cross_entropy(leaf, target), leaf)
        loss = ct.cross_entropy(logits, target, inplace_backward=True)
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad.data_ptr() == logits.data_ptr()
        torch.testing.assert_close(grad, expected)
        torch.testing.assert_close(logits.detach(), expected)


@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
def test_legacy_size_average_and_reduce(size_average, reduce):
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1])
    probs, bits = torch.rand(5, 4, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64).round()
    legacy = dict(size_average=size_average, reduce=reduce)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's deprecation warning
        for ours, theirs, args in [(ct.cross_entropy, F.cross_entropy, (x, target)),
                                   (ct.binary_cross_entropy_with_logits,
                                    F.binary_cross_entropy_with_logits, (x, bits)),
                                   (ct.binary_cross_entropy, F.binary_cross_entropy, (probs, bits))]:
            torch.testing.assert_close(ours(*args, **legacy), theirs(*args, **legacy))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_computed_in_float32(dtype):
    """The result has the input's dtype (torch's rule) and equals torch's
    float32 result rounded to it."""
    x = torch.randn(8, 11, dtype=dtype)
    target = torch.randint(0, 11, (8,))
    for reduction in ["mean", "none"]:
        loss, grad = value_and_grad(ct.cross_entropy, x, target, reduction=reduction)
        expected_loss, expected_grad = value_and_grad(F.cross_entropy, x.float(), target, reduction=reduction)
        assert loss.dtype == dtype and grad.dtype == dtype
        torch.testing.assert_close(loss, expected_loss.to(dtype), rtol=0, atol=0)
        torch.testing.assert_close(grad.float(), expected_grad.to(dtype).float(), rtol=0.01, atol=1e-3)
    bits = torch.rand(8, 11).round().to(dtype)
    loss, grad = value_and_grad(ct.binary_cross_entropy_with_logits, x, bits)
    expected_loss, expected_grad = value_and_grad(F.binary_cross_entropy_with_logits, x.float(), bits.float())
    assert loss.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(loss.float(), expected_loss, rtol=1e-2, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_in_place_writes_the_functional_gradient(dtype):
    """inplace_backward on a half tensor: cyce's half kernels write the
    gradient over the tensor's own storage (bfloat16 through ml_dtypes'
    dtype, float16 through NumPy's), with the bits of the functional call."""
    pytest.importorskip("ml_dtypes")
    torch.manual_seed(3)
    base = torch.randn(16, 300, dtype=dtype) * 4
    target = torch.randint(0, 300, (16,))
    leaf = base.clone().requires_grad_()
    (expected,) = torch.autograd.grad(ct.cross_entropy(leaf, target), leaf)
    logits = (base * 1).requires_grad_()
    hidden = logits * 1
    storage = hidden.data_ptr()
    loss = ct.cross_entropy(hidden, target, inplace_backward=True)
    loss.backward()
    assert hidden.data_ptr() == storage and logits.grad.dtype == dtype
    torch.testing.assert_close(hidden.detach(), expected, rtol=0, atol=0)   # its storage
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=0)


def test_other_dtypes_and_devices_go_to_torch():
    """An input cyce does not compute is handed to torch's function: the
    same result, or the same error."""
    x = torch.randn(4, 3, dtype=torch.complex64)
    for function in (ct.cross_entropy, F.cross_entropy):
        with pytest.raises(RuntimeError):
            function(x, torch.tensor([0, 1, 2, 0]))
    meta = torch.randn(4, 3, device="meta")
    assert ct.cross_entropy(meta, torch.zeros(4, dtype=torch.long, device="meta")).device.type == "meta"


def test_z_loss_and_sample_weight_match_the_numpy_reference():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 3))  # (N, C, d): cyce's reference takes (N, d, C)
    labels = rng.integers(0, 5, (2, 3))
    sample_weight = rng.uniform(0.5, 2.0, (2, 3))
    weight = rng.uniform(0.5, 2.0, 5)
    for reduction in ["mean", "sum", "none"]:
        loss = ct.cross_entropy(torch.tensor(x), torch.tensor(labels), torch.tensor(weight),
                                reduction=reduction, label_smoothing=0.1, z_loss=1e-2,
                                sample_weight=torch.tensor(sample_weight))
        expected = reference.softmax_ce(np.moveaxis(x, 1, -1), labels, weight=weight,
                                        sample_weight=sample_weight, reduction=reduction,
                                        label_smoothing=0.1, z_loss=1e-2)
        expected = expected[0] if isinstance(expected, tuple) else expected
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


def logit_map(x, temperature, logit_softcap):
    """cyce's map in torch ops: c tanh(x / c) / T, a -inf logit kept."""
    if logit_softcap is not None:
        x = torch.where(x == -torch.inf, x, logit_softcap * torch.tanh(x / logit_softcap))
    return x / temperature


LOGIT_MAPS = [(0.5, None), (0.5, 5.0), (2.0, None), (2.0, 5.0)]


@pytest.mark.parametrize("temperature, logit_softcap", LOGIT_MAPS, ids=str)
@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3)], ids=str)
@pytest.mark.parametrize("soft", [False, True], ids=["index", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_logit_map_matches_torch(temperature, logit_softcap, shape, soft, reduction):
    """temperature and logit_softcap: the loss and input gradient (random
    grad_output) are float64 autograd's of F.cross_entropy of the mapped
    logits, with class weights, smoothing and (index targets) ignored
    samples; float32 within its tolerance of them."""
    generator = torch.Generator().manual_seed(sum(shape) + 10 * soft + int(4 * temperature))
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 4
    target = hard_or_soft_target(x, soft, generator)
    weight = torch.rand(shape[1], generator=generator, dtype=torch.float64) + 0.5
    kwargs = dict(reduction=reduction, label_smoothing=0.2)
    expected_loss, expected_grad = value_and_grad(
        lambda x, *args, **kw: F.cross_entropy(logit_map(x, temperature, logit_softcap), *args, **kw),
        x, target, weight, **kwargs)
    grad_output = torch.rand(expected_loss.shape, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(3))  # (value_and_grad's)
    for dtype in (torch.float64, torch.float32):
        leaf = x.to(dtype).requires_grad_()
        loss = ct.cross_entropy(leaf, target.to(dtype) if soft else target, weight.to(dtype),
                                temperature=temperature, logit_softcap=logit_softcap, **kwargs)
        (grad,) = torch.autograd.grad(loss, leaf, grad_output.to(dtype))
        assert loss.dtype == dtype and grad.dtype == dtype
        torch.testing.assert_close(loss, expected_loss.to(dtype), **TOLERANCE[dtype])
        torch.testing.assert_close(grad, expected_grad.to(dtype), **TOLERANCE[dtype])


def test_cross_entropy_logit_map_keeps_masked_logits():
    """A -inf logit (a masked class) stays -inf under the softcap: it gets
    probability 0 and gradient 0, as torch's where-mapped logits."""
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 3
    x[:, 2] = -torch.inf
    target = torch.tensor([0, 1, 3, 5])
    for temperature, logit_softcap in LOGIT_MAPS:
        loss, grad = value_and_grad(ct.cross_entropy, x, target, reduction="none",
                                    temperature=temperature, logit_softcap=logit_softcap)
        expected_loss, expected_grad = value_and_grad(
            lambda x, t: F.cross_entropy(logit_map(x, temperature, logit_softcap), t,
                                         reduction="none"), x, target)
        assert torch.isfinite(loss).all() and not grad[:, 2].any()
        torch.testing.assert_close(loss, expected_loss, **TOLERANCE[torch.float64])
        torch.testing.assert_close(grad, expected_grad, **TOLERANCE[torch.float64])


def test_cross_entropy_logit_map_in_place_and_half():
    """inplace_backward writes the functional call's gradient; bfloat16
    input is computed in float32 by the half kernels, near float32 math."""
    generator = torch.Generator().manual_seed(6)
    base = torch.randn(8, 11, generator=generator) * 4
    target = torch.randint(0, 11, (8,), generator=generator)
    options = dict(temperature=0.5, logit_softcap=5.0, label_smoothing=0.1)
    expected = grad_of(ct.cross_entropy, base, target, **options)
    leaf = base.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ct.cross_entropy(leaf * 1, target, inplace_backward=True,
                                                   **options), leaf)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    half = base.to(torch.bfloat16)
    loss, grad = value_and_grad(ct.cross_entropy, half, target, **options)
    expected_loss, expected_grad = value_and_grad(
        lambda x, t: F.cross_entropy(logit_map(x, 0.5, 5.0), t, label_smoothing=0.1),
        half.float(), target)
    assert loss.dtype == grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.float(), expected_loss, rtol=1e-2, atol=0)
    torch.testing.assert_close(grad.float(), expected_grad, rtol=2e-2, atol=1e-3)


def test_cross_entropy_logit_map_fallback_agrees_with_cyce(monkeypatch):
    """Inputs cyce hands to torch get the map as torch ops before
    F.cross_entropy: forced onto that path, CPU input gives cyce's loss and
    gradient (so the fallback stays differentiable); meta input its shape."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 4
    target = torch.tensor([[0, 1, -100], [3, 4, 2]])
    options = dict(temperature=2.0, logit_softcap=5.0, label_smoothing=0.1, reduction="none")
    loss, grad = value_and_grad(ct.cross_entropy, x, target, **options)
    monkeypatch.setattr(ct, "_runs_on_cyce", lambda t: False)
    expected_loss, expected_grad = value_and_grad(ct.cross_entropy, x, target, **options)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE[torch.float64])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCE[torch.float64])
    monkeypatch.undo()
    meta = ct.cross_entropy(x.to("meta"), target.to("meta"), **options)
    assert meta.device.type == "meta" and meta.shape == target.shape


BAD_LOGIT_MAPS = [dict(temperature=0.0), dict(temperature=-2.0), dict(temperature=float("nan")),
                  dict(temperature=float("inf")), dict(logit_softcap=0.0),
                  dict(logit_softcap=-1.0), dict(logit_softcap=float("nan")),
                  dict(logit_softcap=float("inf"))]


@pytest.mark.parametrize("bad", BAD_LOGIT_MAPS, ids=str)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_bad_logit_map_raises_value_error_and_writes_nothing(bad, device):
    """A temperature or softcap that is not finite and > 0 raises ValueError
    before anything is written (in place too), also where torch computes."""
    leaf = (torch.randn(3, 4) * 4).to(device).requires_grad_()
    logits = leaf * 1
    before = logits.detach().clone()
    target = torch.tensor([0, 1, 2], device=device)
    with pytest.raises(ValueError, match="temperature|logit_softcap"):
        ct.cross_entropy(logits, target, inplace_backward=True, **bad)
    if device == "cpu":
        assert torch.equal(logits.detach(), before)
    with pytest.raises(ValueError, match="temperature|logit_softcap"):
        ct.CrossEntropyLoss(**bad)(logits, target)


def test_retain_graph_backward_accumulates():
    x = torch.randn(6, 9, requires_grad=True)
    target = torch.randint(0, 9, (6,))
    expected = grad_of(F.cross_entropy, x, target)
    for function, args in [(ct.cross_entropy, (x, target)),
                           (ct.binary_cross_entropy_with_logits, (x, torch.rand(6, 9).round()))]:
        x.grad = None
        loss = function(*args)
        for _ in range(3):
            loss.backward(retain_graph=True)
        single = grad_of(function, x, *args[1:])
        torch.testing.assert_close(x.grad, 3 * single)
    torch.testing.assert_close(grad_of(ct.cross_entropy, x, target), expected)


def test_double_backward_raises_clearly():
    x = torch.randn(4, 5, requires_grad=True)
    (grad,) = torch.autograd.grad(ct.cross_entropy(x, torch.tensor([0, 1, 2, 3])), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable again"):
        grad.sum().backward()


def test_no_gradient_without_requires_grad():
    """The loss alone: no graph, the same value."""
    x = torch.randn(5, 6)
    loss = ct.cross_entropy(x, torch.tensor([0, 1, 2, 3, 4]))
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(x, torch.tensor([0, 1, 2, 3, 4])))
    with torch.no_grad():
        assert ct.cross_entropy(x.requires_grad_(), torch.tensor([0, 1, 2, 3, 4])).grad_fn is None


def test_probability_targets_that_require_grad_get_no_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    target = torch.softmax(torch.randn(3, 4), 1).requires_grad_()
    loss = ct.cross_entropy(x, target)
    loss.backward()
    assert target.grad is None
    torch.testing.assert_close(x.grad, grad_of(F.cross_entropy, x, target.detach()))


def test_inplace_backward_bumps_the_version_counter():
    hidden = torch.randn(4, 3, requires_grad=True)
    logits = hidden.exp()  # exp saves its output: reading it after the write must fail
    version = logits._version
    loss = ct.cross_entropy(logits, torch.tensor([0, 1, 2, 0]), inplace_backward=True)
    assert logits._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inplace_backward_gradient_flows_on():
    hidden, head = torch.randn(6, 4, requires_grad=True), torch.randn(10, 4, requires_grad=True)
    target = torch.randint(0, 10, (6,))
    for reduction in ["mean", "none"]:
        expected = torch.autograd.grad(F.cross_entropy(hidden @ head.T, target, reduction=reduction).sum(),
                                       (hidden, head))
        loss = ct.cross_entropy(hidden @ head.T, target, reduction=reduction, inplace_backward=True)
        got = torch.autograd.grad(loss.sum(), (hidden, head))
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e)


# ---- bad input: torch's exception types, nothing written ----

BAD_CALLS = [
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 2], dtype=torch.int32)), {}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 2, 3])), {}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 9])), {}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, -5, 1])), {}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 2])), {"weight": torch.ones(5)}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 2])), {"weight": torch.ones(4, dtype=torch.float64)}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 2])), {"label_smoothing": 1.5}),
    ("cross_entropy", lambda x: (x, torch.tensor([0, 1, 2])), {"reduction": "avg"}),
    ("cross_entropy", lambda x: (x, torch.softmax(x, 1)), {"ignore_index": 1}),
    ("cross_entropy", lambda x: (x.reshape(3, 2, 2), torch.zeros(3, 3, dtype=torch.long)), {}),
    ("binary_cross_entropy_with_logits", lambda x: (x, torch.rand(3, 5)), {}),
    ("binary_cross_entropy_with_logits", lambda x: (x, torch.rand(3, 4)), {"weight": torch.ones(5)}),
    ("binary_cross_entropy", lambda x: (x, torch.rand(3, 4)), {}),  # x is not in [0, 1]
    ("binary_cross_entropy", lambda x: (x.sigmoid(), torch.rand(3, 5)), {}),
    ("binary_cross_entropy", lambda x: (x.sigmoid(), torch.rand(3, 4) * 3), {}),
    ("binary_cross_entropy", lambda x: (x.sigmoid(), torch.rand(3, 4, dtype=torch.float64)), {}),
]


@pytest.mark.parametrize("name, make_args, kwargs", BAD_CALLS)
@pytest.mark.parametrize("inplace_backward", [False, True])
def test_bad_input_raises_as_torch_and_writes_nothing(name, make_args, kwargs, inplace_backward):
    x = torch.randn(3, 4) * 4
    args = make_args(x)
    with pytest.raises(Exception) as expected:
        getattr(F, name)(*args, **kwargs)
    before = [a.clone() for a in args]
    extra = {"inplace_backward": True} if inplace_backward and name != "binary_cross_entropy" else {}
    leaf = args[0].detach().requires_grad_()
    logits = leaf * 1
    with pytest.raises(expected.type):
        getattr(ct, name)(logits, *args[1:], **kwargs, **extra)
    torch.testing.assert_close(logits.detach(), before[0])
    for a, b in zip(args[1:], before[1:]):
        assert torch.equal(a, b)


def test_probability_targets_outside_the_unit_interval_raise_value_error():
    with pytest.raises(ValueError, match="not a probability"):
        ct.cross_entropy(torch.randn(3, 4), torch.full((3, 4), 2.0))


# ---- modules ----

MODULES = [
    (ct.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
     dict(weight=torch.rand(4, dtype=torch.float64), ignore_index=1, label_smoothing=0.1), False),
    (ct.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
     dict(weight=torch.rand(4, dtype=torch.float64), pos_weight=torch.rand(4, dtype=torch.float64)), True),
    (ct.BCELoss, torch.nn.BCELoss, dict(weight=torch.rand(4, dtype=torch.float64)), True),
]


@pytest.mark.parametrize("ours, theirs, kwargs, binary", MODULES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_modules_match_torch_modules(ours, theirs, kwargs, binary, reduction):
    ours, theirs = ours(**kwargs, reduction=reduction), theirs(**kwargs, reduction=reduction)
    assert isinstance(ours, type(theirs))
    state, expected_state = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(expected_state)
    for key in state:
        assert torch.equal(state[key], expected_state[key])
    assert dict(ours.named_buffers()).keys() == dict(theirs.named_buffers()).keys()
    ours.load_state_dict(expected_state)
    x = torch.rand(5, 4, dtype=torch.float64)
    target = torch.rand(5, 4, dtype=torch.float64).round() if binary else torch.tensor([0, 1, 2, 3, 1])
    loss, grad = value_and_grad(ours, x, target)
    expected_loss, expected_grad = value_and_grad(theirs, x, target)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE[torch.float64])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCE[torch.float64])


def test_cross_entropy_module_extras():
    module = ct.CrossEntropyLoss(z_loss=1e-3, reduction="sum")
    x, target = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    sample_weight = torch.rand(4, dtype=torch.float64)
    torch.testing.assert_close(
        module(x, target, sample_weight=sample_weight),
        ct.cross_entropy(x, target, reduction="sum", z_loss=1e-3, sample_weight=sample_weight))


def test_cross_entropy_module_logit_map():
    """temperature and logit_softcap are keyword-only attributes of the
    module, outside its state_dict (torch's keys and buffers unchanged)."""
    weight = torch.rand(6, dtype=torch.float64) + 0.5
    module = ct.CrossEntropyLoss(weight, temperature=2.0, logit_softcap=5.0, label_smoothing=0.1)
    assert (module.temperature, module.logit_softcap) == (2.0, 5.0)
    assert list(module.state_dict()) == list(torch.nn.CrossEntropyLoss(weight).state_dict())
    with pytest.raises(TypeError):
        ct.CrossEntropyLoss(weight, None, -100, None, "mean", 0.0, 2.0)  # (not positional)
    x, target = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        module(x, target),
        ct.cross_entropy(x, target, weight, label_smoothing=0.1, temperature=2.0, logit_softcap=5.0))
    plain = ct.CrossEntropyLoss(weight, label_smoothing=0.1)
    assert (plain.temperature, plain.logit_softcap) == (1.0, None)
    torch.testing.assert_close(plain(x, target), F.cross_entropy(x, target, weight, label_smoothing=0.1))


def test_threads_follow_torch(monkeypatch):
    """cyce is called with torch.get_num_threads()."""
    seen = []
    real = ct._softmax.softmax_ce

    def spy(*args, **kwargs):
        seen.append(kwargs["num_threads"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ct._softmax, "softmax_ce", spy)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ct.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    finally:
        torch.set_num_threads(previous)
    assert seen == [1]


def test_import_cyce_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, cyce; cyce.softmax_ce([[1.0, 2.0]], [0]); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spare_gradient_buffer_is_reused_only_when_free(monkeypatch):
    """The gradient's memory is handed out again only once no tensor uses it."""
    monkeypatch.setattr(ct, "SPARE_MIN_BYTES", 0)
    ct.empty_cache()
    target = torch.tensor([0, 1, 2, 3])

    def gradient():
        x = torch.randn(4, 5, requires_grad=True)
        ct.cross_entropy(x, target).backward()
        return x.grad

    first = gradient()
    second = gradient()  # first is alive: a new buffer
    assert second.data_ptr() != first.data_ptr()
    kept = first.clone()
    address = second.data_ptr()
    del second
    third = gradient()
    assert third.data_ptr() == address
    torch.testing.assert_close(first, kept)  # never written over while in use
    ct.empty_cache()
    assert not ct._spare
