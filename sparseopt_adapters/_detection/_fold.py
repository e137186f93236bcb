"""Numpy evaluation of index-only primitives (constant folding and element-id movement).

Applying these to element ids, or folding them on constants, needs no XLA compilation;
anything not listed runs through JAX itself.
"""

from __future__ import annotations

import numpy as np

from . import _abstract as ab


def _np_pad(x, pv, config):
    for axis, (lo, hi, interior) in enumerate(config):
        n = x.shape[axis]
        new_n = n + max(n - 1, 0) * interior
        shape = list(x.shape)
        shape[axis] = new_n
        y = np.full(shape, pv, dtype=x.dtype)
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(None, None, interior + 1)
        y[tuple(sl)] = x
        for amount, front in ((lo, True), (hi, False)):
            if amount > 0:
                shape = list(y.shape)
                shape[axis] = amount
                fill = np.full(shape, pv, dtype=x.dtype)
                y = np.concatenate([fill, y] if front else [y, fill], axis=axis)
            elif amount < 0:
                keep = np.arange(-amount, y.shape[axis]) if front else np.arange(
                    y.shape[axis] + amount)
                y = np.take(y, keep, axis=axis)
        x = y
    return x


def _np_dynamic_slice(x, *starts, slice_sizes):
    idx = tuple(
        slice(int(np.clip(s, 0, d - z)), int(np.clip(s, 0, d - z)) + z)
        for s, d, z in zip(starts, x.shape, slice_sizes, strict=True)
    )
    return x[idx]


def _np_dynamic_update_slice(x, u, *starts):
    out = np.array(x, copy=True)
    idx = tuple(
        slice(int(np.clip(s, 0, d - z)), int(np.clip(s, 0, d - z)) + z)
        for s, d, z in zip(starts, x.shape, u.shape, strict=True)
    )
    out[idx] = u
    return out


def _np_broadcast_in_dim(x, shape, broadcast_dimensions, **_):
    expanded = np.reshape(x, [x.shape[broadcast_dimensions.index(d)] if d in
                              broadcast_dimensions else 1 for d in range(len(shape))])
    return np.broadcast_to(expanded, shape)


NUMPY_IMPL = {
    # lax.reshape permutes by ``dimensions`` (when given) before a row-major reshape.
    "reshape": lambda x, new_sizes, dimensions=None, **_: np.reshape(
        np.transpose(x, dimensions) if dimensions is not None else x, new_sizes),
    "squeeze": lambda x, dimensions, **_: np.squeeze(x, axis=tuple(dimensions)),
    "expand_dims": lambda x, dimensions, **_: np.expand_dims(x, tuple(dimensions)),
    "broadcast_in_dim": _np_broadcast_in_dim,
    "transpose": lambda x, permutation, **_: np.transpose(x, permutation),
    "rev": lambda x, dimensions, **_: np.flip(x, axis=tuple(dimensions)) if dimensions else x,
    "slice": lambda x, start_indices, limit_indices, strides=None, **_: x[tuple(
        slice(a, b, s) for a, b, s in zip(
            start_indices, limit_indices, strides or (1,) * len(start_indices), strict=True))],
    "concatenate": lambda *xs, dimension, **_: np.concatenate(xs, axis=dimension),
    "pad": lambda x, pv, padding_config, **_: _np_pad(x, pv, padding_config),
    "select_n": lambda p, *cs, **_: np.choose(np.asarray(p).astype(np.int64), cs),
    "dynamic_slice": lambda x, *st, slice_sizes, **_: _np_dynamic_slice(
        x, *st, slice_sizes=slice_sizes),
    "dynamic_update_slice": lambda x, u, *st, **_: _np_dynamic_update_slice(x, u, *st),
    "copy": lambda x, **_: x,
    "copy_p": lambda x, **_: x,
    "iota": lambda *_, dtype, shape, dimension, **__: np.broadcast_to(
        np.arange(shape[dimension], dtype=dtype).reshape(
            [-1 if d == dimension else 1 for d in range(len(shape))]), shape),
}
# Elementwise folds in numpy (exact for these; integer division and friends stay in JAX).
NUMPY_FOLD = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal, "and": np.logical_and, "or": np.logical_or,
    "max": np.maximum, "min": np.minimum, "abs": np.abs,
}


def numpy_fold(eqn, values):
    """Fold an equation on constants with numpy when that is exact; else ``None``."""
    name = eqn.primitive.name
    out_aval = eqn.outvars[0].aval if len(eqn.outvars) == 1 else None
    if out_aval is None:
        return None
    try:
        dtype = np.dtype(out_aval.dtype)
    except TypeError:
        return None
    if name in NUMPY_IMPL:
        out = NUMPY_IMPL[name](*[np.asarray(v) for v in values], **eqn.params)
    elif name in NUMPY_FOLD:
        if name in ("and", "or") and dtype != np.bool_:
            return None
        out = NUMPY_FOLD[name](*[np.asarray(v) for v in values])
    elif name == "convert_element_type" and np.issubdtype(dtype, np.floating):
        out = np.asarray(values[0])
    else:
        return None
    out = np.asarray(out).astype(dtype, copy=False)
    if out.shape != tuple(out_aval.shape):
        return None
    return [ab.known(out)]

