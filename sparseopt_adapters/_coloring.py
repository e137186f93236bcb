"""Graph coloring of sparsity patterns: which derivative products to take, and how to read
every nonzero back from them.

Everything here is host-side numpy/scipy work done once per pattern. The result,
[`ColoringResult`][], carries the colors (the seeds of the products) and precomputed index
arrays for decompression, so that the per-call work in ``_compressed.py`` is one batch of
products followed by one gather (direct decompression) or one segmented scan and a gather
(substitution).

Problems (``mode``):

- ``"forward"``: column coloring (columns sharing a row differ): one JVP per color.
- ``"reverse"``: row coloring: one VJP per color.
- ``"bidirectional"``: star bicoloring of the bipartite graph, for patterns with a dense row
  *and* a dense column: some JVPs plus some VJPs.
- ``"star"`` (symmetric): star coloring, direct decompression: one HVP per color.
- ``"acyclic"`` (symmetric): acyclic coloring, decompression by substitution along the
  2-colored trees: usually fewer HVPs than star coloring.

References: Gebremedhin, Manne, Pothen, "What color is your Jacobian?" (SIAM Review 2005);
Gebremedhin, Tarafdar, Manne, Pothen, "New acyclic and star coloring algorithms with
application to computing Hessians" (SISC 2007); the greedy algorithms follow the structure of
SparseMatrixColorings.jl.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from ._errors import DenseColoringWarning
from ._pattern import SparsityPattern, matplotlib_spy, text_spy

ORDERS = (
    "natural",
    "largest_first",
    "smallest_last",
    "incidence_degree",
    "dynamic_largest_first",
    "dsatur",
    "random",
)
JACOBIAN_MODES = ("forward", "reverse", "bidirectional")
HESSIAN_METHODS = ("star", "acyclic")
_ALL_MODES = JACOBIAN_MODES + HESSIAN_METHODS

# Orders tried by ``order="best"``: all deterministic orders on small problems, the cheap
# static ones on large problems (the dynamic orders are Python loops over every edge).
_BEST_SMALL = ("natural", "largest_first", "dsatur", "smallest_last", "incidence_degree",
               "dynamic_largest_first")
_BEST_LARGE = ("natural", "dsatur", "largest_first")
_LARGE_VERTICES = 100_000
# Above this many distance-2 pairs the explicit column-intersection graph is not built, and
# the orders that need it (degree-based ones) use the cheap degree upper bound instead.
_D2_BUDGET = 20_000_000
# A neighbor list longer than this is handled by numpy instead of a Python loop.
_BIG_DEGREE = 32


# ---------------------------------------------------------------------------------------
# Result type
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Substitution:
    """Index data of substitution (acyclic) decompression; all arrays are numpy.

    Every 2-colored tree is rooted at a leaf and laid out in depth-first preorder as one row
    of a block; trees of similar size share a block (a row width of a power of two, at
    least one more than the tree size, padded with zeros). Entry ``(row, q)`` of block ``g``
    stands for ``sign * compressed[index]`` (a vertex's product with the tree's other
    color; ``index == len(compressed)`` is a zero pad). The value of a tree edge is the
    alternating-sign sum over the subtree below it, a contiguous range of its row: with
    ``R`` the reverse cumulative sum along each row, raveled and concatenated over blocks,
    ``value = child_sign * (R[child_pos] - R[child_end])``. Rows never mix trees, so the
    rounding of one tree never reaches another.

    Attributes:
        blocks: tuple of ``(index, sign)`` pairs of ``(n_rows, width)`` arrays.
        child_pos: ``(n_edges,)`` flat position of the child end of each tree edge.
        child_end: ``(n_edges,)`` flat position just past that child's subtree.
        child_sign: ``(n_edges,)`` sign of the child node.
    """

    blocks: tuple
    child_pos: np.ndarray
    child_end: np.ndarray
    child_sign: np.ndarray

    @property
    def n_edges(self) -> int:
        return int(self.child_pos.size)

    @property
    def n_slots(self) -> int:
        return int(sum(i.size for i, _ in self.blocks))

    def arrays(self) -> list[np.ndarray]:
        out = []
        for i, s in self.blocks:
            out += [i, s]
        return out + [self.child_pos, self.child_end, self.child_sign]


def _ro(a, dtype=np.int64) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(a, dtype=dtype))
    a.setflags(write=False)
    return a


class ColoringResult:
    """A coloring of a sparsity pattern with everything needed to decompress.

    Build one with [`color_jacobian`][] or [`color_hessian`][]; it is immutable and can be
    saved and loaded (`save` / `load`) together with its pattern.

    Products: ``n_forward`` JVPs (or HVPs for ``"star"``/``"acyclic"``) with seeds
    ``column_colors == k``, and ``n_reverse`` VJPs with seeds ``row_colors == k``. The
    compressed vector is the concatenation of the forward results ``(n_forward, m)`` and the
    reverse results ``(n_reverse, n)``, each raveled. ``gather`` maps it (extended by the
    substitution values for ``"acyclic"``) to the values on ``pattern``, in pattern order.

    Attributes:
        pattern: the colored [`SparsityPattern`][] (full symmetric for Hessian modes).
        mode: ``"forward"``, ``"reverse"``, ``"bidirectional"``, ``"star"`` or ``"acyclic"``.
        order: the vertex order that produced the colors (``"cyclic"`` for the periodic
            coloring ``j mod k`` tried first on Jacobians).
        column_colors: ``(n,)`` seed color of each column, ``-1`` when in no forward seed.
        row_colors: ``(m,)`` seed color of each row, ``-1`` when in no reverse seed.
        n_forward: number of JVPs / HVPs.
        n_reverse: number of VJPs.
        gather: ``(nnz,)`` decompression index.
        substitution: [`Substitution`][] data for ``"acyclic"``, else ``None``.

    Example:
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> p = sa.SparsityPattern.from_dense(np.eye(6) + np.eye(6, k=1) + np.eye(6, k=-1))
        >>> c = sa.color_jacobian(p, mode="forward")
        >>> c
        ColoringResult(6×6, nnz=16, forward, 3 colors, order=cyclic)
        >>> c.column_colors
        array([0, 1, 2, 0, 1, 2])
    """

    __slots__ = (
        "pattern",
        "mode",
        "order",
        "column_colors",
        "row_colors",
        "n_forward",
        "n_reverse",
        "gather",
        "substitution",
        "_raw_colors",
        "_labels",
        "_frozen",
    )

    def __init__(self, pattern, mode, order, column_colors, row_colors, n_forward, n_reverse,
                 gather, substitution, raw_colors, labels):
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "column_colors", _ro(column_colors))
        object.__setattr__(self, "row_colors", _ro(row_colors))
        object.__setattr__(self, "n_forward", int(n_forward))
        object.__setattr__(self, "n_reverse", int(n_reverse))
        object.__setattr__(self, "gather", _ro(gather))
        object.__setattr__(self, "substitution", substitution)
        object.__setattr__(self, "_raw_colors", _ro(raw_colors))
        object.__setattr__(self, "_labels", _ro(labels))
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"ColoringResult is immutable (tried to set {name}).")

    # -- properties -------------------------------------------------------------------
    @property
    def n_colors(self) -> int:
        """Number of products per evaluation (JVPs + VJPs, or HVPs)."""
        return self.n_forward + self.n_reverse

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def colors(self) -> np.ndarray:
        """One color per vertex: columns (forward, star, acyclic), rows (reverse), or columns
        then rows with row colors offset by ``n_forward`` (bidirectional); ``-1`` = unused."""
        if self.mode == "reverse":
            return self.row_colors
        if self.mode == "bidirectional":
            r = np.where(self.row_colors >= 0, self.row_colors + self.n_forward, -1)
            return np.concatenate([self.column_colors, r])
        return self.column_colors

    @property
    def compressed_size(self) -> int:
        m, n = self.pattern.shape
        return self.n_forward * m + self.n_reverse * n

    @property
    def is_symmetric(self) -> bool:
        return self.mode in HESSIAN_METHODS

    def entry_colors(self) -> np.ndarray:
        """The color (product index) each nonzero is read from, in pattern order."""
        return self._labels

    def seeds(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense 0/1 seed matrices ``(n_forward, n)`` and ``(n_reverse, m)`` (for tests)."""
        m, n = self.pattern.shape
        f = np.zeros((self.n_forward, n))
        j = np.flatnonzero(self.column_colors >= 0)
        f[self.column_colors[j], j] = 1.0
        r = np.zeros((self.n_reverse, m))
        i = np.flatnonzero(self.row_colors >= 0)
        r[self.row_colors[i], i] = 1.0
        return f, r

    # -- persistence ------------------------------------------------------------------
    def save(self, file) -> None:
        """Save pattern and colors to ``.npz``; [`ColoringResult.load`][] rebuilds the rest."""
        m, n = self.pattern.shape
        np.savez_compressed(
            file,
            rows=self.pattern.rows,
            cols=self.pattern.cols,
            shape=np.array([m, n]),
            mode=np.array(self.mode),
            order=np.array(self.order),
            colors=self._raw_colors,
        )

    @classmethod
    def load(cls, file) -> ColoringResult:
        """Load a coloring saved by [`ColoringResult.save`][] (its validity is re-checked)."""
        with np.load(file) as z:
            pattern = SparsityPattern(z["rows"], z["cols"], tuple(int(s) for s in z["shape"]))
            mode = str(z["mode"])
            order = str(z["order"])
            colors = np.asarray(z["colors"])
        if mode not in _ALL_MODES:
            raise ValueError(f"{file!r} holds an unknown coloring mode {mode!r}.")
        return _BUILDERS[mode](pattern, colors, order)

    # -- identity / pictures ----------------------------------------------------------
    def __eq__(self, other):
        if not isinstance(other, ColoringResult):
            return NotImplemented
        return (
            self.mode == other.mode
            and self.pattern == other.pattern
            and np.array_equal(self._raw_colors, other._raw_colors)
        )

    def __hash__(self):
        return hash((self.mode, self.pattern, self._raw_colors.tobytes()))

    def __repr__(self) -> str:
        m, n = self.pattern.shape
        if self.mode == "bidirectional":
            k = f"{self.n_forward} JVPs + {self.n_reverse} VJPs"
        else:
            k = f"{self.n_colors} colors"
        return (f"ColoringResult({m}×{n}, nnz={self.pattern.nnz}, {self.mode}, {k}, "
                f"order={self.order})")

    def __str__(self) -> str:
        return repr(self) + "\n" + text_spy(self.pattern, labels=self._labels)

    def spy(self, ax=None, **kwargs):
        """Matplotlib picture of the pattern, each entry colored by the product it comes from."""
        return matplotlib_spy(self.pattern, ax=ax, colors=self._labels, **kwargs)


