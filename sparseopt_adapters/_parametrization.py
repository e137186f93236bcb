"""Pattern-restricted parametrization: the nonzero values of a sparse matrix as parameters.

A [`PatternMatrix`][sparseopt_adapters.PatternMatrix] is a sparse matrix whose only pytree leaf
is its vector of nonzero ``values``; its pattern (rows, cols, shape) is static, hashable
structure. Every product is a gather followed by ``jax.ops.segment_sum`` with numpy index
arrays baked into the trace as constants, so

- ``jax.grad`` with respect to the values never builds a dense ``p × q`` array
  (∂E/∂g, not ∂E/∂G), and
- sparsity detection through it sees concrete gathers and segment sums: the detected pattern is
  the structural one.

[`ravel_parameters`][sparseopt_adapters.ravel_parameters] maps a pytree that mixes dense
arrays, ``PatternMatrix`` parameters and [`Fixed`][sparseopt_adapters.Fixed] (not optimised)
leaves to one float64 vector and back: the one mapping every solver adapter uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from ._pattern import SparsityPattern

__all__ = ["PatternMatrix", "Fixed", "ravel_parameters", "unwrap_fixed"]


# ---------------------------------------------------------------------------------------
# host-side index helpers (numpy only, cached on hashable patterns)
# ---------------------------------------------------------------------------------------


def _concrete_indices(x, name: str) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise TypeError(
            f"PatternMatrix {name} must be concrete (numpy or a JAX array created outside "
            f"jit), got a traced value {x}. The pattern is static structure: build the index "
            "arrays with numpy outside the transformed function and close over them."
        )
    a = np.asarray(x)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"PatternMatrix {name} must be integers, got dtype {a.dtype}.")
    return a.astype(np.int64)


def _check_pattern_indices(rows: np.ndarray, cols: np.ndarray, shape) -> tuple[int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(
            f"PatternMatrix shape must be a pair (m, n) of ints, got {shape!r}."
        ) from None
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"PatternMatrix shape must be a pair (m, n) of ints >= 0, got {shape!r}.")
    if rows.shape != cols.shape:
        raise ValueError(
            f"PatternMatrix rows and cols must have the same length, got {rows.size} rows "
            f"and {cols.size} cols."
        )
    m, n = shape
    for name, idx, bound in (("row", rows, m), ("column", cols, n)):
        bad = np.flatnonzero((idx < 0) | (idx >= bound))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"PatternMatrix {name} index out of range for shape {shape}: entry {k} is "
                f"(i, j) = ({rows[k]}, {cols[k]}), but {name} indices must lie in "
                f"[0, {bound - 1}] ({bad.size} bad entr{'y' if bad.size == 1 else 'ies'} "
                "in all). Check the shape, or whether the indices are 1-based."
            )
    key = rows * max(n, 1) + cols
    order = np.argsort(key, kind="stable")
    skey = key[order]
    dup = np.flatnonzero(skey[1:] == skey[:-1])
    if dup.size:
        k0, k1 = int(order[dup[0]]), int(order[dup[0] + 1])
        raise ValueError(
            f"PatternMatrix pattern has duplicate entries: (i, j) = ({rows[k0]}, {cols[k0]}) "
            f"appears at positions {k0} and {k1} ({dup.size} duplicate(s) in all). A repeated "
            "(i, j) makes the Jacobian with respect to the values rank-deficient, which breaks "
            "Gauss-Newton and direct solves. Merge them first, e.g. "
            "`A = scipy.sparse.coo_array((v, (i, j)), shape); A.sum_duplicates()` then "
            "`PatternMatrix.from_scipy(A)`."
        )
    return shape


def _small(a: np.ndarray) -> np.ndarray:
    """Index arrays as int32 when they fit: half the constant data in every trace."""
    a = np.asarray(a)
    if a.size == 0 or (a.min() >= 0 and a.max() < np.iinfo(np.int32).max):
        a = a.astype(np.int32)
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=256)
def _row_major(pattern: SparsityPattern) -> tuple[np.ndarray, np.ndarray]:
    return _small(pattern.rows), _small(pattern.cols)


@functools.lru_cache(maxsize=256)
def _col_major(pattern: SparsityPattern) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permutation of pattern entries into column-major order, and the permuted rows/cols."""
    perm = np.lexsort((pattern.rows, pattern.cols))
    return _small(perm), _small(pattern.rows[perm]), _small(pattern.cols[perm])


