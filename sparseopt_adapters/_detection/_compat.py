"""Equation parameters and jaxpr objects across the supported JAX versions (0.10.2 - 0.12).

Rules never index ``eqn.params`` for a parameter whose name or shape changed between JAX
releases; they call a function here. A new JAX release that renames something is one change in
this file (and a corpus run on both ends of the range, see ``.ci/run``).

Changes handled:

- ``scan``: JAX 0.10 has ``num_consts`` / ``num_carry``; JAX 0.12 replaced them by ``ft_in``, a
  flat-tree tuple ``(consts, carry, xs)`` whose groups give the counts (asdex 0.5.2 reads it the
  same way).
- closed jaxprs: JAX 0.12 folded ``ClosedJaxpr`` into ``Jaxpr`` (``jax.extend.core.ClosedJaxpr``
  is ``Jaxpr`` there; a jaxpr carries its own ``consts`` and ``.jaxpr`` returns itself).
- call-like primitives name their inner program ``jaxpr`` (``jit``/``pjit``, ``remat2``),
  ``call_jaxpr`` (``closed_call``, ``custom_jvp_call``) or ``fun_jaxpr`` (``custom_vjp_call``).
"""

from __future__ import annotations

import jax
from jax.extend import core as jcore

JAX_VERSION = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())

Literal = jcore.Literal
DropVar = jcore.DropVar


def is_literal(v) -> bool:
    return isinstance(v, Literal)


def is_dropvar(v) -> bool:
    return isinstance(v, DropVar)


def literal_value(v):
    return v.val


def closed_parts(closed):
    """``(jaxpr, consts)`` of a closed jaxpr (any version), or of an open one (no consts)."""
    consts = getattr(closed, "consts", None)
    inner = getattr(closed, "jaxpr", closed)
    if consts is None:
        return closed, []
    return inner, list(consts)


def scan_counts(params) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a ``scan`` equation."""
    if "num_consts" in params:
        return int(params["num_consts"]), int(params["num_carry"])
    groups = params["ft_in"].unpack()
    return len(groups[0]), len(groups[1])


def scan_body(params):
    return params["jaxpr"]


def while_parts(params):
    """``(cond_nconsts, body_nconsts, cond_jaxpr, body_jaxpr)`` of a ``while`` equation."""
    return (int(params["cond_nconsts"]), int(params["body_nconsts"]), params["cond_jaxpr"],
            params["body_jaxpr"])


def cond_branches(params):
    return params["branches"]


def inner_jaxpr(params):
    """The program a call-like equation runs (``None`` when it has none)."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr", "callee"):
        j = params.get(key)
        if j is not None:
            return j
    return None


def custom_primal_jaxpr(params):
    """The primal program of a ``custom_jvp_call`` / ``custom_vjp_call``."""
    return params.get("call_jaxpr") or params.get("fun_jaxpr")


def linear_solve_const_lengths(params):
    lens = params["const_lengths"]
    return lens.matvec, lens.vecmat, lens.solve, lens.transpose_solve


def conv_params(params):
    """Convolution parameters as one dict with the names JAX 0.10 - 0.12 use."""
    return {
        "dimension_numbers": params["dimension_numbers"],
        "window_strides": params["window_strides"],
        "padding": params["padding"],
        "lhs_dilation": params["lhs_dilation"],
        "rhs_dilation": params["rhs_dilation"],
        "feature_group_count": int(params.get("feature_group_count", 1)),
        "batch_group_count": int(params.get("batch_group_count", 1)),
    }


def reduce_axes(params) -> tuple[int, ...]:
    return tuple(params["axes"])


def cumulative_params(params) -> tuple[int, bool]:
    return int(params["axis"]), bool(params["reverse"])


def scatter_params(params):
    return {
        "dimension_numbers": params["dimension_numbers"],
        "indices_are_sorted": params["indices_are_sorted"],
        "unique_indices": params["unique_indices"],
        "mode": params["mode"],
    }


def sort_params(params) -> tuple[int, int]:
    return int(params["dimension"]), int(params["num_keys"])


def dot_dimension_numbers(params):
    return params["dimension_numbers"]


def triangular_solve_params(params):
    return {
        "left_side": bool(params["left_side"]),
        "lower": bool(params["lower"]),
        "transpose_a": bool(params["transpose_a"]),
        "conjugate_a": bool(params.get("conjugate_a", False)),
        "unit_diagonal": bool(params["unit_diagonal"]),
    }
