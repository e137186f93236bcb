"""The two graphs a pattern is colored on, over CSR arrays, and vectorised validity checks.

[`BipartiteGraph`][]: a Jacobian pattern, whose columns (or rows) get a distance-2 coloring.
[`AdjacencyGraph`][]: a symmetric pattern without its diagonal, for star/acyclic coloring.
Both offer what a vertex order needs (``nv``, ``degree()``, ``adjacency()``,
``adjacency_affordable``), so that one order object serves both
(see ``_orders.py``). The checks here are numpy, independent of the coloring kernels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from .._pattern import SparsityPattern
from . import _kernels

# Above this many distance-2 pairs the explicit column-intersection graph is not built, and
# the orders that need it (degree-based ones) use the cheap degree upper bound instead.
D2_BUDGET = 20_000_000


def _n_distinct(colors):
    c = colors[colors >= 0]
    return int(c.max()) + 1 if c.size else 0


class BipartiteGraph:
    """A pattern as a bipartite graph, for coloring its columns (or, transposed, its rows).

    "Vertices" are the side being colored, "others" the side whose entries must not repeat a
    color. ``rows``/``cols`` must be row-major sorted (as in a `SparsityPattern`); no
    transposed pattern is ever built (that would sort all entries again).
    """

    kind = "bipartite"

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
    def of(cls, pattern: SparsityPattern, transpose: bool = False) -> BipartiteGraph:
        return cls(pattern.rows, pattern.cols, pattern.shape, transpose)

    @property
    def lower_bound(self) -> int:
        """Largest number of entries of one "other" (they all need different colors)."""
        return int(self.o_counts.max()) if self.no and self.nnz else 0

    @property
    def adjacency_affordable(self) -> bool:
        """Whether the explicit distance-2 graph is small enough to build."""
        return self.sum_deg2 <= D2_BUDGET

    def degree(self) -> np.ndarray:
        """Distance-2 degree of each vertex (an upper bound when the graph is too big)."""
        if self.adjacency_affordable:
            if self._adj is None:
                d = _kernels.distance2_degree(self.nv, self.v_ptr, self.v_idx, self.o_ptr,
                                              self.o_idx)
                if d is not None:
                    return d
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


def _column_coloring_valid(bg: BipartiteGraph, colors: np.ndarray) -> bool:
    """True when no row holds two columns of the same color (vectorised)."""
    if bg.nnz == 0:
        return True
    c = colors[bg.ent_v]
    if np.any(c < 0):
        return False
    k = int(c.max()) + 1
    key = bg.ent_o * k + c
    if bg.no * k <= 4 * bg.nnz + 100_000:
        return bool(np.bincount(key, minlength=bg.no * k).max() <= 1)
    key = np.sort(key)
    return bool(np.all(key[1:] != key[:-1]))


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


class AdjacencyGraph:
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
        self.idx = np.asarray(cols, np.int64)
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

    kind = "adjacency"
    adjacency_affordable = True

    def degree(self):
        return np.diff(self.ptr)

    def adjacency(self):
        """The graph itself (CSR without self loops)."""
        return self.ptr, self.idx

    @property
    def lower_bound(self) -> int:
        """Any coloring needs 2 colors once there is an edge; a star coloring is computed
        separately (``star_lower_bound``)."""
        return 2 if self.n_edges else (1 if self.nv else 0)

    def clique_bound(self) -> int:
        """The largest clique found greedily from 32 start vertices (the 16 of largest
        degree and 16 spread over the index range): every coloring needs that many colors."""
        if not self.n_edges:
            return self.lower_bound
        if "_clique" in self.__dict__:
            return self.__dict__["_clique"]
        deg = self.degree()
        top = np.argsort(-deg, kind="stable")[:16]
        spread = np.linspace(0, self.nv - 1, 16).astype(np.int64)
        starts = np.unique(np.concatenate([top, spread]))
        self.__dict__["_clique"] = max(
            self.lower_bound, _kernels.clique_lower_bound(self.nv, self.ptr, self.idx, starts))
        return self.__dict__["_clique"]

    def symmetric_lower_bound(self, algo: str) -> int:
        """A lower bound on the colors of a star (``algo="star"``) or acyclic coloring
        (computed once per graph)."""
        key = "_lb_" + algo
        if key not in self.__dict__:
            own = self.star_lower_bound() if algo == "star" else self.lower_bound
            self.__dict__[key] = max(own, self.clique_bound())
        return self.__dict__[key]

    def star_lower_bound(self) -> int:
        """3 when an edge has two ends with another neighbor (a path on 4 vertices or a
        triangle: neither is star-colorable with 2 colors), else ``lower_bound``."""
        if self.n_edges:
            deg = self.degree()
            if np.any((deg[self.rows] >= 2) & (deg[self.cols] >= 2)):
                return 3
        return self.lower_bound

    @classmethod
    def augmented(cls, pattern: SparsityPattern) -> AdjacencyGraph:
        """The bipartite graph of a Jacobian as one symmetric graph ``[[0, Jᵀ], [J, 0]]``:
        columns are vertices ``0..n-1``, rows ``n..n+m-1`` (for star bicoloring)."""
        m, n = pattern.shape
        r, c = pattern.rows, pattern.cols
        ar = np.concatenate([c, r + n])
        ac = np.concatenate([r + n, c])
        key = np.sort(ar * (n + m) + ac)
        ar, ac = np.divmod(key, n + m)
        return cls(nv=n + m, rows=ar, cols=ac)

def _star_valid(g: AdjacencyGraph, colors) -> bool:
    """Direct decompression works: distance-1, and every edge has a side where the other
    end is the only neighbor of its color (vectorised)."""
    if colors.size and colors.min() >= 0:
        fast = _kernels.star_valid(g.nv, g.ptr, g.idx, colors, int(colors.max()) + 1)
        if fast is not None:
            return fast
    r, c = g.rows, g.cols
    if np.any(colors[r] == colors[c]):
        return False
    count = _counter(r, colors[c], g.nv)
    return bool(np.all((count(r, colors[c]) == 1) | (count(c, colors[r]) == 1)))


def _acyclic_valid(g: AdjacencyGraph, colors) -> bool:
    """Distance-1, and every 2-colored subgraph is a forest (compiled, else vectorised)."""
    if colors.size and colors.min() >= 0:
        fast = _kernels.acyclic_valid(g.nv, g.ptr, g.idx, colors, int(colors.max()) + 1)
        if fast is not None:
            return fast
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


# -- (owner, color) counts and transposes, shared by the checks and the decompression data --
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
    ``(indptr, indices, source)`` with ``source[k]`` the entry that lands at position ``k``.

    A stable sort of the column indices (numpy's radix sort for integers) keeps the rows in
    order within each column."""
    source = _kernels.transpose_source(n, cols)
    if source is None:
        source = np.argsort(cols, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(cols, minlength=n), out=indptr[1:])
    return indptr, rows[source], source


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