# ---------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------
def color_jacobian(
    pattern: SparsityPattern,
    mode: str = "auto",
    order="best",
    *,
    seed: int = 0,
    warn: bool = True,
) -> ColoringResult:
    """Color a Jacobian pattern for compressed evaluation.

    Args:
        pattern: the ``(m, n)`` [`SparsityPattern`][] of the Jacobian.
        mode: ``"forward"`` (column coloring, JVPs), ``"reverse"`` (row coloring, VJPs),
            ``"bidirectional"`` (star bicoloring, JVPs and VJPs) or ``"auto"``: the fewest
            products (ties go to forward, then reverse). Bidirectional is tried
            automatically on small problems and when one direction alone needs many colors.
        order: a vertex order from ``ORDERS``, a sequence of them, an explicit permutation
            of the vertices, or ``"best"``: try several (and, for forward/reverse, the
            periodic coloring ``j mod k``) and keep the fewest colors, stopping early at the
            lower bound (the largest number of nonzeros in a row, resp. column).
        seed: seed of the ``"random"`` order.
        warn: warn with [`DenseColoringWarning`][] when the coloring is about as expensive as
            a dense Jacobian.

    Returns:
        A [`ColoringResult`][].

    Example:
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> dense = np.eye(50, dtype=bool)
        >>> dense[0, :] = dense[:, 0] = True          # arrowhead: one dense row and column
        >>> c = sa.color_jacobian(sa.SparsityPattern.from_dense(dense))
        >>> c.mode, c.n_colors
        ('bidirectional', 3)
    """
    pattern = _check_pattern(pattern, "color_jacobian")
    if mode not in ("auto",) + JACOBIAN_MODES:
        raise ValueError(
            f"color_jacobian: mode must be 'auto', 'forward', 'reverse' or 'bidirectional', "
            f"got {mode!r}."
        )
    m, n = pattern.shape
    if mode == "forward":
        res = _color_forward(pattern, order, seed).build()
    elif mode == "reverse":
        res = _color_reverse(pattern, order, seed).build()
    elif mode == "bidirectional":
        res = _color_bidirectional(pattern, order, seed)
    else:
        f = _color_forward(pattern, order, seed)
        r = _color_reverse(pattern, order, seed)
        lazy = f if f.n_colors <= r.n_colors else r
        best = lazy.n_colors
        res = None
        if best > 2 and (m + n <= 20_000 or best > 16):
            b = _color_bidirectional(pattern, order, seed)
            if b.n_colors < best:
                res = b
        if res is None:
            res = lazy.build()
    if warn:
        _maybe_warn(res, min(m, n), "Jacobian")
    return res


def color_hessian(
    pattern: SparsityPattern,
    method: str = "auto",
    order="best",
    *,
    seed: int = 0,
    warn: bool = True,
) -> ColoringResult:
    """Symmetric coloring of a Hessian pattern for compressed Hessian-vector products.

    The pattern is symmetrized first (a lower or upper triangle is accepted).

    Args:
        pattern: the ``(n, n)`` [`SparsityPattern`][] of the Hessian.
        method: ``"star"`` (direct decompression: every entry read from one product),
            ``"acyclic"`` (substitution along 2-colored trees: usually fewer colors, a
            cumulative sum over the trees and some rounding per call) or ``"auto"``:
            acyclic only when it saves at least two colors (the substitution costs about
            one cheap HVP per call).
        order: as in [`color_jacobian`][].
        seed: seed of the ``"random"`` order.
        warn: warn with [`DenseColoringWarning`][] when about ``n`` colors are needed.

    Returns:
        A [`ColoringResult`][] whose ``pattern`` is the full symmetric pattern.

    Example:
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> dense = np.eye(40, dtype=bool)
        >>> dense[-1, :] = dense[:, -1] = True          # arrowhead Hessian
        >>> sa.color_hessian(sa.SparsityPattern.from_dense(dense), method="star").n_colors
        2
    """
    pattern = _check_pattern(pattern, "color_hessian")
    if pattern.shape[0] != pattern.shape[1]:
        raise ValueError(
            f"color_hessian needs a square pattern, got shape {pattern.shape}. For a "
            "rectangular Jacobian use color_jacobian."
        )
    if method not in ("auto",) + HESSIAN_METHODS:
        raise ValueError(
            f"color_hessian: method must be 'auto', 'star' or 'acyclic', got {method!r}."
        )
    if not _symmetric(pattern):
        pattern = pattern.symmetrize()
    if method == "star":
        res = _color_symmetric(pattern, order, seed, "star")
    elif method == "acyclic":
        res = _color_symmetric(pattern, order, seed, "acyclic")
    else:
        g = _SymGraph(pattern)
        res = _color_symmetric(pattern, order, seed, "star", graph=g)
        if res.n_colors > 3:
            # the acyclic greedy is a Python loop over paths of length 2: with many of
            # those (dense rows) only the vectorised periodic coloring is tried
            a = _color_symmetric(pattern, order, seed, "acyclic", graph=g,
                                 greedy=g.sum_deg2 <= 5_000_000)
            # substitution costs a gather and a cumulative sum over every tree per call:
            # about as much as one cheap HVP (Rosenbrock, n = 1e4: acyclic 2 colors 291 us
            # vs star 3 colors 86 us), so one saved color is not worth it
            if a is not None and a.n_colors <= res.n_colors - 2:
                res = a
    if warn:
        _maybe_warn(res, pattern.shape[0], "Hessian")
    return res


