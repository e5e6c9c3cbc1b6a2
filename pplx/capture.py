"""Capture a tensor function once as a flat graph of ATen operations, and replay it.

Particle engines evaluate the same Pyro model, at the same shapes, thousands of times. Running
the model through Pyro's handlers every step costs far more than the tensor work when there
are few particles. :func:`capture` runs the function once under
:func:`torch.fx.experimental.proxy_tensor.make_fx` and keeps the ATen operations it issued
(forward *and* backward, when the function calls :func:`torch.autograd.grad`), simplified
(see :func:`capture`). Replaying that graph runs no Python model code, no Pyro handler and no
autograd bookkeeping.

Capture records one path through the program at fixed shapes (capture again for new shapes):
Python control flow on shapes or on Python state is fixed at capture time, while a function
that reads a tensor's *value* in Python (``.item()``, a branch on a value) is refused with a
:class:`CaptureError` instead of being frozen as :func:`torch.jit.trace` would. Random
operations inside the function stay random; anything else that must change from call to call
(minibatch indices, say) should be an input.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable

import pyro
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode


class _Substitutions(TorchFunctionMode):
    """Swap functions for equivalents that record better as a graph.

    * ``one_hot(c, num_classes)`` checks that ``c`` lies in range (reading its minimum and
      maximum, a value read capture refuses); with ``num_classes`` given,
      ``c[..., None] == arange(num_classes)`` computes the same encoding without the check
      (values out of range give all-zero rows).
    * ``multinomial(p, n, replacement=True)`` (how ``Categorical`` samples) draws by inverse
      CDF, one uniform per draw, instead of torch's one exponential per category and draw for
      ``n = 1``; the draws have the same distribution.
    * The sequence RNNs (``nn.GRU``, ``nn.LSTM``, ``nn.RNN``) on CUDA hand cuDNN a flat
      weight buffer made by wrapping a storage (``set_`` with a ``Storage``), which
      ``make_fx`` cannot record, whatever the weights' layout. With cuDNN off for that call
      they record as torch's native recurrence: the same function and gradients, one small
      set of operations per time step instead of one cuDNN kernel.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.one_hot:
            tensor = args[0]
            num_classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
            if num_classes >= 0:
                classes = torch.arange(num_classes, device=tensor.device)
                return (tensor.unsqueeze(-1) == classes).long()
        if (
            func is torch.multinomial
            and kwargs.get("out") is None
            and kwargs.get("generator") is None
        ):
            named = dict(zip(("input", "num_samples", "replacement"), args), **kwargs)
            if named.get("replacement", False) or named["num_samples"] == 1:
                return _inverse_cdf_draws(named["input"], named["num_samples"])
        if func in _SEQUENCE_RNNS and any(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
            with torch.backends.cudnn.flags(enabled=False):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


#: torch's sequence RNN functions (what ``nn.GRU``/``nn.LSTM``/``nn.RNN`` call).
_SEQUENCE_RNNS = (torch.gru, torch.lstm, torch.rnn_tanh, torch.rnn_relu)


def _inverse_cdf_draws(weights: torch.Tensor, num_samples: int) -> torch.Tensor:
    r"""``num_samples`` categories per row of the (unnormalised) ``weights``, with replacement.

    The draw is the first :math:`i` with :math:`C_i > u\,C_K` for the cumulative weights
    :math:`C` (summed in at least single precision) and :math:`u \sim U[0, 1)`, so
    categories of zero weight are never drawn (:math:`u\,C_K < C_K` in floating point).
    Rows that are no distribution (all zero, NaN) give the last category, where ``multinomial``
    would raise: a replayed graph cannot raise, and NaN weights make the loss NaN anyway.
    """
    cdf = weights.to(torch.promote_types(weights.dtype, torch.float32)).cumsum(-1)
    u = torch.rand(*cdf.shape[:-1], num_samples, dtype=cdf.dtype, device=cdf.device)
    draws = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
    return draws.clamp(max=weights.shape[-1] - 1)


class CaptureError(RuntimeError):
    """The function could not be captured (it reads tensor values in Python, for instance)."""


def capture(fn: Callable, *example_inputs: torch.Tensor) -> torch.fx.GraphModule:
    """The ATen graph of ``fn`` at these example inputs, simplified.

    Dead operations are removed and, in graphs without in-place operations, operations on
    gradient-free constants or on input metadata only are computed once, and no-op views are
    dropped.

    Validation (Pyro's and torch.distributions') is switched off while capturing: its checks
    read tensor values in Python, which a captured graph cannot do at replay time.

    Raises:
        CaptureError: ``fn`` cannot be captured; the message says why.
    """
    try:
        with pyro.validation_enabled(False), warnings.catch_warnings(), _Substitutions():
            warnings.simplefilter("ignore")
            graph = make_fx(fn)(*example_inputs)
    except Exception as error:  # noqa: BLE001 - re-raised with a uniform type
        if "_local_scalar_dense" in str(error):
            reason = "it reads a tensor's value in Python (.item(), float(), a branch on a value)"
        else:
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise CaptureError(reason) from error
    _simplify(graph)
    graph.recompile()
    return graph


_ALIASES = {
    torch.ops.aten.alias.default,
    torch.ops.aten.view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten._unsafe_view.default,
    torch.ops.aten.expand.default,
}


def _mutates(node: torch.fx.Node) -> bool:
    """Whether ``node`` may write into a tensor (unknown callables are assumed to)."""
    if node.target is operator.getitem:  # unpacks an operation's tuple of results
        return False
    schema = getattr(node.target, "_schema", None)
    return schema is None or schema.is_mutable


def _shape(node: object) -> tuple | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _simplify(module: torch.fx.GraphModule) -> None:
    """Drop dead operations, and (without in-place operations) fold constants and no-op views.

    Each operation costs a few microseconds of dispatch at replay, which is what a captured
    graph of a small model spends its time on. Operations whose inputs are all constants that
    need no gradient (a prior's scale, its logarithm, the transposed data) are computed once
    here. Views and expansions to the input's own shape, ``alias``, ``x ** 1``, ``x + 0``,
    ``x * 1``, ``x / 1`` and copies of constants (``lift_fresh_copy``) do nothing when no
    operation writes into a tensor in place (``x + 0`` would turn ``-0.0`` into ``+0.0``;
    without it ``-0.0`` stays), and repeated deterministic operations on the same inputs are
    merged into one.
    """
    graph = module.graph
    graph.eliminate_dead_code()
    calls = [n for n in graph.nodes if n.op == "call_function"]
    if any(_mutates(n) for n in calls):
        return
    _fold_constants(module)
    for node in [n for n in graph.nodes if n.op == "call_function"]:
        source = node.args[0] if node.args else None
        if (
            node.target is torch.ops.aten.lift_fresh_copy.default
            or (node.target is torch.ops.aten.pow.Tensor_Scalar and node.args[1] == 1)
            or (
                node.target in _ALIASES
                and _shape(node) is not None
                and _shape(node) == _shape(source)
            )
            or (_is_identity_arithmetic(node) and _same_layout(node, source))
        ):
            node.replace_all_uses_with(source)
            graph.erase_node(node)
    _merge_common_subexpressions(graph)


#: ``op(x, c)`` that returns ``x`` itself for the Python number ``c`` given here.
_IDENTITY_OPERAND = {
    torch.ops.aten.add.Tensor: 0,
    torch.ops.aten.sub.Tensor: 0,
    torch.ops.aten.mul.Tensor: 1,
    torch.ops.aten.div.Tensor: 1,
}


def _is_identity_arithmetic(node: torch.fx.Node) -> bool:
    """``x + 0``, ``x - 0``, ``x * 1`` or ``x / 1`` with a Python number operand."""
    neutral = _IDENTITY_OPERAND.get(node.target)
    if neutral is None or len(node.args) != 2 or node.kwargs:
        return False
    operand = node.args[1]
    return (
        isinstance(operand, (int, float))
        and not isinstance(operand, bool)
        and (operand == neutral)
    )


def _same_layout(node: torch.fx.Node, source: object) -> bool:
    """Whether ``node`` and ``source`` had one shape, dtype, strides and device at capture.

    Arithmetic on an expanded or strided tensor returns a dense one, on which later views
    were recorded; such an operation is no no-op.
    """
    value = node.meta.get("val")
    other = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
    return (
        isinstance(value, torch.Tensor)
        and isinstance(other, torch.Tensor)
        and value.shape == other.shape
        and value.dtype == other.dtype
        and value.stride() == other.stride()
        and value.device == other.device
    )


def _hashable(value: object) -> object:
    """A key for ``value`` that tells apart what Python's ``==`` does not.

    Lists become tuples; numbers carry their type (``x + 1`` and ``x + 1.0`` differ in result
    dtype) and floats their sign (``x * 0.0`` and ``x * -0.0``).
    """
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, float):
        return (float, value, math.copysign(1.0, value))
    if isinstance(value, (bool, int, complex)):
        return (type(value), value)
    return value