@functools.lru_cache(maxsize=256)
def _transpose(pattern: SparsityPattern) -> tuple[np.ndarray, SparsityPattern]:
    perm, r, c = _col_major(pattern)
    return perm, SparsityPattern(c, r, pattern.shape[::-1])


@functools.lru_cache(maxsize=256)
def _spgemm_symbolic(a: SparsityPattern, b: SparsityPattern):
    """Structural product of two patterns, with the index pairs that feed each output entry.

    Returns ``(out_pattern, a_idx, b_idx, seg)``: output value ``k`` is the sum of
    ``a_values[a_idx[t]] * b_values[b_idx[t]]`` over ``t`` with ``seg[t] == k`` (``seg`` is
    sorted).
    """
    m, kk = a.shape
    _, n = b.shape
    indptr = np.zeros(kk + 1, dtype=np.int64)
    np.cumsum(b.row_counts(), out=indptr[1:])
    counts = np.diff(indptr)[a.cols]
    total = int(counts.sum())
    a_idx = np.repeat(np.arange(a.nnz, dtype=np.int64), counts)
    starts = np.repeat(indptr[a.cols], counts)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    b_idx = starts + offsets
    out_r = a.rows[a_idx]
    out_c = b.cols[b_idx]
    key = out_r * max(n, 1) + out_c
    uniq, inv = np.unique(key, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    out = SparsityPattern(uniq // max(n, 1), uniq % max(n, 1), (m, n))
    return out, _small(a_idx[order]), _small(b_idx[order]), _small(inv[order])


@functools.lru_cache(maxsize=256)
def _union_symbolic(a: SparsityPattern, b: SparsityPattern):
    u = a.union(b)
    pa, pb = u.positions(a.rows, a.cols), u.positions(b.rows, b.cols)
    seg = np.concatenate([pa, pb])
    order = np.argsort(seg, kind="stable")
    return u, _small(order), _small(seg[order])


def _segment_sum(data, segment_ids: np.ndarray, num_segments: int):
    return jax.ops.segment_sum(
        data, segment_ids, num_segments=num_segments, indices_are_sorted=True
    )


def _take(values, idx: np.ndarray):
    """``values[idx]``; on the host when ``values`` is concrete (a constant operand).

    Gathering a constant inside a trace would leave XLA to constant-fold it at compile time
    (seconds for large patterns); gathering it here bakes the result in as one constant.
    """
    if isinstance(values, np.ndarray):
        return values[idx]
    if isinstance(values, jax.Array) and not isinstance(values, jax.core.Tracer):
        if getattr(values, "is_fully_addressable", True):
            return np.asarray(values)[idx]
    return values[idx]


def _as_array(values):
    if isinstance(values, (jax.Array, jax.ShapeDtypeStruct)):
        return values
    if isinstance(values, np.ndarray) and values.dtype == object:
        raise TypeError("PatternMatrix values must be numeric, got an object array.")
    return jnp.asarray(values)


# ---------------------------------------------------------------------------------------
# PatternMatrix
# ---------------------------------------------------------------------------------------


class PatternMatrix(eqx.Module):
    """A sparse ``m × n`` matrix whose nonzero values are the only pytree leaf.

    The pattern is static and hashable (a [`SparsityPattern`][sparseopt_adapters.
    SparsityPattern]); ``values[k]`` sits at ``(pattern.rows[k], pattern.cols[k])`` in row-major
    order. Entries passed in another order are permuted into row-major order once, at
    construction. Use it as an optimisation parameter: ``jax.grad`` of a function of ``G``
    returns a ``PatternMatrix`` holding ∂E/∂values, and no product builds a dense ``m × n``
    array (only [`todense`][sparseopt_adapters.PatternMatrix.todense] does).

    Products: ``G @ x`` and ``x @ G`` with dense vectors/matrices (numpy or JAX) give dense
    arrays; products with another ``PatternMatrix``, a scipy sparse constant or a
    ``jax.experimental.sparse.BCOO`` with concrete indices give a ``PatternMatrix`` on the
    structural product pattern. ``G.T``, ``G + H``, ``-G``, ``s * G`` and ``G / s`` are
    supported. ``BCOO @ G`` is not (BCOO does not defer): write
    ``PatternMatrix.from_bcoo(B) @ G``.

    Args:
        values: The ``nnz`` nonzero values (numpy, JAX, or a tracer inside ``jit``/``grad``).
        rows: Row index of each value (integers, concrete: never traced).
        cols: Column index of each value (integers, concrete).
        shape: ``(m, n)``.

    Raises:
        ValueError: For out-of-range indices, duplicate ``(i, j)`` entries (merge them with
            ``sum_duplicates`` first), or a values vector whose length is not ``len(rows)``.

    Example:
        >>> import jax, numpy as np
        >>> import sparseopt_adapters as sa
        >>> G = sa.PatternMatrix(np.array([1.0, 2.0, 3.0]), [0, 1, 2], [1, 0, 1], (3, 2))
        >>> G
        PatternMatrix(3×2, nnz=3, float64)
        >>> G @ np.ones(2)
        Array([1., 2., 3.], dtype=float64)
        >>> E = lambda G: ((G.T @ G) @ np.ones(2)).sum()
        >>> jax.grad(E)(G).values
        Array([2., 4., 6.], dtype=float64)
    """

    values: Any
    pattern: SparsityPattern = eqx.field(static=True)

    def __init__(self, values, rows, cols=None, shape=None):
        if isinstance(rows, SparsityPattern) and cols is None and shape is None:
            pattern = rows
            perm = None
        else:
            if cols is None or shape is None:
                raise TypeError(
                    "PatternMatrix(values, rows, cols, shape) needs rows, cols and shape "
                    "(or PatternMatrix(values, pattern) with a SparsityPattern)."
                )
            r = _concrete_indices(rows, "rows")
            c = _concrete_indices(cols, "cols")
            shape = _check_pattern_indices(r, c, shape)
            key = r * max(shape[1], 1) + c
            perm = None
            if r.size > 1 and not np.all(key[1:] > key[:-1]):
                perm = np.argsort(key, kind="stable")
                r, c = r[perm], c[perm]
            pattern = SparsityPattern(r, c, shape)
        values = _as_array(values)
        if values.ndim != 1 or values.shape[0] != pattern.nnz:
            raise ValueError(
                f"PatternMatrix values must be a vector with one value per pattern entry, "
                f"shape ({pattern.nnz},); got shape {tuple(values.shape)}."
            )
        if not isinstance(values, jax.ShapeDtypeStruct):
            if not jnp.issubdtype(values.dtype, jnp.inexact):
                values = values.astype(jnp.result_type(float))
            if perm is not None:
                values = values[perm]
        self.values = values
        self.pattern = pattern

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, a, values=None) -> PatternMatrix:
        """The stored entries of a scipy sparse matrix/array (explicit zeros are kept).

        Args:
            a: Any scipy sparse matrix or array. Duplicate entries are an error.
            values: Optional values in pattern (row-major) order replacing ``a``'s data,
                e.g. to start an optimisation from another point on ``a``'s pattern.

        Example:
            >>> import scipy.sparse as sp, sparseopt_adapters as sa
            >>> sa.PatternMatrix.from_scipy(sp.eye_array(3, format="csr")).nnz
            3
        """
        if not sp.issparse(a):
            raise TypeError(
                f"from_scipy needs a scipy sparse matrix or array, got {type(a).__name__}. "
                "For a dense array use PatternMatrix.from_dense."
            )
        coo = sp.coo_array(a)
        G = cls(np.asarray(coo.data), coo.row, coo.col, coo.shape)
        return G if values is None else cls(values, G.pattern)

    @classmethod
    def from_bcoo(cls, b) -> PatternMatrix:
        """A 2-D ``jax.experimental.sparse.BCOO`` whose indices are concrete.

        The BCOO's data becomes the values leaf (it may be traced); its indices must be
        concrete, so build the BCOO outside ``jit`` (or use numpy indices).
        """
        from jax.experimental import sparse as jsparse

        if not isinstance(b, jsparse.BCOO):
            raise TypeError(f"from_bcoo needs a jax.experimental.sparse.BCOO, got {type(b)}.")
        if b.n_batch or b.n_dense or b.ndim != 2:
            raise ValueError(
                f"from_bcoo needs a 2-D BCOO without batch or dense dimensions, got "
                f"ndim={b.ndim}, n_batch={b.n_batch}, n_dense={b.n_dense}."
            )
        if isinstance(b.indices, jax.core.Tracer):
            raise TypeError(
                "from_bcoo needs concrete BCOO indices, but they are traced (a BCOO built "
                "inside jit has traced indices even from numpy). Build the BCOO outside the "
                "transformed function, or use PatternMatrix(values, rows, cols, shape) with "
                "numpy indices."
            )
        idx = np.asarray(b.indices)
        try:
            return cls(b.data, idx[:, 0], idx[:, 1], b.shape)
        except ValueError as e:
            if "duplicate" in str(e):
                raise ValueError(f"{e} For a BCOO: `b = b.sum_duplicates()`.") from None
            raise

    @classmethod
    def from_dense(cls, a, mask=None) -> PatternMatrix:
        """The nonzeros of a dense (concrete) matrix, or its entries where ``mask`` is true."""
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"from_dense needs a 2-D array, got shape {a.shape}.")
        r, c = np.nonzero(a if mask is None else np.asarray(mask))
        return cls(a[r, c], r, c, a.shape)

    # -- properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    @property
    def rows(self) -> np.ndarray:
        return self.pattern.rows

    @property
    def cols(self) -> np.ndarray:
        return self.pattern.cols

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def T(self) -> PatternMatrix:
        """The transpose, on the transposed pattern (a gather of the values)."""
        perm, pt = _transpose(self.pattern)
        return PatternMatrix(_take(self.values, perm), pt)

    # -- conversions --------------------------------------------------------------------
    def todense(self):
        """The dense ``m × n`` JAX array (the one method that builds it)."""
        return (
            jnp.zeros(self.shape, self.values.dtype)
            .at[self.pattern.rows, self.pattern.cols]
            .set(self.values, unique_indices=True, indices_are_sorted=True)
        )

    def to_bcoo(self):
        """A ``jax.experimental.sparse.BCOO`` (numpy indices, sorted and unique)."""
        from jax.experimental import sparse as jsparse

        idx = np.stack([self.pattern.rows, self.pattern.cols], axis=1)
        return jsparse.BCOO(
            (self.values, idx), shape=self.shape, indices_sorted=True, unique_indices=True
        )

    def to_scipy(self, format: str = "csr"):
        """A scipy sparse array (host copy; not traceable)."""
        return self.pattern.to_scipy(np.asarray(self.values), format)

    # -- products -----------------------------------------------------------------------
    def _matmul_dense(self, x):
        x = jnp.asarray(x)
        m, n = self.shape
        if x.ndim not in (1, 2) or x.shape[0] != n:
            raise ValueError(
                f"PatternMatrix {self.shape} @ array of shape {tuple(x.shape)}: the array "
                f"must have shape ({n},) or ({n}, k)."
            )
        v = self.values if x.ndim == 1 else self.values[:, None]
        rows, cols = _row_major(self.pattern)
        return _segment_sum(v * x[cols], rows, m)

    def _rmatmul_dense(self, x):
        x = jnp.asarray(x)
        m, n = self.shape
        if x.ndim not in (1, 2) or x.shape[-1] != m:
            raise ValueError(
                f"array of shape {tuple(x.shape)} @ PatternMatrix {self.shape}: the array "
                f"must have shape ({m},) or (k, {m})."
            )
        perm, r, c = _col_major(self.pattern)
        v = _take(self.values, perm)
        if x.ndim == 1:
            return _segment_sum(v * x[r], c, n)
        return _segment_sum(v[:, None] * x.T[r], c, n).T

    def _matmul_sparse(self, other: PatternMatrix) -> PatternMatrix:
        if self.shape[1] != other.shape[0]:
            raise ValueError(
                f"PatternMatrix product with mismatched shapes {self.shape} @ {other.shape}."
            )
        out, a_idx, b_idx, seg = _spgemm_symbolic(self.pattern, other.pattern)
        prod = _take(self.values, a_idx) * _take(other.values, b_idx)
        vals = _segment_sum(prod, seg, out.nnz)
        return PatternMatrix(vals, out)

    def __matmul__(self, other):
        other_pm = _as_sparse_operand(other)
        if other_pm is not None:
            return self._matmul_sparse(other_pm)
        if _is_dense_like(other):
            return self._matmul_dense(other)
        return NotImplemented

    def __rmatmul__(self, other):
        other_pm = _as_sparse_operand(other)
        if other_pm is not None:
            return other_pm._matmul_sparse(self)
        if _is_dense_like(other):
            return self._rmatmul_dense(other)
        return NotImplemented

    # -- elementwise --------------------------------------------------------------------
    def __add__(self, other):
        other_pm = _as_sparse_operand(other)
        if other_pm is None:
            return NotImplemented
        if other_pm.shape != self.shape:
            raise ValueError(f"PatternMatrix sum with shapes {self.shape} and {other_pm.shape}.")
        if other_pm.pattern == self.pattern:
            return PatternMatrix(self.values + other_pm.values, self.pattern)
        u, order, seg = _union_symbolic(self.pattern, other_pm.pattern)
        both = jnp.concatenate([self.values, other_pm.values.astype(self.values.dtype)])
        return PatternMatrix(_segment_sum(both[order], seg, u.nnz), u)

    __radd__ = __add__

    def __neg__(self) -> PatternMatrix:
        return PatternMatrix(-self.values, self.pattern)

    def __sub__(self, other):
        other_pm = _as_sparse_operand(other)
        if other_pm is None:
            return NotImplemented
        return self + (-other_pm)

    def __rsub__(self, other):
        other_pm = _as_sparse_operand(other)
        if other_pm is None:
            return NotImplemented
        return other_pm + (-self)

    def __mul__(self, s):
        if _is_scalar(s):
            return PatternMatrix(self.values * s, self.pattern)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, s):
        if _is_scalar(s):
            return PatternMatrix(self.values / s, self.pattern)
        return NotImplemented

    # numpy must defer to our __rmatmul__ instead of building an object array.
    __array_ufunc__ = None
    __array_priority__ = 1000

    # -- pictures -----------------------------------------------------------------------
    def __repr__(self) -> str:
        m, n = self.shape
        dt = getattr(self.values, "dtype", None)
        return f"PatternMatrix({m}×{n}, nnz={self.nnz}, {dt})"

    def __str__(self) -> str:
        from ._pattern import text_spy

        return repr(self) + "\n" + text_spy(self.pattern)

    def spy(self, ax=None, **kwargs):
        """Matplotlib picture of the pattern."""
        return self.pattern.spy(ax=ax, **kwargs)