def _check_pattern(pattern, caller):
    if not isinstance(pattern, SparsityPattern):
        raise TypeError(
            f"{caller} needs a sparseopt_adapters.SparsityPattern, got "
            f"{type(pattern).__name__}. Build one with SparsityPattern(rows, cols, shape), "
            "SparsityPattern.from_dense(mask) or jacobian_sparsity(f, x)."
        )
    return pattern


def _maybe_warn(res, dense_cost, what):
    if dense_cost >= 10 and res.n_colors >= 0.9 * dense_cost:
        warnings.warn(
            f"The {what} coloring needs {res.n_colors} products where a dense {what} needs "
            f"{dense_cost}: sparse AD does not pay for this pattern ({res!r}). Silence with "
            "warnings.filterwarnings('ignore', category=sparseopt_adapters.DenseColoringWarning).",
            DenseColoringWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------
def _order_candidates(order, nv):
    """Normalize ``order`` into a list of names or explicit permutations."""
    if isinstance(order, str):
        if order == "best":
            return list(_BEST_SMALL if nv <= _LARGE_VERTICES else _BEST_LARGE), True
        if order not in ORDERS:
            raise ValueError(
                f"Unknown vertex order {order!r}: use 'best' or one of {', '.join(ORDERS)}, "
                "or pass a permutation of the vertices."
            )
        return [order], False
    if isinstance(order, np.ndarray) and order.dtype.kind in "iu":
        return [_check_perm(order, nv)], False
    if isinstance(order, Sequence):
        if len(order) and all(isinstance(o, str) for o in order):
            for o in order:
                if o not in ORDERS:
                    raise ValueError(f"Unknown vertex order {o!r}: use one of {ORDERS}.")
            return list(order), False
        return [_check_perm(np.asarray(order), nv)], False
    raise TypeError(f"order must be a name, a sequence of names or a permutation, got {order!r}.")


def _check_perm(p, nv):
    p = np.asarray(p, dtype=np.int64).reshape(-1)
    if p.size != nv or not np.array_equal(np.sort(p), np.arange(nv)):
        raise ValueError(
            f"An explicit order must be a permutation of range({nv}) (one entry per vertex), "
            f"got an array of length {p.size}."
        )
    return p


def _static_order(name, degree, rng):
    nv = degree.size
    if name == "natural":
        return np.arange(nv)
    if name == "random":
        return rng.permutation(nv)
    if name == "largest_first":
        return np.argsort(-degree, kind="stable")
    raise AssertionError(name)


def _dynamic_order(name, nv, ptr, idx):
    """Bucket-queue orders on an explicit adjacency (CSR, no self loops)."""
    ptr_l = ptr.tolist()
    idx_l = idx.tolist()
    deg0 = np.diff(ptr)
    dmax = int(deg0.max()) if nv else 0
    if name == "incidence_degree":
        d = [0] * nv
        pick_max, delta = True, 1
    elif name == "smallest_last":
        d = deg0.tolist()
        pick_max, delta = False, -1
    elif name == "dynamic_largest_first":
        d = deg0.tolist()
        pick_max, delta = True, -1
    else:
        raise AssertionError(name)
    buckets = [[] for _ in range(dmax + 2)]
    pos = [0] * nv
    for v in range(nv - 1, -1, -1):  # so that pop() takes the lowest index first
        b = buckets[d[v]]
        pos[v] = len(b)
        b.append(v)
    out = []
    cur = dmax if pick_max else 0
    for _ in range(nv):
        if pick_max:
            cur = min(cur + 1, dmax + 1)
            while not buckets[cur]:
                cur -= 1
        else:
            cur = max(cur - 1, 0)
            while not buckets[cur]:
                cur += 1
        u = buckets[cur].pop()
        d[u] = -1
        out.append(u)
        for p in range(ptr_l[u], ptr_l[u + 1]):
            w = idx_l[p]
            dw = d[w]
            if dw < 0:
                continue
            b = buckets[dw]
            last = b[-1]
            b[pos[w]] = last
            pos[last] = pos[w]
            b.pop()
            dn = dw + delta
            nb = buckets[dn]
            pos[w] = len(nb)
            nb.append(w)
            d[w] = dn
    out = np.asarray(out, dtype=np.int64)
    return out[::-1].copy() if name == "smallest_last" else out


def _dsatur_order(nv, ptr, idx, degree=None):
    """The order in which DSATUR colors the vertices of an explicit graph.

    DSATUR picks the uncolored vertex with the most distinct colors among its neighbors
    (ties: larger degree, then lower index) and gives it the smallest free color -- which
    is first-fit greedy in this order, so the order is all the other algorithms need.
    """
    import heapq

    ptr_l = ptr.tolist()
    idx_l = idx.tolist()
    deg = (np.diff(ptr) if degree is None else degree).tolist()
    seen = [0] * nv  # bitmask of the colors among colored neighbors
    sat = [0] * nv
    done = [False] * nv
    heap = [(0, -deg[v], v) for v in range(nv)]
    heapq.heapify(heap)
    out = []
    for _ in range(nv):
        while True:
            s, d, v = heapq.heappop(heap)
            if not done[v] and -s == sat[v]:
                break
        f = seen[v]
        bit = 1 << ((~f & (f + 1)).bit_length() - 1)
        done[v] = True
        out.append(v)
        for p in range(ptr_l[v], ptr_l[v + 1]):
            w = idx_l[p]
            if done[w] or seen[w] & bit:
                continue
            seen[w] |= bit
            sat[w] += 1
            heapq.heappush(heap, (-sat[w], -deg[w], w))
    return np.asarray(out, dtype=np.int64)


def _n_distinct(colors):
    c = colors[colors >= 0]
    return int(c.max()) + 1 if c.size else 0


# ---------------------------------------------------------------------------------------
# Jacobians: column / row coloring (distance-2 in the bipartite graph)
# ---------------------------------------------------------------------------------------
class _Bipartite:
    """A pattern as a bipartite graph, for coloring its columns (or, transposed, its rows).

    "Vertices" are the side being colored, "others" the side whose entries must not repeat a
    color. ``rows``/``cols`` must be row-major sorted (as in a `SparsityPattern`); no
    transposed pattern is ever built (that would sort all entries again).
    """

    def __init__(self, rows, cols, shape, transpose: bool = False):
        m, n = shape
        nnz = rows.size
        row_counts = np.bincount(rows, minlength=m)
        col_counts = np.bincount(cols, minlength=n)
        row_ptr = np.zeros(m + 1, np.int64)
        np.cumsum(row_counts, out=row_ptr[1:])
        col_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(col_counts, out=col_ptr[1:])
        if nnz:
            a = sp.csr_array((np.ones(nnz, np.int8), cols, row_ptr), shape=(m, n)).tocsc()
            col_idx = a.indices.astype(np.int64)
        else:
            col_idx = np.zeros(0, np.int64)
        if transpose:
            self.nv, self.no = m, n
            self.ent_v, self.ent_o = rows, cols
            self.v_ptr, self.v_idx, self.v_counts = row_ptr, cols, row_counts
            self.o_ptr, self.o_idx, self.o_counts = col_ptr, col_idx, col_counts
        else:
            self.nv, self.no = n, m
            self.ent_v, self.ent_o = cols, rows
            self.v_ptr, self.v_idx, self.v_counts = col_ptr, col_idx, col_counts
            self.o_ptr, self.o_idx, self.o_counts = row_ptr, cols, row_counts
        self.nnz = nnz
        self.sum_deg2 = int(np.sum(self.o_counts.astype(np.int64) ** 2))
        self._adj = None

    @classmethod
    def of(cls, pattern: SparsityPattern, transpose: bool = False) -> _Bipartite:
        return cls(pattern.rows, pattern.cols, pattern.shape, transpose)

    @property
    def lower_bound(self) -> int:
        """Largest number of entries of one "other" (they all need different colors)."""
        return int(self.o_counts.max()) if self.no and self.nnz else 0

    def degree(self) -> np.ndarray:
        """Distance-2 degree of each vertex (an upper bound when the graph is too big)."""
        if self.sum_deg2 <= _D2_BUDGET:
            ptr, _ = self.adjacency()
            return np.diff(ptr)
        d = np.bincount(self.ent_v, weights=self.o_counts[self.ent_o], minlength=self.nv)
        return np.maximum(d - self.v_counts, 0).astype(np.int64)

    def adjacency(self):
        """Explicit vertex-intersection graph (CSR without self loops)."""
        if self._adj is None:
            a = sp.csr_array(
                (np.ones(self.nnz, np.int8), self.o_idx, self.o_ptr), shape=(self.no, self.nv)
            ).astype(np.int32)
            g = (a.T @ a).tocsr()
            g.setdiag(0)
            g.eliminate_zeros()
            g.sort_indices()
            self._adj = (g.indptr.astype(np.int64), g.indices.astype(np.int64))
        return self._adj


def _greedy_distance2(bg: _Bipartite, order: np.ndarray) -> np.ndarray:
    """First-fit column coloring: columns sharing a row get different colors.

    Each row keeps the set of colors already used in it as a Python int bitmask, so the work
    is O(nnz) big-int operations and no column-intersection graph is built.
    """
    ptr = bg.v_ptr.tolist()
    idx = bg.v_idx.tolist()
    used = [0] * bg.no
    colors = [-1] * bg.nv
    for v in order.tolist():
        a, b = ptr[v], ptr[v + 1]
        if a == b:
            continue
        rs = idx[a:b]
        f = 0
        for r in rs:
            f |= used[r]
        c = (~f & (f + 1)).bit_length() - 1
        bit = 1 << c
        for r in rs:
            used[r] |= bit
        colors[v] = c
    return np.asarray(colors, dtype=np.int64)


def _column_coloring_valid(bg: _Bipartite, colors: np.ndarray) -> bool:
    """True when no row holds two columns of the same color (vectorised)."""
    if bg.nnz == 0:
        return True
    c = colors[bg.ent_v]
    if np.any(c < 0):
        return False
    k = int(c.max()) + 1
    key = bg.ent_o * k + c
    if bg.no * k <= 50_000_000:
        return bool(np.bincount(key, minlength=bg.no * k).max() <= 1)
    key = np.sort(key)
    return bool(np.all(key[1:] != key[:-1]))


def _cyclic_coloring(bg: _Bipartite):
    """The periodic coloring ``j mod k`` for the smallest valid ``k`` near the lower bound.

    Optimal for banded patterns (natural-order greedy gives the same colors, but this is
    vectorised: a 1e6-column band is colored in milliseconds).
    """
    lb = bg.lower_bound
    if lb == 0:
        return None
    j = np.arange(bg.nv, dtype=np.int64)
    empty = bg.v_counts == 0
    for k in range(lb, min(lb + 3, bg.nv + 1)):
        colors = np.where(empty, -1, j % k)
        if _column_coloring_valid(bg, colors):
            return _compact(colors)
    return None


def _compact(colors):
    """Renumber the used colors 0..k-1 (keeping their order), -1 stays -1."""
    colors = np.asarray(colors, dtype=np.int64)
    c = colors[colors >= 0]
    if not c.size:
        return colors
    present = np.bincount(c) > 0
    if present.all():
        return colors
    remap = np.cumsum(present) - 1
    return np.where(colors >= 0, remap[np.maximum(colors, 0)], -1)


def _best_distance2(bg: _Bipartite, order, seed):
    cands, is_best = _order_candidates(order, bg.nv)
    rng = np.random.default_rng(seed)
    lb = bg.lower_bound
    best = None
    if is_best:
        cyc = _cyclic_coloring(bg)
        if cyc is not None:
            best = (cyc, "cyclic", _n_distinct(cyc))
            if best[2] <= lb:
                return best[0], best[1]
    for cand in cands:
        if isinstance(cand, str):
            if cand in ("natural", "random", "largest_first"):
                perm = _static_order(cand, bg.degree() if cand == "largest_first" else
                                     np.zeros(bg.nv), rng)
            else:
                if is_best and bg.sum_deg2 > _D2_BUDGET:
                    continue
                if cand == "dsatur":
                    perm = _dsatur_order(bg.nv, *bg.adjacency())
                else:
                    perm = _dynamic_order(cand, bg.nv, *bg.adjacency())
            name = cand
        else:
            perm, name = cand, "custom"
        colors = _greedy_distance2(bg, perm)
        k = _n_distinct(colors)
        if best is None or k < best[2]:
            best = (colors, name, k)
        if best[2] <= lb:
            break
    return best[0], best[1]


class _Lazy:
    """A finished coloring whose decompression data is built only if it is chosen."""

    def __init__(self, n_colors, build):
        self.n_colors = n_colors
        self.build = build


def _color_forward(pattern, order, seed):
    bg = _Bipartite.of(pattern)
    colors, name = _best_distance2(bg, order, seed)
    return _Lazy(_n_distinct(colors),
                 lambda: _build_forward(pattern, colors, name, bg=bg, check=False))


def _color_reverse(pattern, order, seed):
    bg = _Bipartite.of(pattern, transpose=True)
    colors, name = _best_distance2(bg, order, seed)
    return _Lazy(_n_distinct(colors),
                 lambda: _build_reverse(pattern, colors, name, bg=bg, check=False))


# ---------------------------------------------------------------------------------------
# Symmetric graphs: star and acyclic coloring
# ---------------------------------------------------------------------------------------
class _SymGraph:
    """Adjacency (CSR, no self loops) of a symmetric pattern with undirected edge ids."""

    def __init__(self, pattern: SparsityPattern | None = None, *, nv=None, rows=None, cols=None):
        if pattern is not None:
            nv = pattern.shape[0]
            off = pattern.rows != pattern.cols
            rows, cols = pattern.rows[off], pattern.cols[off]
        self.nv = nv
        self.rows, self.cols = rows, cols  # row-major sorted, symmetric, off-diagonal
        self.ptr = np.zeros(nv + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=nv), out=self.ptr[1:])
        self.idx = cols
        up = rows < cols
        self.n_edges = int(up.sum())
        eid = np.empty(rows.size, np.int64)
        eid[up] = np.arange(self.n_edges)
        # id of (r, c) with r > c is the id of its mirror (c, r)
        lo = np.flatnonzero(~up)
        eid[lo] = eid[_mirror(rows, cols, nv, self.ptr)[lo]]
        self.eid = eid
        deg = np.diff(self.ptr)
        self.sum_deg2 = int(np.sum(deg.astype(np.int64) ** 2))

    def degree(self):
        return np.diff(self.ptr)


