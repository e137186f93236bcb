"""Elementwise primitives: outputs depend on the corresponding (broadcast) input elements."""

from __future__ import annotations

import numpy as np

from .. import _abstract as ab
from .. import _intervals as iv
from .._common import bind_eqn, make, out_shape_dtype, unknown_like
from .._registry import rule
from ._shared import bcast, gathered

# -- elementwise ----------------------------------------------------------------------------
ELEMENTWISE = """
neg sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh exp exp2 log log1p expm1
sqrt rsqrt cbrt logistic abs square integer_pow erf erfc erf_inv lgamma digamma igamma
igammac igamma_grad_a random_gamma_grad bessel_i0e bessel_i1e polygamma zeta
regularized_incomplete_beta
real imag conj complex copy copy_p reduce_precision convert_element_type add sub max min pow
atan2 rem nextafter clamp add_any log2 one_minus_square polynomial
""".split()
ZERO_DERIVATIVE = """
sign floor ceil round is_finite stop_gradient eq ne lt le gt ge and or not xor
shift_left shift_right_logical shift_right_arithmetic population_count clz eq_to le_to lt_to
mulhi
""".split()
# Outputs that carry no derivative whatever the inputs: index/bit/random-number generation,
# tokens, uninitialised buffers, platform switches, side effects without outputs.
NO_DEPENDENCY = """
iota rng_bit_generator rng_uniform create_token after_all empty empty2 to_edtype from_edtype
bitcast_convert_type axis_index platform_index debug_callback debug_print dce_sink unreachable
random_seed random_bits random_split random_fold_in random_wrap random_unwrap iota_2x32_shape
threefry2x32 threefry4x32 philox2x32 philox4x32
""".split()


# f(0, ..., 0) for common elementwise primitives, known without running anything (running
# the primitive compiles a small XLA program per primitive and dtype): False when it is 0.
_ZERO_TO_ZERO = frozenset("""
neg sin tan asin atan sinh tanh asinh atanh sqrt cbrt abs square erf erf_inv real imag conj
copy copy_p reduce_precision convert_element_type add sub max min add_any expm1 log1p
atan2 clamp complex nextafter sign
""".split())
_ZERO_TO_NONZERO = frozenset("cos cosh exp exp2 log logistic erfc rsqrt acos pow".split())


def _zero_image(eqn, ins):
    """Does the elementwise op map all-zero operands to a nonzero?"""
    name = eqn.primitive.name
    if name in _ZERO_TO_ZERO:
        return False
    if name in _ZERO_TO_NONZERO:
        return True
    if name == "integer_pow":
        return int(eqn.params["y"]) <= 0
    try:
        zs = [np.zeros((), a.dtype) for a in ins]
        out = bind_eqn(eqn, *zs)[0]
        return bool(np.asarray(out) != 0)
    except Exception:
        return True


def _integer_result(eqn, ins):
    """Integer/boolean outputs carry no derivative, but bounds (for index arithmetic)."""
    shape, dtype = out_shape_dtype(eqn)
    try:
        out = iv.evaluate(eqn.primitive.name, ins, shape, dtype, eqn.params)
    except (ValueError, TypeError):  # shapes that do not broadcast: no bounds
        out = None
    return [out if out is not None else unknown_like(eqn.outvars[0].aval)]


@rule(*ELEMENTWISE)
def _elementwise(interp, eqn, ins):
    shape, dtype = out_shape_dtype(eqn)
    if not np.issubdtype(dtype, np.inexact):
        return _integer_result(eqn, ins)
    ins = [bcast(interp, a, shape) for a in ins]
    nz = np.zeros(ins[0].size if ins else 0, bool)
    for a in ins:
        nz |= a.nz
    if _zero_image(eqn, ins):
        nz[:] = True
    if not np.issubdtype(dtype, np.inexact):
        return [unknown_like(eqn.outvars[0].aval)]
    deps = ab.union(*[a.deps for a in ins if a.differentiable])
    if eqn.primitive.name == "integer_pow" and eqn.params.get("y") == 0:
        deps = None
    return [ab.from_deps(shape, dtype, deps, nz)]


@rule(*ZERO_DERIVATIVE)
def _zero_derivative(interp, eqn, ins):
    shape, dtype = out_shape_dtype(eqn)
    if eqn.primitive.name == "stop_gradient":
        a = ins[0]
        return [ab.AbstractArray(shape, dtype, a.nz.copy(), None, a.value, a.lo, a.hi)]
    if not np.issubdtype(dtype, np.inexact):
        return _integer_result(eqn, ins)
    ins = [bcast(interp, a, shape) for a in ins]
    nz = np.zeros(int(np.prod(shape, dtype=np.int64)), bool)
    for a in ins:
        nz |= a.nz
    if _zero_image(eqn, ins):
        nz[:] = True
    return [ab.AbstractArray(shape, dtype, nz)]


@rule("mul")
def _mul(interp, eqn, ins):
    shape, dtype = out_shape_dtype(eqn)
    if not np.issubdtype(dtype, np.inexact):
        return _integer_result(eqn, ins)
    a, b = (bcast(interp, x, shape) for x in ins)
    deps = ab.union(ab.mask_rows(a.deps, b.nz), ab.mask_rows(b.deps, a.nz))
    return [make(eqn, deps, a.nz & b.nz)]


@rule("div")
def _div(interp, eqn, ins):
    shape, dtype = out_shape_dtype(eqn)
    if not np.issubdtype(dtype, np.inexact):
        return _integer_result(eqn, ins)
    a, b = (bcast(interp, x, shape) for x in ins)
    deps = ab.union(a.deps, ab.mask_rows(b.deps, a.nz))
    return [make(eqn, deps, a.nz.copy())]


@rule("select_n")
def _select_n(interp, eqn, ins):
    shape, dtype = out_shape_dtype(eqn)
    if not np.issubdtype(dtype, np.inexact):
        return _integer_result(eqn, ins)
    pred, cases = ins[0], [bcast(interp, c, shape) for c in ins[1:]]
    size = int(np.prod(shape, dtype=np.int64))
    if not pred.known:
        lo, hi = iv.bounds(pred)
        if lo.size and bool((lo == hi).all()):  # the bounds decide every element
            pred = ab.known(lo.astype(np.int64))
    if pred.known:
        which = np.broadcast_to(np.asarray(pred.value).astype(np.int64), shape).reshape(-1)
        src = which * size + np.arange(size)
        return [gathered(eqn, cases, src)]
    deps = ab.union(*[c.deps for c in cases])
    nz = np.zeros(size, bool)
    for c in cases:
        nz |= c.nz
    return [make(eqn, deps, nz)]




@rule(*NO_DEPENDENCY)
def _no_dependency(interp, eqn, ins):
    """Outputs depend on no differentiated input (integers, bits, tokens, fresh buffers)."""
    return [unknown_like(v.aval) for v in eqn.outvars]


@rule("zeros_like")
def _zeros_like(interp, eqn, ins):
    shape, dtype = out_shape_dtype(eqn)
    return [ab.known(np.zeros(shape, dtype))]


@rule("tie")
def _tie(interp, eqn, ins):
    """``tie(x, y)`` is ``y`` (x only orders the computation)."""
    return [ins[-1]]