def _merge_common_subexpressions(graph: torch.fx.Graph) -> None:
    """Compute each deterministic operation once per distinct input (``exp(x)`` used thrice).

    Only for graphs without in-place operations, so that equal expressions hold equal values.
    """
    seen: dict[object, torch.fx.Node] = {}
    for node in list(graph.nodes):
        if (
            node.op != "call_function"
            or not isinstance(node.target, torch._ops.OpOverload)
            or torch.Tag.nondeterministic_seeded in node.target.tags
        ):
            continue
        try:
            key = (node.target, _hashable(node.args), _hashable(node.kwargs))
            earlier = seen.setdefault(key, node)
        except TypeError:  # an argument that cannot be compared by value
            continue
        if earlier is not node:
            node.replace_all_uses_with(earlier)
            graph.erase_node(node)


_METADATA_ONLY = {  # results depend on their first input's shape, dtype and device only
    torch.ops.aten.new_full.default,
    torch.ops.aten.new_zeros.default,
    torch.ops.aten.new_ones.default,
    torch.ops.aten.full_like.default,
    torch.ops.aten.zeros_like.default,
    torch.ops.aten.ones_like.default,
}


def _placeholder_like(node: torch.fx.Node) -> torch.Tensor | None:
    """An uninitialised tensor with the metadata ``node`` had at capture time."""
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return None
    return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)