def _star_coloring(g: _SymGraph, order: np.ndarray) -> np.ndarray:
    """Greedy star coloring (Gebremedhin et al. 2007, Algorithm 4.1), colors from 0."""
    nv = g.nv
    ptr = g.ptr.tolist()
    idx = g.idx.tolist()
    eid = g.eid.tolist()
    idx_np, eid_np = g.idx, g.eid
    color = [0] * nv  # 0 = uncolored, colors start at 1 internally
    color_np = np.zeros(nv, np.int64)
    forbidden = [-1] * (nv + 2)
    first_neighbor = [(-1, -1, -1)] * (nv + 2)
    treated = [-1] * nv
    star = [0] * max(g.n_edges, 1)
    star_np = np.zeros(max(g.n_edges, 1), np.int64)
    hub = []
    hub_np = np.full(max(g.n_edges, 1), -1, np.int64)
    big = _BIG_DEGREE

    def treat(v, w):  # forbid the colors of the neighbors of w
        a, b = ptr[w], ptr[w + 1]
        if b - a > big:
            cx = color_np[idx_np[a:b]]
            for c in np.unique(cx[cx > 0]).tolist():
                forbidden[c] = v
        else:
            for p in range(a, b):
                c = color[idx[p]]
                if c:
                    forbidden[c] = v
        treated[w] = v

    for v in order.tolist():
        pv, qv = ptr[v], ptr[v + 1]
        for p in range(pv, qv):
            w = idx[p]
            cw = color[w]
            if not cw:
                continue
            forbidden[cw] = v
            fp, fq, _ = first_neighbor[cw]
            if fp == v:  # two neighbors of v share color cw
                if treated[fq] != v:
                    treat(v, fq)
                treat(v, w)
            else:
                first_neighbor[cw] = (v, w, eid[p])
                a, b = ptr[w], ptr[w + 1]
                if b - a > big:
                    xs = idx_np[a:b]
                    cx = color_np[xs]
                    hubs = hub_np[star_np[eid_np[a:b]]]
                    mask = (xs != v) & (cx > 0) & (hubs == xs)
                    for c in np.unique(cx[mask]).tolist():
                        forbidden[c] = v
                else:
                    for p2 in range(a, b):
                        x = idx[p2]
                        cx = color[x]
                        if x == v or not cx:
                            continue
                        if x == hub[star[eid[p2]]]:
                            forbidden[cx] = v
        c = 1
        while forbidden[c] == v:
            c += 1
        color[v] = c
        color_np[v] = c
        # update the 2-colored stars around v
        for p in range(pv, qv):
            w = idx[p]
            cw = color[w]
            if not cw:
                continue
            e_vw = eid[p]
            a, b = ptr[w], ptr[w + 1]
            found = -1
            if b - a > big:
                xs = idx_np[a:b]
                hits = np.flatnonzero((color_np[xs] == c) & (xs != v))
                if hits.size:
                    found = a + int(hits[0])
            else:
                for p2 in range(a, b):
                    x = idx[p2]
                    if x != v and color[x] == c:
                        found = p2
                        break
            if found >= 0:
                s = star[eid[found]]
                hub[s] = w
                hub_np[s] = w
            else:
                fp, fq, e_pq = first_neighbor[cw]
                if fp == v and fq != w:
                    s = star[e_pq]
                    hub[s] = v
                    hub_np[s] = v
                else:
                    s = len(hub)
                    hub.append(-1 - max(v, w))  # trivial star: no hub yet
                    hub_np[s] = -1 - max(v, w)
            star[e_vw] = s
            star_np[e_vw] = s
    return np.asarray(color, dtype=np.int64) - 1


