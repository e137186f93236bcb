"""Gathers, dynamic slices and scatters: exact with known indices, the union of the reachable
windows when the indices are data-dependent but bounded (integer intervals)."""

from __future__ import annotations

import jax
import numpy as np
from jax import lax

from .. import _abstract as ab
from .. import _compat
from .. import _intervals as iv
from .._common import all_to_all, make
from .._fold import scatter_destination
from .._registry import rule
from ._shared import movement, to_src

FIRST = [0]


# Most index assignments a bounded, data-dependent index is enumerated over (union of cases).
CASE_BUDGET = 256


def _components(a: ab.AbstractArray, scalar: bool):
    """Index components of an index operand: ``(lo, hi)`` arrays over its batch, one per
    index-vector entry (the last axis of gather/scatter indices; a dynamic_slice start is one
    scalar component)."""
    lo, hi = iv.bounds(a)
    if scalar or lo.ndim == 0:
        return [(np.asarray(lo).reshape(1), np.asarray(hi).reshape(1))], lo.shape
    return [(lo[..., c], hi[..., c]) for c in range(lo.shape[-1])], lo.shape


def _index_cases(ins, index_pos, scalar):
    """Concrete index operands covering every value the bounded ones can take, or ``None``."""
    comps, shapes = [], []
    for i in index_pos:
        if ins[i].known:
            comps.append(None)
            shapes.append(None)
            continue
        if not iv.finite(ins[i]):
            return None
        c, shape = _components(ins[i], scalar)
        comps.append(c)
        shapes.append(shape)
    widths = []
    for c in comps:
        if c is not None:
            widths += [int((hi - lo).max()) + 1 if lo.size else 1 for lo, hi in c]
    offsets = iv.cases([(0, w - 1) for w in widths], CASE_BUDGET)
    if offsets is None:
        return None
    out = []
    for off in offsets:
        k, case = 0, {}
        for i, c, shape in zip(index_pos, comps, shapes, strict=True):
            if c is None:
                continue
            parts = []
            for lo, hi in c:
                parts.append(np.minimum(lo + off[k], hi))
                k += 1
            arr = parts[0].reshape(shape) if scalar or len(shape) == 0 else np.stack(parts, -1)
            case[i] = ab.known(arr.astype(ins[i].dtype))
        out.append(case)
    return out


def _union_over_cases(interp, eqn, ins, index_pos, known_rule, scalar):
    """Union of ``known_rule`` over every reachable index assignment (``None``: too many)."""
    cases = _index_cases(ins, index_pos, scalar)
    if cases is None:
        return None
    result = None
    for case in cases:
        args = [case.get(i, a) for i, a in enumerate(ins)]
        outs = known_rule(interp, eqn, args)
        if outs is None:
            return None
        result = outs if result is None else [
            ab.join(x, y) for x, y in zip(result, outs, strict=True)
        ]
    return result


_take = movement(FIRST)
_update = movement([0, 1])


@rule("gather")
def _gather(interp, eqn, ins):
    out = _take(interp, eqn, ins)
    if out is not None:
        return out
    out = _union_over_cases(interp, eqn, ins, [1], _take, scalar=False)
    if out is not None:
        return out
    # Unbounded indices: each output may be any element of the operand.
    return all_to_all(ins[:1], [eqn.outvars[0].aval], interp.n_cols)


@rule("dynamic_slice")
def _dynamic_slice(interp, eqn, ins):
    out = _take(interp, eqn, ins)
    if out is not None:
        return out
    out = _union_over_cases(interp, eqn, ins, list(range(1, len(ins))), _take, scalar=True)
    if out is not None:
        return out
    return all_to_all(ins[:1], [eqn.outvars[0].aval], interp.n_cols)


@rule("dynamic_update_slice")
def _dynamic_update_slice(interp, eqn, ins):
    out = _update(interp, eqn, ins)
    if out is not None:
        return out
    out = _union_over_cases(interp, eqn, ins, list(range(2, len(ins))), _update, scalar=True)
    if out is not None:
        return out
    operand, update = ins[0], ins[1]
    everywhere = all_to_all([update], [eqn.outvars[0].aval], interp.n_cols)[0]
    deps = ab.union(operand.deps, everywhere.deps)
    return [make(eqn, deps, np.ones(operand.size, bool))]


# -- scatter: where does each update element land? ------------------------------------------
def _scatter_destinations(eqn, operand, indices, updates):
    """For each update element, the flat operand index it lands on (-1: dropped).

    In numpy (``_fold.scatter_destination``: no XLA compilation); JAX's own transpose of
    ``scatter_add`` when the numpy version refuses (a mode it does not model)."""
    p = _compat.scatter_params(eqn.params)
    try:
        return scatter_destination(operand.shape, indices, updates.shape,
                                   p["dimension_numbers"], p["mode"])
    except Exception:
        pass
    ids = np.arange(1, operand.size + 1, dtype=np.float64).reshape(operand.shape)

    def scat(u):
        return lax.scatter_add(
            jax.numpy.zeros(operand.shape, np.float64), indices, u, p["dimension_numbers"],
            indices_are_sorted=p["indices_are_sorted"], unique_indices=p["unique_indices"],
            mode=p["mode"],
        )

    u_struct = jax.ShapeDtypeStruct(updates.shape, np.float64)
    (dest,) = jax.linear_transpose(scat, u_struct)(ids)
    return to_src(dest)


@rule("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min",
      "scatter_min", "scatter-max", "scatter_max", "scatter_sub", "scatter-sub")
def _scatter(interp, eqn, ins):
    operand, indices, updates = ins[0], ins[1], ins[2]
    name = eqn.primitive.name
    if not indices.known:
        out = _union_over_cases(interp, eqn, ins, [1], _scatter, scalar=False)
        if out is not None:
            return out
        return all_to_all([operand, updates], [eqn.outvars[0].aval], interp.n_cols)
    dest = _scatter_destinations(eqn, operand, indices.value, updates)
    valid = dest >= 0
    upd_idx = np.nonzero(valid)[0]
    rel = ab.relation(dest[valid], upd_idx, operand.size, updates.size)
    written = np.zeros(operand.size, bool)
    written[dest[valid]] = True
    nz_land = np.zeros(operand.size, bool)
    nz_land[dest[valid][updates.nz[upd_idx]]] = True
    upd_deps = ab.apply_relation(rel, updates.deps)
    if name == "scatter":  # overwrite: written entries forget the operand
        deps = ab.union(ab.mask_rows(operand.deps, ~written), upd_deps)
        nz = np.where(written, nz_land, operand.nz)
    elif name in ("scatter-mul", "scatter_mul"):
        deps = ab.union(operand.deps, ab.mask_rows(upd_deps, operand.nz))
        nz = operand.nz.copy()
    else:
        deps = ab.union(operand.deps, upd_deps)
        nz = operand.nz | nz_land
    return [make(eqn, deps, nz)]


