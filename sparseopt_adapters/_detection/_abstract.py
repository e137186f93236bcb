"""The abstract value that sparsity detection propagates through a jaxpr.

Every intermediate array is represented by

- ``deps``: a boolean ``scipy.sparse`` CSR matrix, one row per array element (row-major), one
  column per input variable; row ``k`` holds the inputs element ``k`` may depend on
  (``None``: depends on no input);
- ``nz``: a flat boolean mask, ``False`` where the element is *known to be zero* for every
  input value (a zero of a constant, an entry a scatter never wrote, an unstored sparse entry);
- ``value``: the concrete numpy value when it is the same for every input (constants, index
  arithmetic, iotas), else ``None``;
- ``lo``, ``hi``: for integer (and boolean) arrays whose value is not known, elementwise bounds
  (float64 arrays of ``shape``, ``±inf`` where unbounded) valid for every input, or ``None``:
  an ``argmax`` lies in ``[0, n - 1]``, ``argmax // 2`` in ``[0, (n - 1) // 2]``, a clamped
  index in its clamp range (see ``_intervals.py``).

Invariants: ``value is not None`` implies ``deps is None`` and ``nz == (value != 0)``; a row of
``deps`` with entries implies ``nz`` at that element.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class AbstractArray:
    __slots__ = ("shape", "dtype", "nz", "deps", "value", "lo", "hi")

    def __init__(self, shape, dtype, nz, deps=None, value=None, lo=None, hi=None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nz = nz
        self.deps = deps
        self.value = value
        self.lo = lo
        self.hi = hi

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def differentiable(self) -> bool:
        return np.issubdtype(self.dtype, np.inexact)

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def has_deps(self) -> bool:
        return self.deps is not None and self.deps.nnz > 0

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        kind = "known" if self.known else ("deps" if self.has_deps else "free")
        return f"AbstractArray({self.shape}, {self.dtype}, {kind}, nz={int(self.nz.sum())})"


def known(value) -> AbstractArray:
    value = np.asarray(value)
    if value.dtype.kind == "V":  # float0: the tangent type of integer values, always zero
        return AbstractArray(value.shape, value.dtype, np.zeros(value.size, bool), None, value)
    return AbstractArray(value.shape, value.dtype, (value != 0).reshape(-1), None, value)


def unknown(shape, dtype) -> AbstractArray:
    """A value that may be anything (nonzero) but depends on no input."""
    size = int(np.prod(shape, dtype=np.int64))
    return AbstractArray(shape, dtype, np.ones(size, dtype=bool), None, None)


def from_deps(shape, dtype, deps, nz) -> AbstractArray:
    """An abstract array from dependencies; ``nz`` is widened to cover every dependent row."""
    if not np.issubdtype(np.dtype(dtype), np.inexact):
        return unknown(shape, dtype) if nz is None else AbstractArray(shape, dtype, nz)
    if deps is not None:
        deps = as_bool_csr(deps)
        if deps.nnz == 0:
            deps = None
    if deps is not None:
        has = np.diff(deps.indptr) > 0
        nz = has if nz is None else (nz | has)
    elif nz is None:
        nz = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=bool)
    return AbstractArray(shape, dtype, nz, deps, None)


def as_bool_csr(m) -> sp.csr_array:
    m = sp.csr_array(m)
    if m.dtype != np.bool_:
        m = m.astype(bool)
    return m


def empty_deps(n_rows: int, n_cols: int) -> sp.csr_array:
    return sp.csr_array(
        (np.zeros(0, bool), np.zeros(0, np.int32), np.zeros(n_rows + 1, np.int64)),
        shape=(n_rows, n_cols),
    )


def deps_or_empty(a: AbstractArray, n_cols: int) -> sp.csr_array:
    return a.deps if a.deps is not None else empty_deps(a.size, n_cols)


def selection(src: np.ndarray, n_src: int) -> sp.csr_array:
    """CSR matrix S with S[k, src[k]] = True (no entry where ``src[k] < 0``)."""
    src = np.asarray(src, dtype=np.int64).reshape(-1)
    valid = src >= 0
    counts = valid.astype(np.int64)
    indptr = np.zeros(src.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_array(
        (np.ones(int(valid.sum()), bool), src[valid], indptr), shape=(src.size, n_src)
    )


def relation(out_idx, in_idx, n_out: int, n_in: int) -> sp.csr_array:
    """CSR matrix R with R[out_idx[k], in_idx[k]] = True (duplicates merged)."""
    out_idx = np.asarray(out_idx, dtype=np.int64).reshape(-1)
    in_idx = np.asarray(in_idx, dtype=np.int64).reshape(-1)
    m = sp.coo_array(
        (np.ones(out_idx.size, bool), (out_idx, in_idx)), shape=(n_out, n_in)
    ).tocsr()
    m.sum_duplicates()
    return m


def apply_relation(rel: sp.csr_array, deps: sp.csr_array | None) -> sp.csr_array | None:
    """Dependencies of outputs that combine the inputs related to them by ``rel``."""
    if deps is None or deps.nnz == 0:
        return None
    out = rel @ deps
    return out if out.nnz else None


def mask_rows(deps: sp.csr_array | None, keep: np.ndarray) -> sp.csr_array | None:
    """Drop the dependencies of rows where ``keep`` is False."""
    if deps is None:
        return None
    keep = np.asarray(keep, dtype=bool).reshape(-1)
    if keep.all():
        return deps
    counts = np.diff(deps.indptr)
    keep_entry = np.repeat(keep, counts)
    new_counts = np.where(keep, counts, 0)
    indptr = np.zeros(deps.shape[0] + 1, dtype=np.int64)
    np.cumsum(new_counts, out=indptr[1:])
    out = sp.csr_array(
        (deps.data[keep_entry], deps.indices[keep_entry], indptr), shape=deps.shape
    )
    return out if out.nnz else None


def union(*deps_list) -> sp.csr_array | None:
    present = [d for d in deps_list if d is not None and d.nnz]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    out = present[0]
    for d in present[1:]:
        out = out + d
    return as_bool_csr(out)


def broadcast_scalar(a: AbstractArray, shape, n_cols: int) -> AbstractArray:
    """Numpy-style broadcast of ``a`` to ``shape`` (jaxpr elementwise ops broadcast size-1
    dimensions and scalar literals)."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    if a.value is not None:
        return known(np.broadcast_to(a.value, shape))
    src_shape = (1,) * (len(shape) - len(a.shape)) + a.shape
    idx = np.broadcast_to(np.arange(a.size, dtype=np.int64).reshape(src_shape), shape)
    idx = idx.reshape(-1)
    deps = a.deps[idx] if a.deps is not None else None
    out = AbstractArray(shape, a.dtype, a.nz[idx], deps, None)
    if a.lo is not None:
        out.lo = np.broadcast_to(np.asarray(a.lo).reshape(src_shape), shape)
        out.hi = np.broadcast_to(np.asarray(a.hi).reshape(src_shape), shape)
    return out


def join(a: AbstractArray, b: AbstractArray) -> AbstractArray:
    """An abstract array covering both ``a`` and ``b`` (union of dependencies, hull of bounds)."""
    if a.known and b.known and a.value.shape == b.value.shape and np.array_equal(a.value, b.value):
        return a
    deps = union(a.deps, b.deps)
    out = AbstractArray(a.shape, a.dtype, a.nz | b.nz, deps, None)
    if not np.issubdtype(a.dtype, np.inexact):
        from ._intervals import bounds

        (alo, ahi), (blo, bhi) = bounds(a), bounds(b)
        lo, hi = np.minimum(alo, blo), np.maximum(ahi, bhi)
        if np.isfinite(lo).any() or np.isfinite(hi).any():
            out.lo, out.hi = lo, hi
    return out