def _acyclic_coloring(g: _SymGraph, order: np.ndarray) -> np.ndarray:
    """Greedy acyclic coloring (Gebremedhin et al. 2007, Algorithm 3.1), colors from 0.

    The 2-colored trees are kept as a disjoint-set forest over edges.
    """
    nv = g.nv
    ptr = g.ptr.tolist()
    idx = g.idx.tolist()
    eid = g.eid.tolist()
    ne = max(g.n_edges, 1)
    color = [0] * nv
    forbidden = [-1] * (nv + 2)
    first_neighbor = [(-1, -1, -1)] * (nv + 2)
    first_visit = [(-1, -1)] * ne
    parent = list(range(ne))
    rank = [0] * ne

    def find(e):
        r = e
        while parent[r] != r:
            r = parent[r]
        while parent[e] != r:
            parent[e], e = r, parent[e]
        return r

    def union(r1, r2):
        if rank[r1] < rank[r2]:
            r1, r2 = r2, r1
        parent[r2] = r1
        if rank[r1] == rank[r2]:
            rank[r1] += 1

    for v in order.tolist():
        pv, qv = ptr[v], ptr[v + 1]
        for p in range(pv, qv):
            cw = color[idx[p]]
            if cw:
                forbidden[cw] = v
        for p in range(pv, qv):
            w = idx[p]
            if not color[w]:
                continue
            for p2 in range(ptr[w], ptr[w + 1]):
                cx = color[idx[p2]]
                if not cx or forbidden[cx] == v:
                    continue
                r = find(eid[p2])
                fp, fq = first_visit[r]
                if fp != v:
                    first_visit[r] = (v, w)
                elif fq != w:  # the tree of wx touches v through two edges: a cycle
                    forbidden[cx] = v
        c = 1
        while forbidden[c] == v:
            c += 1
        color[v] = c
        for p in range(pv, qv):  # grow the 2-colored stars around v
            w = idx[p]
            cw = color[w]
            if not cw:
                continue
            fp, fq, e_pq = first_neighbor[cw]
            if fp != v:
                first_neighbor[cw] = (v, w, eid[p])
            else:
                r1, r2 = find(eid[p]), find(e_pq)
                if r1 != r2:
                    union(r1, r2)
        for p in range(pv, qv):  # merge trees joined through v
            w = idx[p]
            if not color[w]:
                continue
            e_vw = eid[p]
            for p2 in range(ptr[w], ptr[w + 1]):
                x = idx[p2]
                if x != v and color[x] == c:
                    r1, r2 = find(e_vw), find(eid[p2])
                    if r1 != r2:
                        union(r1, r2)
    return np.asarray(color, dtype=np.int64) - 1


def _star_valid(g: _SymGraph, colors) -> bool:
    """Direct decompression works: distance-1, and every edge has a side where the other
    end is the only neighbor of its color (vectorised)."""
    r, c = g.rows, g.cols
    if np.any(colors[r] == colors[c]):
        return False
    count = _counter(r, colors[c], g.nv)
    return bool(np.all((count(r, colors[c]) == 1) | (count(c, colors[r]) == 1)))


def _acyclic_valid(g: _SymGraph, colors) -> bool:
    """Distance-1, and every 2-colored subgraph is a forest (vectorised)."""
    up = g.rows < g.cols
    r, c = g.rows[up], g.cols[up]
    if np.any(colors[r] == colors[c]):
        return False
    if not r.size:
        return True
    k = int(colors.max()) + 1
    keys, inv = np.unique(np.concatenate([r * k + colors[c], c * k + colors[r]]),
                          return_inverse=True)
    ne = r.size
    adj = sp.coo_array((np.ones(ne), (inv[:ne], inv[ne:])), shape=(keys.size, keys.size))
    n_comp, _ = csgraph.connected_components(adj, directed=False)
    return ne == keys.size - n_comp


def _cyclic_symmetric(g: _SymGraph, algo, lb):
    """The smallest ``k`` in a short range for which ``v mod k`` is a valid coloring.

    On banded patterns this is what natural-order greedy finds (``2h + 1`` star colors,
    ``h + 1`` acyclic colors for half-bandwidth ``h``), but vectorised: a 1e6-vertex
    Rosenbrock Hessian is colored in a fraction of a second instead of seconds.
    """
    if not g.n_edges:
        return None
    valid = _star_valid if algo == "star" else _acyclic_valid
    v = np.arange(g.nv, dtype=np.int64)
    hi = int(g.degree().max()) + 1
    for k in range(max(lb, 2), min(hi, lb + 12) + 1):
        colors = v % k
        if valid(g, colors):
            return colors, k
    return None


