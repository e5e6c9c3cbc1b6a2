"""Tests of ``pplx.capture``: ATen graphs recorded once and replayed."""

import pytest
import torch

from pplx.capture import CaptureError, capture


def ops(graph):
    return [n.target for n in graph.graph.nodes if n.op == "call_function"]


def test_capture_drops_dead_operations_and_noop_aliases():
    def fn(x):
        unused = x.exp()  # noqa: F841 - dead
        return (x.view(x.shape).expand(x.shape) * 2).reshape(3, 2)

    graph = capture(fn, torch.ones(2, 3))
    assert ops(graph) == [torch.ops.aten.mul.Tensor, torch.ops.aten.view.default]
    torch.testing.assert_close(
        graph(torch.arange(6.0).reshape(2, 3)), torch.arange(0.0, 12, 2).reshape(3, 2)
    )


def test_capture_folds_gradient_free_constants_but_not_parameters():
    scale = torch.tensor([2.0, 4.0])
    weight = torch.tensor([1.0, 3.0], requires_grad=True)

    def fn(x):
        return x * scale.log() + x * weight.exp()

    graph = capture(fn, torch.ones(2))
    # scale.log() is computed once; weight.exp() stays (weight may change in place)
    assert torch.ops.aten.log.default not in ops(graph)
    assert torch.ops.aten.exp.default in ops(graph)
    x = torch.tensor([0.5, -1.0])
    torch.testing.assert_close(graph(x), fn(x))
    with torch.no_grad():
        weight.add_(1.0)
    torch.testing.assert_close(graph(x), fn(x))


def test_capture_keeps_random_operations_random():
    graph = capture(lambda x: x + torch.randn(3), torch.zeros(3))
    assert not torch.equal(graph(torch.zeros(3)), graph(torch.zeros(3)))


def test_capture_refuses_functions_that_read_tensor_values():
    def fn(x):
        return x * 2 if x.sum() > 0 else x

    with pytest.raises(CaptureError, match="reads a tensor's value in Python"):
        capture(fn, torch.ones(2))


def test_one_hot_is_captured_without_reading_values():
    graph = capture(lambda c: torch.nn.functional.one_hot(c, 4).float(), torch.tensor([0, 1]))
    torch.testing.assert_close(graph(torch.tensor([3, 2])), torch.eye(4)[[3, 2]])


def test_operations_that_read_only_metadata_are_folded():
    # ones_like(x) depends on x's shape, dtype and device only, all fixed at capture.
    graph = capture(lambda x: x * torch.ones_like(x).add(1.0).log(), torch.zeros(3))
    assert ops(graph) == [torch.ops.aten.mul.Tensor]
    x = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(graph(x), x * torch.tensor(2.0).log())


def test_tuple_results_do_not_stop_the_simplification():
    # max(dim) returns a tuple (unpacked by getitem): that is no in-place write.
    scale = torch.tensor(3.0)
    graph = capture(lambda x: x.max(-1).values * scale.log(), torch.ones(2, 3))
    assert torch.ops.aten.log.default not in ops(graph)
    x = torch.arange(6.0).reshape(2, 3)
    torch.testing.assert_close(graph(x), x.max(-1).values * scale.log())


def test_identity_arithmetic_and_repeated_expressions_are_dropped():
    def fn(x):
        return (x / 1 + 0) * x.exp() - 0 + x.exp() * 1

    graph = capture(fn, torch.ones(3))
    assert ops(graph).count(torch.ops.aten.exp.default) == 1
    assert torch.ops.aten.div.Tensor not in ops(graph)
    x = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(graph(x), fn(x))


def test_identity_arithmetic_that_changes_dtype_or_shape_is_kept():
    graph = capture(
        lambda c, y: (c / 1, c * 1, y + 0), torch.ones(2, dtype=torch.long), torch.ones(2, 1)
    )
    c = torch.tensor([1, 2])
    results = graph(c, torch.ones(2, 1))
    assert results[0].dtype == torch.float32 and results[1].dtype == torch.long


