"""Calls and control flow: jit/pjit/remat, custom_jvp/vjp, cond, while, scan, callbacks."""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp

from .. import _abstract as ab
from .. import _compat
from .. import _intervals as iv
from .._common import UNROLL_BUDGET, WIDEN_AFTER, all_to_all, unknown_like
from .._registry import rule


@rule("jit", "pjit", "closed_call", "core_call", "call", "remat", "remat2", "checkpoint",
      "custom_lin", "shard_map", "eval_jaxpr", "composite", "custom_vmap_call")
def _call(interp, eqn, ins):
    """Calls (``jit``, ``jax.checkpoint`` = ``remat2``, ...) run their inner program."""
    jaxpr = _compat.inner_jaxpr(eqn.params)
    if jaxpr is None:
        return None
    outs = _enumerate_index_call(interp, eqn, jaxpr, ins)
    if outs is not None:
        return outs
    return interp.run_closed(jaxpr, ins)


# Most input assignments an integer-only call (floor_divide, remainder, clip ...) is evaluated
# on when its inputs are bounded: the hull of its outputs keeps the relations interval
# arithmetic loses (``x // 2`` with its sign correction stays in ``[lo // 2, hi // 2]``).
INDEX_CALL_BUDGET = 64


def _enumerate_index_call(interp, eqn, jaxpr, ins):
    if any(_is_float(v.aval) for v in eqn.outvars) or any(a.has_deps for a in ins):
        return None
    free = [i for i, a in enumerate(ins) if not a.known]
    if not free or not all(iv.finite(ins[i]) for i in free):
        return None
    ranges = []
    for i in free:
        lo, hi = iv.bounds(ins[i])
        ranges += [(0, int(h - lo_)) for lo_, h in zip(lo.reshape(-1), hi.reshape(-1),
                                                          strict=True)]
    cases = iv.cases(ranges, INDEX_CALL_BUDGET)
    if cases is None:
        return None
    result = None
    for off in cases:
        args, k = list(ins), 0
        for i in free:
            lo, _ = iv.bounds(ins[i])
            n = lo.size
            vals = lo.reshape(-1) + np.asarray(off[k:k + n], np.float64)
            k += n
            args[i] = ab.known(vals.reshape(ins[i].shape).astype(ins[i].dtype))
        outs = interp.run_closed(jaxpr, args)
        result = outs if result is None else [ab.join(x, y) for x, y in zip(result, outs,
                                                                              strict=True)]
    return result


def _is_float(aval) -> bool:
    try:
        return np.issubdtype(np.dtype(aval.dtype), np.inexact)
    except TypeError:
        return False


@rule("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_jvp_call_jaxpr")
def _custom(interp, eqn, ins):
    if eqn.primitive.name in interp.expanding:
        # Nested inside the derivative rule of the same kind of call: the rule *evaluates* it
        # (on tangents it is linear), so its own program gives the pattern; expanding its
        # derivative rule again recursed without bound (optimistix wraps fn in jnp.asarray).
        inner = _compat.custom_primal_jaxpr(eqn.params)
        if inner is not None:
            return interp.run_closed(inner, ins)
    inner = _compat.custom_primal_jaxpr(eqn.params)
    if not any(a.has_deps for a in ins):
        if inner is not None:
            outs = interp.run_closed(inner, ins)
            return [ab.AbstractArray(o.shape, o.dtype, o.nz, None, o.value, o.lo, o.hi)
                    for o in outs]
        return None
    outs = interp.local_pattern_by_ad(eqn, ins)
    if inner is not None and any(not _is_float(v.aval) for v in eqn.outvars):
        # Integer outputs (an index array returned next to the primal) carry no derivative,
        # but their values or bounds come from the primal program.
        primal = interp.run_closed(inner, ins)
        outs = [p if not _is_float(v.aval) else o
                for o, p, v in zip(outs, primal, eqn.outvars, strict=True)]
    return outs


_join_abstract = ab.join