def _best_symmetric(g: _SymGraph, order, seed, algo, cyclic=False, greedy=True):
    cands, is_best = _order_candidates(order, g.nv)
    if is_best and g.nv > _LARGE_VERTICES // 5:
        cands = list(_BEST_LARGE)  # symmetric greedy loops are slower per vertex
    rng = np.random.default_rng(seed)
    lb = 2 if g.n_edges else (1 if g.nv else 0)
    if algo == "star" and g.n_edges:
        # an edge whose ends both have another neighbor closes a triangle or a path on 4
        # vertices: neither can be star-colored with 2 colors
        deg = g.degree()
        if np.any((deg[g.rows] >= 2) & (deg[g.cols] >= 2)):
            lb = 3
    fn = _star_coloring if algo == "star" else _acyclic_coloring
    best = None
    if cyclic and is_best:
        cyc = _cyclic_symmetric(g, algo, lb)
        if cyc is not None:
            best = (cyc[0], "cyclic", cyc[1])
            if cyc[1] <= lb or g.nv > _LARGE_VERTICES // 5:
                return best[0], best[1]
    if not greedy:
        return None if best is None else (best[0], best[1])
    for cand in cands:
        if isinstance(cand, str):
            if cand in ("natural", "random", "largest_first"):
                perm = _static_order(cand, g.degree(), rng)
            elif cand == "dsatur":
                perm = _dsatur_order(g.nv, g.ptr, g.idx)
            else:
                perm = _dynamic_order(cand, g.nv, g.ptr, g.idx)
            name = cand
        else:
            perm, name = cand, "custom"
        colors = fn(g, perm)
        k = _n_distinct(colors)
        if best is None or k < best[2]:
            best = (colors, name, k)
        if best[2] <= lb:
            break
    return best[0], best[1]


def _color_symmetric(pattern, order, seed, algo, graph=None, greedy=True):
    g = graph if graph is not None else _SymGraph(pattern)
    found = _best_symmetric(g, order, seed, algo, cyclic=True, greedy=greedy)
    if found is None:
        return None
    colors, name = found
    if not g.n_edges:  # diagonal pattern: one color for all vertices with a diagonal entry
        colors = np.zeros(pattern.shape[0], np.int64)
    # the pattern was symmetrized by color_hessian; the colors are still re-validated
    return _BUILDERS[algo](pattern, colors, name, check=False)


def _color_bidirectional(pattern, order, seed):
    """Best of star bicoloring and the dense-row / dense-column splits."""
    star = _star_bicoloring(pattern, order, seed)
    split = _split_bicoloring(pattern, order, seed)
    if split is not None and split.n_colors < star.n_colors:
        return split
    return star


def _split_bicoloring(pattern, order, seed):
    """Read the densest rows from VJPs and everything else from JVPs (or the transpose).

    With ``R`` the set of the ``k`` densest rows, the entries of ``R`` need a row coloring of
    ``J[R, :]`` and the others a column coloring of ``J[~R, :]`` only -- the rows of ``R`` no
    longer constrain the columns. An arrowhead (dense row + dense column + diagonal) costs
    1 VJP + 2 JVPs this way, where greedy star bicoloring can need ``n``. Several ``k`` are
    tried; the transpose (densest columns from JVPs, the rest from VJPs) too.
    """
    m, n = pattern.shape
    if pattern.nnz == 0:
        return None
    rows, cols = pattern.rows, pattern.cols
    best = None
    for by_cols in (False, True):
        # split the densest rows off to VJPs, or the densest columns off to JVPs
        owner = cols if by_cols else rows
        counts = np.bincount(owner, minlength=n if by_cols else m)
        dense = np.argsort(-counts, kind="stable")
        med = max(float(np.median(counts[counts > 0])), 1.0)
        ks = [k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
              if k < counts.size and counts[dense[k - 1]] > 2 * med]
        for k in ks:
            sel = np.zeros(counts.size, bool)
            sel[dense[:k]] = True
            keep = sel[owner]
            # entries read by JVPs: column coloring; the others by VJPs: row coloring
            fwd = keep if by_cols else ~keep
            cc, _ = _best_distance2(_Bipartite(rows[fwd], cols[fwd], (m, n)), order, seed)
            rc, _ = _best_distance2(
                _Bipartite(rows[~fwd], cols[~fwd], (m, n), transpose=True), order, seed
            )
            kc = _n_distinct(cc)
            total = kc + _n_distinct(rc)
            if best is not None and total >= best[0]:
                continue
            best = (total, np.concatenate([cc, np.where(rc >= 0, rc + kc, -1)]))
    if best is None:
        return None
    return _build_bidirectional(pattern, best[1], "dense_split")


def _star_bicoloring(pattern, order, seed):
    m, n = pattern.shape
    # augmented symmetric graph [[0, A^T], [A, 0]]: columns are vertices 0..n-1, rows n..n+m-1
    r, c = pattern.rows, pattern.cols
    ar = np.concatenate([c, r + n])
    ac = np.concatenate([r + n, c])
    key = np.sort(ar * (n + m) + ac)
    ar, ac = np.divmod(key, n + m)
    g = _SymGraph(nv=n + m, rows=ar, cols=ac)
    colors, name = _best_symmetric(g, order, seed, "star")
    return _build_bidirectional(pattern, colors, name)


# ---------------------------------------------------------------------------------------
# Decompression data (vectorised; derived from the colors alone, so also a validity check)
# ---------------------------------------------------------------------------------------
def _counter(owner, color, n_owner):
    """A lookup ``count(owner_q, color_q)`` of how many entries have that (owner, color)."""
    ok = color >= 0
    if not ok.all():
        owner, color = owner[ok], color[ok]
    k = int(color.max()) + 1 if color.size else 1
    key = owner * k + color
    if n_owner * k <= 50_000_000:
        table = np.bincount(key, minlength=n_owner * k).astype(np.int32)

        def count(o, c):
            good = (c >= 0) & (c < k)
            if good.all():
                return table[o * k + c]
            out = np.zeros(o.shape, np.int32)
            out[good] = table[o[good] * k + c[good]]
            return out
    else:
        uk, cnt = np.unique(key, return_counts=True)

        def count(o, c):
            out = np.zeros(o.shape, np.int64)
            good = (c >= 0) & (c < k)
            q = o[good] * k + c[good]
            pos = np.minimum(np.searchsorted(uk, q), max(uk.size - 1, 0))
            hit = uk[pos] == q if uk.size else np.zeros(q.shape, bool)
            out[good] = np.where(hit, cnt[pos], 0)
            return out

    return count


def _transposed(rows, cols, n, ptr=None):
    """CSR of the transpose of a row-major sorted ``n × n`` pattern, in linear time:
    ``(indptr, indices, source)`` with ``source[k]`` the entry that lands at position ``k``."""
    if ptr is None:
        ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    a = sp.csr_array((np.arange(rows.size, dtype=np.int64), cols, ptr), shape=(n, n))
    t = a.T.tocsr()  # csr_tocsc: indices come out sorted within each row
    return t.indptr, t.indices, t.data


def _mirror(rows, cols, n, ptr=None):
    """For a symmetric pattern: the index of the entry ``(c, r)`` of every entry ``(r, c)``."""
    return _transposed(rows, cols, n, ptr)[2]