def test_random_operations_are_never_merged():
    graph = capture(lambda x: x + torch.rand(1000) - torch.rand(1000), torch.zeros(1000))
    assert ops(graph).count(torch.ops.aten.rand.default) == 2
    assert graph(torch.zeros(1000)).abs().max() > 0


def test_categorical_draws_recorded_by_inverse_cdf_have_the_right_distribution():
    weights = torch.tensor([[0.0, 2.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 3.0]])
    graph = capture(lambda w: torch.multinomial(w, 1000, replacement=True), weights)
    assert torch.ops.aten.multinomial.default not in ops(graph)
    torch.manual_seed(0)
    draws = torch.cat([graph(weights) for _ in range(20)], -1)  # 20,000 per row
    assert draws.shape == (2, 20_000)
    counts = torch.stack([torch.bincount(row, minlength=5) for row in draws]).double()
    probs = (weights / weights.sum(-1, keepdim=True)).double()
    assert (counts[probs == 0] == 0).all()  # zero-weight categories are never drawn
    se = (20_000 * probs * (1 - probs)).sqrt()
    assert ((counts - 20_000 * probs).abs() <= 4 * se).all()
    # one draw per row of a batch, as Categorical(probs).sample() asks for it
    batch = capture(lambda w: torch.distributions.Categorical(w).sample(), weights.expand(7, 2, 5))
    assert batch(weights.expand(7, 2, 5)).shape == (7, 2)


def test_merging_tells_apart_numbers_of_different_type_and_sign():
    graph = capture(lambda x: (x + 2, x + 2.0), torch.arange(3))
    ints, floats = graph(torch.arange(3))
    assert ints.dtype == torch.long and floats.dtype == torch.float32
    graph = capture(lambda x: (x * 0.0, x * -0.0), torch.ones(2))
    plus, minus = graph(torch.tensor([1.0, -1.0]))
    assert torch.equal(plus.signbit(), torch.tensor([False, True]))
    assert torch.equal(minus.signbit(), torch.tensor([True, False]))


def test_identity_arithmetic_on_a_strided_tensor_is_kept():
    # x.expand(...) * 1.0 is dense; the reshape after it was recorded as a view of that
    def fn(x):
        return (x.expand(3, 4) * 1.0).reshape(12)

    x = torch.arange(3.0).reshape(3, 1)
    torch.testing.assert_close(capture(fn, x)(x), fn(x))


def test_inverse_cdf_draws_stay_in_range_and_unbiased_in_low_precision():
    from pplx.capture import _inverse_cdf_draws

    torch.manual_seed(0)
    bad = torch.tensor([[0.0, 0.0, 0.0], [float("nan"), 1.0, 1.0]])
    assert _inverse_cdf_draws(bad, 50).max() <= 2
    # bfloat16 cumulative sums would lose most of 2000 equal weights
    draws = _inverse_cdf_draws(torch.ones(2000, dtype=torch.bfloat16), 100_000)
    assert torch.bincount(draws, minlength=2000).min() > 0  # about 50 expected per category


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
        ),
    ],
)
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_sequence_rnns_are_captured_with_their_gradients(device, kind):
    # On CUDA the modules keep their weights in one flat cuDNN buffer, which make_fx cannot
    # record as such.
    torch.manual_seed(0)
    rnn = getattr(torch.nn, kind)(3, 5, num_layers=2, batch_first=True).to(device)
    x = torch.randn(4, 7, 3, device=device)

    def loss(inputs):
        return rnn(inputs)[0].pow(2).sum()

    graph = capture(loss, x)
    expected = torch.autograd.grad(loss(x), list(rnn.parameters()))
    value = graph(x)
    # eager cuDNN multiplies in TF32 (torch.backends.cudnn.allow_tf32), the recorded native
    # recurrence in float32: about 3e-4 apart
    tol = {"rtol": 2e-3, "atol": 2e-3} if device == "cuda" else {}
    torch.testing.assert_close(value, loss(x), **tol)
    for got, want in zip(torch.autograd.grad(value, list(rnn.parameters())), expected):
        torch.testing.assert_close(got, want, **tol)
