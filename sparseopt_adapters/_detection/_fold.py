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


_MODES = ("CLIP", "FILL_OR_DROP", "PROMISE_IN_BOUNDS")


def _fill_or_drop(mode) -> bool:
    name = getattr(mode, "name", None)
    if name not in _MODES:  # e.g. ONE_HOT: not modelled here; the caller runs JAX instead
        raise NotImplementedError(f"gather/scatter mode {mode!r}")
    return name == "FILL_OR_DROP"


def _default_fill(dtype):
    """``lax.gather``'s fill value when none is given (FILL_OR_DROP)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.inexact):
        return np.nan
    if np.issubdtype(dtype, np.signedinteger):
        return np.iinfo(dtype).min
    if np.issubdtype(dtype, np.unsignedinteger):
        return np.iinfo(dtype).max
    return True


def gather_source(operand_shape, indices, dimension_numbers, slice_sizes, mode):
    """XLA gather semantics in numpy: for each output element, the flat (row-major) index
    of the operand element it reads, and whether its slice is in bounds.

    Start indices are clamped to ``[0, dim - slice_size]`` (CLIP and PROMISE_IN_BOUNDS, as
    XLA does); FILL_OR_DROP marks the out-of-bounds slices instead (``in_bounds`` False),
    as ``lax.gather`` lowers it. Returns ``(src, in_bounds)`` of the output's shape.
    """
    dn = dimension_numbers
    idx = np.asarray(indices).astype(np.int64)
    rank = len(operand_shape)
    batch_shape = idx.shape[:-1]
    out_rank = len(batch_shape) + len(dn.offset_dims)
    batch_pos = [p for p in range(out_rank) if p not in dn.offset_dims]
    window = [d for d in range(rank)
              if d not in dn.collapsed_slice_dims and d not in dn.operand_batching_dims]
    out_shape = [0] * out_rank
    for p, size in zip(batch_pos, batch_shape, strict=True):
        out_shape[p] = size
    for p, d in zip(dn.offset_dims, window, strict=True):
        out_shape[p] = slice_sizes[d]

    def batch_view(a):  # a batch-shaped array, broadcastable against the output
        shape = [1] * out_rank
        for p, size in zip(batch_pos, batch_shape, strict=True):
            shape[p] = size
        return np.broadcast_to(a, batch_shape).reshape(shape)

    fill = _fill_or_drop(mode)
    in_bounds = np.ones(batch_shape, bool)
    starts = [np.zeros((), np.int64)] * rank
    for k, d in enumerate(dn.start_index_map):
        s = idx[..., k]
        hi = operand_shape[d] - slice_sizes[d]
        if fill:
            in_bounds &= (s >= 0) & (s <= hi)
        starts[d] = np.clip(s, 0, max(hi, 0))
    for od, bd in zip(dn.operand_batching_dims, dn.start_indices_batching_dims, strict=True):
        shape = [1] * len(batch_shape)
        shape[bd] = batch_shape[bd]
        starts[od] = np.arange(batch_shape[bd], dtype=np.int64).reshape(shape)
    strides = np.ones(rank, np.int64)
    for d in range(rank - 2, -1, -1):
        strides[d] = strides[d + 1] * operand_shape[d + 1]
    src = np.zeros([1] * out_rank, np.int64)
    for d in range(rank):
        term = batch_view(starts[d])
        if d in window:
            p = dn.offset_dims[window.index(d)]
            shape = [1] * out_rank
            shape[p] = slice_sizes[d]
            term = term + np.arange(slice_sizes[d], dtype=np.int64).reshape(shape)
        src = src + term * strides[d]
    src = np.broadcast_to(src, out_shape)
    return src, np.broadcast_to(batch_view(in_bounds), out_shape)


def _np_gather(operand, indices, *, dimension_numbers, slice_sizes, mode, fill_value=None,
               **_):
    operand = np.asarray(operand)
    if operand.size == 0:
        raise ValueError("empty operand")
    src, ok = gather_source(operand.shape, indices, dimension_numbers, slice_sizes, mode)
    out = operand.reshape(-1)[src]
    if _fill_or_drop(mode) and not ok.all():
        fv = _default_fill(operand.dtype) if fill_value is None else fill_value
        out = np.where(ok, out, np.asarray(fv).astype(operand.dtype))
    return out


def scatter_destination(operand_shape, indices, updates_shape, dimension_numbers, mode):
    """For each update element of a scatter, the flat operand index it lands on, ``-1``
    where it is dropped: ``lax.scatter_add``'s transpose (a gather of the same indices with
    the inverse dimension numbers, fill 0), in numpy."""
    from jax.lax import GatherDimensionNumbers

    dn = dimension_numbers
    gdn = GatherDimensionNumbers(
        offset_dims=tuple(dn.update_window_dims),
        collapsed_slice_dims=tuple(dn.inserted_window_dims),
        start_index_map=tuple(dn.scatter_dims_to_operand_dims),
        operand_batching_dims=tuple(dn.operand_batching_dims),
        start_indices_batching_dims=tuple(dn.scatter_indices_batching_dims),
    )
    slice_sizes, pos = [], 0
    for d in range(len(operand_shape)):
        if d in dn.inserted_window_dims or d in dn.operand_batching_dims:
            slice_sizes.append(1)
        else:
            slice_sizes.append(updates_shape[dn.update_window_dims[pos]])
            pos += 1
    src, ok = gather_source(operand_shape, indices, gdn, slice_sizes, mode)
    if tuple(src.shape) != tuple(updates_shape):
        raise ValueError("scatter shapes do not match")
    return np.where(ok, src, -1).reshape(-1)


# Entries of NUMPY_IMPL that fall back to JAX itself when their numpy version refuses
# (an unmodelled mode or shape): they were JAX-only before and must give the same result.
JAX_FALLBACK = frozenset({"gather"})

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
    "gather": _np_gather,
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