def _symmetric(pattern: SparsityPattern) -> bool:
    """Whether a square pattern equals its transpose (linear time, no re-sorting)."""
    m, n = pattern.shape
    if m != n:
        return False
    if pattern.nnz == 0:
        return True
    indptr, indices, _ = _transposed(pattern.rows, pattern.cols, n)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(pattern.rows, minlength=n), out=ptr[1:])
    return bool(np.array_equal(indptr, ptr) and np.array_equal(indices, pattern.cols))


def _choose(opt_a, opt_b, ok_a, ok_b, n_ids, forced=None):
    """Pick, per entry, a valid option (a product id) so that few ids are used in total.

    Entries with one valid option force it; the rest are covered greedily by the id that
    covers most remaining entries (as SparseMatrixColorings' neutral-color post-processing).
    Returns ``(use_a, used)``.
    """
    used = np.zeros(max(n_ids, 1), bool)
    if forced is not None:
        used[forced] = True
    used[opt_a[ok_a & ~ok_b]] = True
    used[opt_b[ok_b & ~ok_a]] = True
    both = np.flatnonzero(ok_a & ok_b)
    a, b = opt_a[both], opt_b[both]
    while both.size:
        rem = ~(used[a] | used[b])
        if not rem.any():
            break
        cnt = np.bincount(np.concatenate([a[rem], b[rem]]), minlength=used.size)
        used[int(np.argmax(cnt))] = True
    use_a = ok_a & (used[np.where(ok_a, opt_a, 0)] | ~ok_b)
    return use_a, used


def _build_forward(pattern, colors, order, bg=None, check=True):
    m, n = pattern.shape
    colors = np.asarray(colors, dtype=np.int64).reshape(-1)
    if colors.size != n:
        raise ValueError(f"forward coloring needs one color per column ({n}), got {colors.size}.")
    bg = _Bipartite.of(pattern) if bg is None else bg
    colors = np.where(bg.v_counts > 0, colors, -1)
    colors = _compact(colors)
    if check and not _column_coloring_valid(bg, colors):
        raise ValueError(
            "Invalid forward coloring: two columns sharing a row have the same color. "
            "Recompute it with color_jacobian(pattern, mode='forward')."
        )
    k = _n_distinct(colors)
    gather = colors[pattern.cols] * m + pattern.rows
    return ColoringResult(pattern, "forward", order, colors, np.full(m, -1), k, 0, gather, None,
                          colors, colors[pattern.cols])


def _build_reverse(pattern, colors, order, bg=None, check=True):
    m, n = pattern.shape
    colors = np.asarray(colors, dtype=np.int64).reshape(-1)
    if colors.size != m:
        raise ValueError(f"reverse coloring needs one color per row ({m}), got {colors.size}.")
    bg = _Bipartite.of(pattern, transpose=True) if bg is None else bg
    colors = np.where(bg.v_counts > 0, colors, -1)
    colors = _compact(colors)
    if check and not _column_coloring_valid(bg, colors):
        raise ValueError(
            "Invalid reverse coloring: two rows sharing a column have the same color. "
            "Recompute it with color_jacobian(pattern, mode='reverse')."
        )
    k = _n_distinct(colors)
    gather = colors[pattern.rows] * n + pattern.cols
    return ColoringResult(pattern, "reverse", order, np.full(n, -1), colors, 0, k, gather, None,
                          colors, colors[pattern.rows])


def _build_bidirectional(pattern, colors, order):
    m, n = pattern.shape
    raw = np.asarray(colors, dtype=np.int64).reshape(-1)
    if raw.size != n + m:
        raise ValueError(
            f"bidirectional coloring needs n + m = {n + m} colors (columns then rows), got "
            f"{raw.size}."
        )
    cc, rc = raw[:n], raw[n:]
    r, c = pattern.rows, pattern.cols
    nnz = pattern.nnz
    k = int(raw.max()) + 1 if raw.size else 0
    # forward option: read (J s_{cc[j]})[i]; valid when j is the only column of its color in row i
    ok_f = _counter(r, cc[c], m)(r, cc[c]) == 1
    # reverse option: read (s_{rc[i]}^T J)[j]; valid when i is the only row of its color in col j
    ok_r = _counter(c, rc[r], n)(c, rc[r]) == 1
    bad = ~(ok_f | ok_r)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Invalid bidirectional coloring: entry ({r[i]}, {c[i]}) cannot be read from any "
            "product. Recompute it with color_jacobian(pattern, mode='bidirectional')."
        )
    use_f, used = _choose(cc[c], rc[r] + k, ok_f, ok_r, 2 * k)
    fmap = np.full(k + 1, -1, np.int64)
    fu = np.flatnonzero(used[:k])
    fmap[fu] = np.arange(fu.size)
    rmap = np.full(k + 1, -1, np.int64)
    ru = np.flatnonzero(used[k:2 * k])
    rmap[ru] = np.arange(ru.size)
    nf, nr = int(fu.size), int(ru.size)
    col_colors = np.where(cc >= 0, fmap[cc], -1)
    row_colors = np.where(rc >= 0, rmap[rc], -1)
    gather = np.where(
        use_f,
        col_colors[c] * m + r,
        nf * m + row_colors[r] * n + c,
    ) if nnz else np.zeros(0, np.int64)
    labels = np.where(use_f, col_colors[c], nf + row_colors[r]) if nnz else gather
    return ColoringResult(pattern, "bidirectional", order, col_colors, row_colors, nf, nr,
                          gather, None, raw, labels)


def _check_symmetric(pattern, colors, mode, check=True):
    n = pattern.shape[0]
    if check and not _symmetric(pattern):
        raise ValueError(f"{mode} coloring needs a symmetric pattern; use pattern.symmetrize().")
    colors = np.asarray(colors, dtype=np.int64).reshape(-1)
    if colors.size != n:
        raise ValueError(f"{mode} coloring needs one color per vertex ({n}), got {colors.size}.")
    return colors


def _build_star(pattern, colors, order, check=True):
    n = pattern.shape[0]
    raw = _check_symmetric(pattern, colors, "star", check)
    r, c = pattern.rows, pattern.cols
    k = int(raw.max()) + 1 if raw.size else 0
    count = _counter(r[r != c], raw[c[r != c]], n)
    diag = r == c
    # option a: read (H s_{color[c]})[r]; valid when c is r's only neighbor of that color
    ok_a = np.where(diag, count(r, raw[r]) == 0, count(r, raw[c]) == 1) & (raw[c] >= 0)
    # option b: read (H s_{color[r]})[c]; valid when r is c's only neighbor of that color
    ok_b = ~diag & (count(c, raw[r]) == 1) & (raw[r] >= 0)
    # the two triangles must make the same choice: decide on the lower one, mirror it
    lower = np.flatnonzero(r >= c)
    bad = ~(ok_a[lower] | ok_b[lower])
    if bad.any():
        i = lower[np.flatnonzero(bad)[0]]
        raise ValueError(
            f"Invalid star coloring: Hessian entry ({r[i]}, {c[i]}) cannot be read from any "
            "product. Recompute it with color_hessian(pattern, method='star')."
        )
    lr, lc = r[lower], c[lower]
    use_a, used = _choose(raw[lc], raw[lr], ok_a[lower], ok_b[lower], k)
    remap = np.full(k + 1, -1, np.int64)
    u = np.flatnonzero(used[:k])
    remap[u] = np.arange(u.size)
    seed_colors = np.where(raw >= 0, remap[raw], -1)
    g_lower = np.where(use_a, seed_colors[lc] * n + lr, seed_colors[lr] * n + lc)
    gather = np.empty(pattern.nnz, np.int64)
    gather[lower] = g_lower
    upper = np.flatnonzero(r < c)
    mirror = _mirror(r, c, n)
    gather[upper] = gather[mirror[upper]]
    labels = gather // max(n, 1)
    return ColoringResult(pattern, "star", order, seed_colors, np.full(n, -1), int(u.size), 0,
                          gather, None, raw, labels)