def _is_scalar(s) -> bool:
    return np.ndim(s) == 0 and not isinstance(s, PatternMatrix)


def _is_dense_like(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, list, tuple)) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and not sp.issparse(x)
    )


def _as_sparse_operand(x) -> PatternMatrix | None:
    """A PatternMatrix view of a sparse operand (PatternMatrix, scipy sparse, BCOO), else None.

    Constant operands may carry duplicate entries; they are merged (no rank issue for a
    constant).
    """
    if isinstance(x, PatternMatrix):
        return x
    if sp.issparse(x):
        coo = sp.coo_array(x, copy=True)
        coo.sum_duplicates()
        if coo.ndim != 2:
            raise ValueError(f"PatternMatrix products need 2-D sparse operands, got {x.shape}.")
        return PatternMatrix(
            np.asarray(coo.data, dtype=np.result_type(coo.data, float)), coo.row, coo.col, coo.shape
        )
    try:
        from jax.experimental import sparse as jsparse
    except ImportError:  # pragma: no cover
        return None
    if isinstance(x, jsparse.BCOO):
        if not (x.unique_indices or isinstance(x.indices, jax.core.Tracer)):
            x = x.sum_duplicates(nse=x.nse)
        return PatternMatrix.from_bcoo(x)
    return None


# ---------------------------------------------------------------------------------------
# pytree <-> flat float64 vector
# ---------------------------------------------------------------------------------------


