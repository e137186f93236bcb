"""Helpers the rule modules share: element-id movement and broadcasting."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _abstract as ab
from .. import _intervals as iv
from .._common import bind_eqn, make, out_shape_dtype, unknown_like
from .._fold import JAX_FALLBACK, NUMPY_IMPL, _default_fill


def bcast(interp, a, shape):
    return ab.broadcast_scalar(a, shape, interp.n_cols)

# -- data movement by running the primitive on element ids -----------------------------------
def stack_deps(inputs, n_cols):
    deps = [ab.deps_or_empty(a, n_cols) for a in inputs]
    all_deps = sp.vstack(deps, format="csr") if len(deps) > 1 else deps[0]
    nz = np.concatenate([a.nz for a in inputs]) if inputs else np.zeros(0, bool)
    return all_deps, nz


def gathered(eqn, data, src, k=0):
    """Output k takes element ``src[j]`` of the concatenated ``data`` inputs (-1: zero)."""
    shape, dtype = out_shape_dtype(eqn, k)
    if not np.issubdtype(dtype, np.inexact):
        return _moved_bounds(shape, dtype, data, src)
    n_cols = next((a.deps.shape[1] for a in data if a.deps is not None), None)
    valid = src >= 0
    nz_all = np.concatenate([a.nz for a in data])
    nz = np.zeros(src.size, bool)
    nz[valid] = nz_all[src[valid]]
    if n_cols is None:
        return make(eqn, None, nz, k)
    all_deps, _ = stack_deps(data, n_cols)
    deps = ab.apply_relation(ab.selection(src, all_deps.shape[0]), all_deps)
    return make(eqn, deps, nz, k)


def _moved_bounds(shape, dtype, data, src):
    """Integer outputs of a movement: the bounds (or values) of the elements they copy."""
    if not any(a.lo is not None or a.known for a in data) or not data:
        return ab.unknown(shape, dtype)
    if all(a.known for a in data):
        vals = np.concatenate([np.asarray(a.value, np.float64).reshape(-1) for a in data])
        lo = hi = np.where(src >= 0, vals[np.maximum(src, 0)], np.nan)
    else:
        los, his = zip(*[iv.bounds(a) for a in data], strict=True)
        lo_all = np.concatenate([np.reshape(x, -1) for x in los])
        hi_all = np.concatenate([np.reshape(x, -1) for x in his])
        lo, hi = lo_all[np.maximum(src, 0)], hi_all[np.maximum(src, 0)]
    lo = np.where(src >= 0, lo, -np.inf).reshape(shape)
    hi = np.where(src >= 0, hi, np.inf).reshape(shape)
    lo, hi = np.nan_to_num(lo, nan=-np.inf), np.nan_to_num(hi, nan=np.inf)
    return iv.bounded(shape, dtype, lo, hi)


def id_arrays(data):
    ids, offset = [], 1
    for a in data:
        ids.append((np.arange(a.size, dtype=np.float64) + offset).reshape(a.shape))
        offset += a.size
    return ids


def to_src(out) -> np.ndarray:
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    out = np.where(np.isnan(out), 0.0, out)
    return np.rint(out).astype(np.int64) - 1


# numpy implementations of index-only primitives: applying them to element ids (or folding
def movement(data_pos):
    """Rule for a primitive whose outputs copy elements of its ``data_pos`` operands."""

    def rule_fn(interp, eqn, ins):
        pos = data_pos(ins) if callable(data_pos) else data_pos
        data = [ins[i] for i in pos]
        others = [i for i in range(len(ins)) if i not in pos]
        if any(not ins[i].known for i in others):
            return None if any(a.has_deps for a in data) else _unknown_outs(eqn, data)
        ids = id_arrays(data)
        args = list(a.value for a in ins)
        for i, x in zip(pos, ids, strict=True):
            args[i] = x
        fill = _fill_constant(eqn, data)
        if fill is not None:
            # The fill is one more (constant) element: its id marks the outputs it fills, so
            # they copy its value instead of whichever element the raw fill number names.
            eqn = eqn.replace(params={**eqn.params, "fill_value": 1 + sum(a.size for a in data)})
            data = [*data, fill]
        name = eqn.primitive.name
        try:
            if name in NUMPY_IMPL:
                try:
                    outs = [NUMPY_IMPL[name](*args, **eqn.params)]
                except Exception:
                    if name not in JAX_FALLBACK:
                        raise
                    outs = bind_eqn(eqn, *args)
            else:
                outs = bind_eqn(eqn, *args)
        except Exception:
            return None
        return [gathered(eqn, data, to_src(o), k) for k, o in enumerate(outs)]

    return rule_fn


def _fill_constant(eqn, data):
    """A FILL_OR_DROP gather's fill value as a known one-element array (``None``: no fill).

    Run on element ids, the fill would otherwise read as an id: a fill of 2.0 copied element
    1's dependencies and zero-ness, so a nonzero fill over a structural zero was called zero.
    """
    if eqn.primitive.name != "gather" or len(data) != 1:
        return None
    mode = eqn.params.get("mode")
    if getattr(mode, "name", None) != "FILL_OR_DROP":
        return None
    value = eqn.params.get("fill_value")
    dtype = data[0].dtype
    value = _default_fill(dtype) if value is None else value
    return ab.known(np.asarray([value]).astype(dtype))


def _unknown_outs(eqn, data):
    return [unknown_like(v.aval) for v in eqn.outvars]