def _pointer_jump(value, ptr):
    """Resolve ``value[i] = value[ptr[i]]`` for every unresolved (``-1``) entry, in log steps."""
    value = value.copy()
    ptr = ptr.copy()
    todo = np.flatnonzero(value < 0)
    while todo.size:
        value[todo] = value[ptr[todo]]
        ptr[todo] = ptr[ptr[todo]]
        todo = todo[value[todo] < 0]
    return value


def _build_acyclic(pattern, colors, order, check=True):
    n = pattern.shape[0]
    raw = _check_symmetric(pattern, colors, "acyclic", check)
    if np.any(raw < 0):
        raise ValueError("acyclic coloring needs a color >= 0 for every vertex.")
    k = int(raw.max()) + 1 if raw.size else 0
    r, c = pattern.rows, pattern.cols
    diag = r == c
    bad = ~diag & (raw[r] == raw[c])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Invalid acyclic coloring: adjacent vertices {r[i]} and {c[i]} share color "
            f"{raw[r[i]]}. Recompute it with color_hessian(pattern, method='acyclic')."
        )
    lower = np.flatnonzero(r > c)
    lr, lc = r[lower], c[lower]
    ne = lower.size
    # nodes: (vertex, other color) = one compressed entry (H s_other)[vertex]
    ka = lr * k + raw[lc]
    kb = lc * k + raw[lr]
    keys, inv = np.unique(np.concatenate([ka, kb]), return_inverse=True)
    na, nb = inv[:ne], inv[ne:]
    nn = keys.size
    if nn:
        adj = sp.coo_array((np.ones(ne), (na, nb)), shape=(nn, nn)).tocsr()
        adj = (adj + adj.T).tocsr()
        n_comp, comp = csgraph.connected_components(adj, directed=False)
    else:
        n_comp, comp = 0, np.zeros(0, np.int64)
    if ne != nn - n_comp:
        raise ValueError(
            "Invalid acyclic coloring: a 2-colored subgraph has a cycle, so substitution "
            "cannot recover it. Recompute it with color_hessian(pattern, method='acyclic')."
        )
    if nn:
        deg = np.bincount(np.concatenate([na, nb]), minlength=nn)
        # root each tree at a leaf (lowest degree, then lowest index): path-like trees are
        # then summed from the far end, as sequential substitution would
        first = np.lexsort((np.arange(nn), deg, comp))
        is_first = np.ones(nn, bool)
        is_first[1:] = comp[first[1:]] != comp[first[:-1]]
        roots = first[is_first]
        sr = nn  # super root joining the trees into one DFS
        tr = sp.coo_array(
            (np.ones(ne + roots.size), (np.concatenate([na, np.full(roots.size, sr)]),
                                        np.concatenate([nb, roots]))),
            shape=(nn + 1, nn + 1),
        ).tocsr()
        pre, pred = csgraph.depth_first_order(tr, sr, directed=False, return_predecessors=True)
        pre = pre[1:]
        pos = np.empty(nn + 1, np.int64)
        pos[pre] = np.arange(nn)
        pos[sr] = nn
        par = pred[:nn].astype(np.int64)
        par[par < 0] = sr
        # depth by pointer jumping
        anc = np.concatenate([par, [sr]])
        depth = np.concatenate([(par != sr).astype(np.int64), [0]])
        while True:
            nxt = anc[anc]
            if np.array_equal(nxt, anc):
                break
            depth = depth + depth[anc] * (anc != sr)
            anc = nxt
        depth = depth[:nn]
        # end of each subtree in preorder: the next sibling, else the parent's end
        order_sib = np.lexsort((pos[:nn], par))
        ps = par[order_sib]
        nxt_sib = np.full(nn, -1, np.int64)
        same = ps[1:] == ps[:-1]
        nxt_sib[order_sib[:-1][same]] = pos[order_sib[1:][same]]
        val = np.concatenate([nxt_sib, [nn]])
        is_root = par == sr
        val[:nn][is_root & (val[:nn] < 0)] = nn
        end = _pointer_jump(val, np.concatenate([par, [sr]]))[:nn]
        # end of each tree = end of its root
        sign = np.where(depth % 2 == 0, 1.0, -1.0)
        node_index = (keys % k) * n + keys // k  # (vertex, other color) -> compressed (k, n)
        # one row per tree: trees of similar size share a block of width 2**g > size
        t_start = pos[roots]
        t_order = np.argsort(t_start)
        t_start = t_start[t_order]
        t_size = (end[roots] - pos[roots])[t_order]
        g = np.ceil(np.log2(t_size + 1)).astype(np.int64)
        blocks = []
        t_flat = np.empty(t_start.size, np.int64)  # flat offset of each tree's row
        offset = 0
        for gv in np.unique(g):
            trees = np.flatnonzero(g == gv)
            w = int(2 ** gv)
            t_flat[trees] = offset + np.arange(trees.size) * w
            slot = np.full((trees.size, w), k * n, np.int64)  # pads read a zero
            sgn = np.zeros((trees.size, w))
            q = np.arange(w)[None, :]
            valid = q < t_size[trees][:, None]
            src = (t_start[trees][:, None] + q)[valid]  # preorder positions
            slot[valid] = node_index[pre[src]]
            sgn[valid] = sign[pre[src]]
            blocks.append((_ro(slot), _ro(sgn, np.float64)))
            offset += trees.size * w
        # flat slot of every preorder position
        tree_of_pos = np.searchsorted(t_start, np.arange(nn), side="right") - 1
        flat_of_pos = t_flat[tree_of_pos] + (np.arange(nn) - t_start[tree_of_pos])
        flat_of_pos = np.concatenate([flat_of_pos, [0]])
        # each tree edge: child = the deeper end
        child = np.where(depth[na] > depth[nb], na, nb)
        cpos = flat_of_pos[pos[child]]
        # end[child] is in the same tree, or the tree's end = the first pad of its row
        t_child = tree_of_pos[pos[child]]
        cend = t_flat[t_child] + (end[child] - t_start[t_child])
        csign = sign[child]
    else:
        blocks, cpos, cend, csign = [], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    subst = Substitution(
        blocks=tuple(blocks),
        child_pos=_ro(cpos),
        child_end=_ro(cend),
        child_sign=_ro(csign, np.float64),
    )
    ext = k * n  # substitution values come after the compressed vector
    gather = np.empty(pattern.nnz, np.int64)
    gather[diag] = raw[r[diag]] * n + r[diag]
    gather[lower] = ext + np.arange(ne)
    upper = np.flatnonzero(r < c)
    gather[upper] = gather[_mirror(r, c, n)[upper]]
    labels = raw[c]
    return ColoringResult(pattern, "acyclic", order, raw, np.full(n, -1), k, 0, gather, subst,
                          raw, labels)


_BUILDERS = {
    "forward": _build_forward,
    "reverse": _build_reverse,
    "bidirectional": _build_bidirectional,
    "star": _build_star,
    "acyclic": _build_acyclic,
}


def coloring_from_colors(pattern: SparsityPattern, mode: str, colors) -> ColoringResult:
    """Build (and validate) a [`ColoringResult`][] from given colors.

    ``colors`` is one color per column (``"forward"``), row (``"reverse"``), vertex
    (``"star"``, ``"acyclic"``; the pattern is symmetrized) or columns then rows
    (``"bidirectional"``). Raises ``ValueError`` when the colors cannot be decompressed.
    """
    if mode not in _ALL_MODES:
        raise ValueError(f"mode must be one of {_ALL_MODES}, got {mode!r}.")
    pattern = _check_pattern(pattern, "coloring_from_colors")
    if mode in HESSIAN_METHODS and not _symmetric(pattern):
        pattern = pattern.symmetrize()
    return _BUILDERS[mode](pattern, colors, "custom")