class Fixed(eqx.Module):
    """Marks a subtree of a parameter pytree as fixed: not optimised, not in the flat vector.

    [`ravel_parameters`][sparseopt_adapters.ravel_parameters] leaves every ``Fixed`` node out
    of the flat vector and its ``unravel`` puts the same node back. Functions handed to
    sparseopt_adapters (residuals, objectives) receive the tree with every ``Fixed(x)``
    replaced by ``x`` (see [`unwrap_fixed`][sparseopt_adapters.unwrap_fixed]), so they never
    need ``.value``. Integer and boolean leaves are always fixed, marked or not.

    Example:
        >>> import numpy as np, sparseopt_adapters as sa
        >>> tree = {"a": np.ones(2), "L": sa.Fixed(np.eye(2))}
        >>> flat, unravel = sa.ravel_parameters(tree)
        >>> flat.shape
        (2,)
        >>> sa.unwrap_fixed(unravel(flat))["L"].shape
        (2, 2)
    """

    value: Any


def _is_fixed(x) -> bool:
    return isinstance(x, Fixed)


def unwrap_fixed(tree):
    """Replace every ``Fixed(x)`` node of a pytree by ``x``.

    Example:
        >>> import sparseopt_adapters as sa
        >>> sa.unwrap_fixed({"w": 1.0, "c": sa.Fixed(2.0)})
        {'c': 2.0, 'w': 1.0}
    """
    return jax.tree.map(lambda x: x.value if _is_fixed(x) else x, tree, is_leaf=_is_fixed)