def _same(a: ab.AbstractArray, b: ab.AbstractArray) -> bool:
    if a.known != b.known:
        return False
    if a.known:
        return np.array_equal(a.value, b.value)
    if not np.array_equal(a.nz, b.nz):
        return False
    da, db = a.deps, b.deps
    if (da is None or da.nnz == 0) and (db is None or db.nnz == 0):
        return True
    if da is None or db is None:
        return False
    return da.nnz == db.nnz and (da != db).nnz == 0


def _widen(a: ab.AbstractArray, n_cols) -> ab.AbstractArray:
    if not a.has_deps:
        return ab.AbstractArray(a.shape, a.dtype, np.ones(a.size, bool))
    return all_to_all([a], [jax.ShapeDtypeStruct(a.shape, a.dtype)], n_cols)[0]


@rule("cond")
def _cond(interp, eqn, ins):
    index, ops = ins[0], ins[1:]
    branches = _compat.cond_branches(eqn.params)
    if index.known:
        i = int(np.clip(np.asarray(index.value), 0, len(branches) - 1))
        return interp.run_closed(branches[i], ops)
    reachable = range(len(branches))
    if iv.finite(index):  # a bounded index (e.g. a clamped or argmax-derived one)
        lo, hi = iv.bounds(index)
        first = int(np.clip(float(np.min(lo)), 0, len(branches) - 1))
        last = int(np.clip(float(np.max(hi)), 0, len(branches) - 1))
        reachable = range(first, last + 1)
    results = None
    for br in (branches[i] for i in reachable):
        outs = interp.run_closed(br, ops)
        results = outs if results is None else [
            _join_abstract(a, b) for a, b in zip(results, outs, strict=True)
        ]
    return results


@rule("while")
def _while(interp, eqn, ins):
    cn, bn, cond, body = _compat.while_parts(eqn.params)
    cconsts, bconsts, carry = ins[:cn], ins[cn : cn + bn], list(ins[cn + bn :])
    budget = UNROLL_BUDGET // max(len(_compat.closed_parts(body)[0].eqns), 1)
    for _ in range(budget):
        (c,) = interp.run_closed(cond, list(cconsts) + carry)
        if not c.known:
            break
        if not bool(np.asarray(c.value)):
            return carry
        carry = interp.run_closed(body, list(bconsts) + carry)
    return _fixed_point(interp, lambda cs: interp.run_closed(body, list(bconsts) + cs), carry)


def _fixed_point(interp, step, carry):
    for it in range(10 * WIDEN_AFTER):
        new = [_join_abstract(a, b) for a, b in zip(carry, step(carry), strict=True)]
        if all(_same(a, b) for a, b in zip(new, carry, strict=True)):
            return new
        carry = new
        if it == WIDEN_AFTER:
            carry = [_widen(a, interp.n_cols) for a in carry]
    return [_widen(a, interp.n_cols) for a in carry]


def _slice_leading(a: ab.AbstractArray, i: int) -> ab.AbstractArray:
    inner = a.size // a.shape[0]
    shape = a.shape[1:]
    if a.known:
        return ab.known(a.value[i])
    deps = a.deps[i * inner : (i + 1) * inner] if a.deps is not None else None
    return ab.AbstractArray(shape, a.dtype, a.nz[i * inner : (i + 1) * inner], deps)


def _stack_leading(items, n_cols) -> ab.AbstractArray:
    first = items[0]
    shape = (len(items),) + first.shape
    if all(x.known for x in items):
        return ab.known(np.stack([x.value for x in items]))
    nz = np.concatenate([x.nz for x in items])
    if any(x.has_deps for x in items):
        deps = sp.vstack([ab.deps_or_empty(x, n_cols) for x in items], format="csr")
    else:
        deps = None
    return ab.from_deps(shape, first.dtype, deps, nz) if first.differentiable else (
        ab.AbstractArray(shape, first.dtype, np.ones(nz.size, bool))
    )


