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