def _is_parameter_leaf(x) -> bool:
    if _is_fixed(x) or x is None:
        return False
    if isinstance(x, (bool, int, np.bool_, np.integer)):
        return False
    if isinstance(x, (float, complex)):
        return True
    dt = getattr(x, "dtype", None)
    if dt is None:
        return False
    return bool(jnp.issubdtype(dt, jnp.inexact))


def _concrete(xs) -> bool:
    """Whether ``xs`` may be handled in numpy: float64 is on (numpy computes in float64
    whatever JAX's setting), no leaf is a tracer, and every JAX array lives on the default
    device alone (a sharded or moved array keeps its placement through the jnp path)."""
    if not jax.config.jax_enable_x64:
        return False
    default = None
    for x in xs:
        if isinstance(x, jax.core.Tracer):
            return False
        if isinstance(x, jax.Array):
            default = jax.devices()[0] if default is None else default
            if x.sharding.device_set != {default}:
                return False
    return True


def ravel_parameters(tree) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """Flatten a parameter pytree to one float64 vector; return it and the inverse map.

    Parameters are the floating leaves of ``tree``: dense arrays, Python floats, and the
    ``values`` of every [`PatternMatrix`][sparseopt_adapters.PatternMatrix] (in pattern
    order). [`Fixed`][sparseopt_adapters.Fixed] nodes, integer/boolean leaves and non-array
    leaves are not parameters: ``unravel`` returns them unchanged. Leaves are laid out in
    ``jax.tree.leaves`` order.

    Call it once, outside ``jit``; the returned ``unravel`` is jit-able (static offsets) and
    exact: ``unravel(flat)`` rebuilds ``tree`` bit for bit for float64 leaves (other float
    dtypes are cast back from float64, which is exact for float32/float16 values), and
    ``ravel_parameters(unravel(v))[0] == v``.

    Args:
        tree: Any pytree. Complex leaves are rejected (the solvers are real).

    Returns:
        ``(flat, unravel)``: a float64 vector of all parameter entries, and the map from such
        a vector back to a pytree with the structure of ``tree``.

    Example:
        >>> import numpy as np, jax.numpy as jnp, sparseopt_adapters as sa
        >>> G = sa.PatternMatrix(np.array([1.0, 2.0]), [0, 1], [1, 0], (2, 2))
        >>> tree = {"G": G, "b": jnp.zeros(3), "n": 4, "L": sa.Fixed(np.eye(2))}
        >>> flat, unravel = sa.ravel_parameters(tree)
        >>> flat
        Array([1., 2., 0., 0., 0.], dtype=float64)
        >>> unravel(flat + 1.0)["G"].values
        Array([2., 3.], dtype=float64)
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_fixed)
    is_param = [_is_parameter_leaf(x) for x in leaves]
    # Concrete leaves are flattened in numpy and sent over once: eager jnp calls would
    # each compile a small XLA program (ravel, concatenate, convert) on first use.
    xp = np if _concrete([x for x, p in zip(leaves, is_param, strict=True) if p]) else jnp
    shapes, dtypes, sizes = [], [], []
    parts = []
    for leaf, p in zip(leaves, is_param, strict=True):
        if not p:
            continue
        a = xp.asarray(leaf)
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise TypeError(
                f"ravel_parameters got a complex leaf of shape {a.shape}; the solvers are "
                "real. Split it into real and imaginary parts, or mark it sa.Fixed(...)."
            )
        shapes.append(a.shape)
        dtypes.append(a.dtype)
        sizes.append(int(np.prod(a.shape, dtype=np.int64)))
        parts.append(xp.ravel(a).astype(np.float64))
    if xp is np:
        flat = jax.device_put(np.concatenate(parts) if parts else np.zeros((0,), np.float64))
    else:
        flat = jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.float64)
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    total = offsets[-1]
    fixed_leaves = [None if p else leaf for leaf, p in zip(leaves, is_param, strict=True)]

    def unravel(v):
        host = _concrete([v])  # concrete: cut in numpy, one transfer per leaf, no compile
        v = np.asarray(v) if host else jnp.asarray(v)
        if v.shape != (total,):
            raise ValueError(
                f"unravel expects a vector of shape ({total},) (the flat parameters), got "
                f"shape {tuple(v.shape)}."
            )
        out = []
        k = 0
        for leaf, p in zip(fixed_leaves, is_param, strict=True):
            if p:
                piece = v[offsets[k] : offsets[k + 1]].reshape(shapes[k]).astype(dtypes[k])
                out.append(jax.device_put(piece) if host else piece)
                k += 1
            else:
                out.append(leaf)
        return jax.tree.unflatten(treedef, out)

    return flat, unravel