def _fold_constants(module: torch.fx.GraphModule) -> None:
    """Replace deterministic operations on gradient-free constants by their (tensor) result.

    Operations that read only their input's metadata (``new_full``, ``ones_like``...) count as
    constant whatever the input, since shapes, dtypes and devices are fixed at capture.
    """
    graph = module.graph
    values: dict[torch.fx.Node, torch.Tensor] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            value = getattr(module, node.target, None)
            if isinstance(value, torch.Tensor) and not value.requires_grad:
                values[node] = value
            continue
        if (
            node.op != "call_function"
            or not isinstance(node.target, torch._ops.OpOverload)
            or torch.Tag.nondeterministic_seeded in node.target.tags
        ):
            continue
        source, placeholder = None, None
        if node.target in _METADATA_ONLY and isinstance(node.args[0], torch.fx.Node):
            source, placeholder = node.args[0], _placeholder_like(node.args[0])

        def value_of(n: torch.fx.Node, source=source, placeholder=placeholder) -> torch.Tensor:
            return placeholder if n is source and placeholder is not None else values[n]

        if all(
            n in values or (n is source and placeholder is not None) for n in node.all_input_nodes
        ):
            args = torch.fx.node.map_arg(node.args, value_of)
            kwargs = torch.fx.node.map_arg(node.kwargs, value_of)
            with torch.no_grad():
                result = node.target(*args, **kwargs)
            if isinstance(result, torch.Tensor):
                values[node] = result
    for node in list(graph.nodes):
        if node.op != "call_function" or node not in values:
            continue
        if all(user in values for user in node.users):
            continue  # only feeds other folded operations
        name = f"_folded_{node.name}"
        module.register_buffer(name, values[node], persistent=False)
        with graph.inserting_before(node):
            constant = graph.get_attr(name)
        constant.meta = dict(node.meta)
        node.replace_all_uses_with(constant)
    graph.eliminate_dead_code()