@rule("scan")
def _scan(interp, eqn, ins):
    p = eqn.params
    nc, ncar = _compat.scan_counts(p)
    length = int(p["length"])
    consts, carry, xs = ins[:nc], list(ins[nc : nc + ncar]), ins[nc + ncar :]
    body = _compat.scan_body(p)
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    if length * max(len(_compat.closed_parts(body)[0].eqns), 1) <= UNROLL_BUDGET:
        ys_steps = [None] * length
        for i in order:
            x_i = [_slice_leading(x, i) for x in xs]
            outs = interp.run_closed(body, list(consts) + carry + x_i)
            carry, ys_steps[i] = list(outs[:ncar]), outs[ncar:]
        n_ys = len(eqn.outvars) - ncar
        ys = [
            _stack_leading([ys_steps[i][k] for i in range(length)], interp.n_cols)
            if length else unknown_like(eqn.outvars[ncar + k].aval)
            for k in range(n_ys)
        ]
        return carry + ys
    # Too long to unroll: one abstract slice standing for every iteration, carry fixed point.
    x_any = [_join_all_slices(x) for x in xs]
    step = lambda cs: interp.run_closed(body, list(consts) + cs + x_any)[:ncar]  # noqa: E731
    carry = _fixed_point(interp, step, carry)
    outs = interp.run_closed(body, list(consts) + carry + x_any)
    ys = [_repeat_leading(y, length) for y in outs[ncar:]]
    return carry + ys


def _repeat_leading(y: ab.AbstractArray, length: int) -> ab.AbstractArray:
    shape = (length,) + y.shape
    if y.known:
        return ab.known(np.broadcast_to(y.value, shape))
    idx = np.tile(np.arange(y.size, dtype=np.int64), length)
    deps = y.deps[idx] if y.deps is not None else None
    return ab.AbstractArray(shape, y.dtype, y.nz[idx], deps, None)


def _join_all_slices(x: ab.AbstractArray) -> ab.AbstractArray:
    """One abstract slice standing for every ``x[i]`` (union over the leading axis)."""
    length = x.shape[0]
    inner = x.size // max(length, 1)
    shape = x.shape[1:]
    if x.known:
        v = np.asarray(x.value)
        if length and (v == v[:1]).all():
            return ab.known(v[0])
        return ab.AbstractArray(shape, x.dtype, v.reshape(length, -1).any(axis=0) if length
                                else np.zeros(inner, bool))
    nz = x.nz.reshape(length, inner).any(axis=0)
    deps = None
    if x.deps is not None:
        rel = ab.relation(np.tile(np.arange(inner), length), np.arange(x.size), inner, x.size)
        deps = ab.apply_relation(rel, x.deps)
    return ab.from_deps(shape, x.dtype, deps, nz) if x.differentiable else (
        ab.AbstractArray(shape, x.dtype, np.ones(inner, bool))
    )






@rule("linear_call", "remat_opt", "random_gamma")
def _by_ad(interp, eqn, ins):
    """Primitives whose derivative rule is the thing to follow: its pattern, interpreted."""
    if not any(a.has_deps for a in ins):
        return [unknown_like(v.aval) for v in eqn.outvars]
    if eqn.primitive.name in interp.expanding:
        return None  # nested in its own derivative rule: the fallback chain decides
    return interp.local_pattern_by_ad(eqn, ins)


# JAX 0.12 ``HiPrim`` ops known to be elementwise in their first operand (the others are
# integer exponents): their JVP calls the same op again, so expanding it recursed.
_HIPRIM_ELEMENTWISE_FIRST = frozenset({"Ldexp"})


@rule("call_hi_primitive")
def _call_hi_primitive(interp, eqn, ins):
    """JAX 0.12's hi-level primitives (``jnp.ldexp``): known ones elementwise, the others by
    their JVP rule (conservative when nested in their own rule)."""
    prim = eqn.params.get("_prim")
    if not any(a.has_deps for a in ins):
        return [unknown_like(v.aval) for v in eqn.outvars]
    if type(prim).__name__ in _HIPRIM_ELEMENTWISE_FIRST and len(eqn.outvars) == 1:
        x = ins[0]
        aval = eqn.outvars[0].aval
        if tuple(aval.shape) == x.shape:
            return [ab.from_deps(x.shape, np.dtype(aval.dtype), x.deps, np.ones(x.size, bool))]
    if eqn.primitive.name in interp.expanding:
        return None
    return interp.local_pattern_by_ad(eqn, ins)
