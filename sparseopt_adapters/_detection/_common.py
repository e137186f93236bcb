"""Helpers shared by the interpreter and the rules (no import of either)."""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp

from . import _abstract as ab

# Unrolling budget: loops whose trip count is known are interpreted iteration by iteration
# (exact patterns) while iterations × equations stays under this; beyond it a fixed point.
UNROLL_BUDGET = 200_000
# Fixed-point iterations before widening a loop carry to "every element depends on all".
WIDEN_AFTER = 64


def is_inexact(aval) -> bool:
    try:
        return np.issubdtype(np.dtype(aval.dtype), np.inexact)
    except TypeError:
        return False


def np_dtype(aval):
    try:
        return np.dtype(aval.dtype)
    except TypeError:  # extended dtypes (PRNG keys), float0
        return np.dtype(np.uint32)


def unknown_like(aval) -> ab.AbstractArray:
    return ab.unknown(getattr(aval, "shape", ()), np_dtype(aval))


def shape_struct(aval):
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype)


def to_known(value) -> ab.AbstractArray:
    try:
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError
    except Exception:  # extended dtypes: keep the jax value for folding only
        a = ab.unknown(np.shape(value), np.uint32)
        a.value = value
        return a
    return ab.known(arr)


def bind_eqn(eqn, *args):
    params = eqn.primitive.get_bind_params(eqn.params)
    out = eqn.primitive.bind(*args, **params)
    return out if eqn.primitive.multiple_results else [out]


def all_to_all(ins, out_avals, n_cols):
    """Every output element depends on every input element (a sound last resort)."""
    rows = [a.deps.sum(axis=0).reshape(1, -1) for a in ins if a.has_deps]
    outs = []
    row = ab.as_bool_csr(sp.csr_array(sum(rows))) if rows else None
    for aval in out_avals:
        size = int(np.prod(aval.shape, dtype=np.int64))
        if row is None or not is_inexact(aval):
            outs.append(unknown_like(aval))
            continue
        deps = ab.selection(np.zeros(size, np.int64), 1) @ row
        outs.append(ab.from_deps(aval.shape, np_dtype(aval), deps, np.ones(size, bool)))
    return outs


def identity_cols(size: int, offset: int, n_cols: int) -> sp.csr_array:
    idx = np.arange(size, dtype=np.int64)
    return sp.csr_array(
        (np.ones(size, bool), idx + offset, np.arange(size + 1, dtype=np.int64)),
        shape=(size, n_cols),
    )


def identity_block(a: ab.AbstractArray, offset: int, n_cols: int) -> ab.AbstractArray:
    return ab.AbstractArray(
        a.shape, a.dtype, np.ones(a.size, bool), identity_cols(a.size, offset, n_cols)
    )


def out_shape_dtype(eqn, k=0):
    aval = eqn.outvars[k].aval
    return aval.shape, np_dtype(aval)


def make(eqn, deps, nz, k=0):
    """Output ``k`` of ``eqn`` from dependencies (non-float outputs carry none)."""
    shape, dtype = out_shape_dtype(eqn, k)
    if not np.issubdtype(dtype, np.inexact):
        return unknown_like(eqn.outvars[k].aval)
    return ab.from_deps(shape, dtype, deps, nz)


def group_deps(out_groups, in_groups, n_groups, deps):
    """Output element k depends on every input element of group ``out_groups[k]``."""
    if deps is None:
        return None
    g_in = ab.relation(in_groups, np.arange(in_groups.size), n_groups, in_groups.size)
    per_group = ab.apply_relation(g_in, deps)
    if per_group is None:
        return None
    return ab.apply_relation(ab.selection(out_groups, n_groups), per_group)
