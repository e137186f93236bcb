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

import warnings

import numpy as np

from .._errors import DenseColoringWarning
from .._pattern import SparsityPattern
from . import _kernels
from ._decompression import BUILDERS, build_bidirectional, build_forward, build_reverse
from ._graphs import (
    AdjacencyGraph,
    BipartiteGraph,
    _acyclic_valid,
    _column_coloring_valid,
    _compact,
    _n_distinct,
    _star_valid,
    _symmetric,
)
from ._orders import candidates
from ._result import _ALL_MODES, HESSIAN_METHODS, JACOBIAN_MODES, ColoringResult


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
    with _kernels.pattern_size(pattern):
        res = _jacobian(pattern, mode, order, seed)
    if warn:
        _maybe_warn(res, min(m, n), "Jacobian")
    return res


def _jacobian(pattern, mode, order, seed):
    n = pattern.shape[1]
    if mode == "forward":
        return _color_forward(pattern, order, seed).build()
    if mode == "reverse":
        return _color_reverse(pattern, order, seed).build()
    if mode == "bidirectional":
        return _color_bidirectional(pattern, order, seed)
    f = _color_forward(pattern, order, seed)
    lazy = f
    # a row coloring needs at least as many colors as the densest column has entries:
    # skipped when that cannot beat the column coloring (ties go to forward)
    col_max = int(np.bincount(pattern.cols, minlength=n).max()) if pattern.nnz else 0
    if col_max < f.n_colors:
        r = _color_reverse(pattern, order, seed)
        if r.n_colors < f.n_colors:
            lazy = r
    if _bicoloring_promising(pattern, lazy.n_colors):
        b = _color_bidirectional(pattern, order, seed)
        if b.n_colors < lazy.n_colors:
            return b
    return lazy.build()


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
    with _kernels.pattern_size(pattern):
        if not _symmetric(pattern):
            pattern = pattern.symmetrize()
        res = _hessian(pattern, method, order, seed)
    if warn:
        _maybe_warn(res, pattern.shape[0], "Hessian")
    return res


def _hessian(pattern, method, order, seed):
    if method in HESSIAN_METHODS:
        return _color_symmetric(pattern, order, seed, method).build()
    # "auto": acyclic when it saves at least two colors over star. Substitution costs a
    # gather and a cumulative sum over every tree per call: about as much as one cheap HVP
    # (Rosenbrock, n = 1e4: acyclic 2 colors 291 us vs star 3 colors 86 us). It cannot save
    # two when star coloring is within one color of the clique bound.
    #
    # The same choice as coloring both fully, for less: an acyclic coloring in the first
    # order (A0 colors) caps the star search at A0 + 1 (a star coloring needing more loses
    # anyway), and the star count S caps the rest of the acyclic search at S - 2.
    g = AdjacencyGraph(pattern)
    if isinstance(order, str) and order == "best" and g.nv > _PYTHON_LARGE \
            and not _kernels.available():
        a0 = _color_symmetric(pattern, order, seed, "acyclic", graph=g)  # periodic only
    else:
        a0 = _color_symmetric(pattern, order, seed, "acyclic", graph=g, limit=1)
    star = _color_symmetric(pattern, order, seed, "star", graph=g, cap=a0.n_colors + 1)
    if star is None:  # every star coloring needs >= A0 + 2 colors: acyclic wins
        return _color_symmetric(pattern, order, seed, "acyclic", graph=g).build()
    if star.n_colors > 3 and star.n_colors - 2 >= g.clique_bound():
        acyclic = _color_symmetric(pattern, order, seed, "acyclic", graph=g,
                                   cap=star.n_colors - 2)
        if acyclic is not None:
            return acyclic.build()
    return star.build()


def _bicoloring_promising(pattern, best: int) -> bool:
    """Whether JVPs and VJPs together may beat ``best`` products of one direction.

    Bicoloring pays when dense rows spoil the row coloring and dense columns the column
    coloring at once (an arrowhead: 3 products instead of n). Without a dense row the
    forward coloring already reaches its lower bound (the largest row) or close to it, and
    likewise without a dense column; small patterns are always tried (cheap).
    """
    if best <= 2:
        return False
    m, n = pattern.shape
    if m + n <= 1_000:
        return True
    rc = pattern.row_counts()
    cc = np.bincount(pattern.cols, minlength=n)
    return bool(_has_dense(rc) and _has_dense(cc))


def _has_dense(counts) -> bool:
    """Some line holds more than 4 times the median number of entries (and more than 8)."""
    c = counts[counts > 0]
    return bool(c.size and c.max() > max(4 * np.median(c), 8))


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


def _cyclic_coloring(bg: BipartiteGraph):
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


class _Lazy:
    """A finished coloring whose decompression data is built only if it is chosen."""

    def __init__(self, n_colors, build):
        self.n_colors = n_colors
        self.build = build


def _color_forward(pattern, order, seed):
    bg = BipartiteGraph.of(pattern)
    colors, name = _best_distance2(bg, order, seed)
    return _Lazy(_n_distinct(colors),
                 lambda: build_forward(pattern, colors, name, bg=bg, check=False))


def _color_reverse(pattern, order, seed):
    bg = BipartiteGraph.of(pattern, transpose=True)
    colors, name = _best_distance2(bg, order, seed)
    return _Lazy(_n_distinct(colors),
                 lambda: build_reverse(pattern, colors, name, bg=bg, check=False))


# ---------------------------------------------------------------------------------------
# Symmetric graphs: star and acyclic coloring
# ---------------------------------------------------------------------------------------
def _cyclic_symmetric(g: AdjacencyGraph, algo, lb, below=None):
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
    top = min(hi, lb + 12) if below is None else min(hi, lb + 12, below - 1)
    for k in range(max(lb, 2), top + 1):
        colors = v % k
        if valid(g, colors):
            return colors, k
    return None


def _best(graph, order, seed, color, lower_bound, first=None, thorough=False, cap=None,
          limit=None):
    """Greedy coloring of ``graph`` in each candidate order; the fewest colors wins.

    One function for both graphs: ``color(graph, order, cap)`` runs the kernel (it may give
    up, returning None, once more than ``cap`` colors are needed), ``first`` is an already
    found coloring ``(colors, name)`` (the periodic one), and the search stops as soon as a
    coloring reaches ``lower_bound``. An order only matters if it beats the best so far, so
    each order after the first is capped at one color less than the best (the result is the
    same as running every order in full). Only colorings of at most ``cap`` colors count;
    ``limit``: try only that many orders. Returns ``(colors, order name)``, or None when no
    order reaches ``cap``.
    """
    orders, _ = candidates(order, graph, seed, thorough)
    if limit is not None:
        orders = orders[:limit]
    best = None
    if first is not None:
        best = (first[0], first[1], _n_distinct(first[0]))
        if best[2] <= lower_bound:
            return best[0], best[1]
    for o in orders:
        c = cap if best is None else best[2] - 1 if cap is None else min(cap, best[2] - 1)
        colors = color(graph, o, c)
        if colors is None:
            continue
        k = _n_distinct(colors)
        if (c is None or k <= c) and (best is None or k < best[2]):
            best = (colors, o.name, k)
        if best is not None and best[2] <= lower_bound:
            break
    return None if best is None else (best[0], best[1])


def _distance2(bg: BipartiteGraph, o, cap):
    perm = o.vertices(bg)
    return _kernels.greedy_distance2(bg.nv, bg.no, bg.v_ptr, bg.v_idx, bg.o_ptr, bg.o_idx, perm)


def _symmetric_kernel(algo):
    kernel = _kernels.star_coloring if algo == "star" else _kernels.acyclic_coloring

    def color(g: AdjacencyGraph, o, cap):
        """The ``algo`` coloring of ``g`` in order ``o`` (None: more than ``cap`` colors),
        computed once per graph, order and cap (auto's star and acyclic searches share
        them)."""
        memo = g.__dict__.setdefault("_coloring_cache", {})
        key = (algo, o.name)
        cap = g.nv + 1 if cap is None else cap
        hit = memo.get(key)
        if hit is not None:
            colors, tried = hit
            if colors is not None:
                return colors if _n_distinct(colors) <= cap else None
            if cap <= tried:
                return None  # gave up at a larger cap already
        colors = kernel(g.nv, g.ptr, g.idx, g.eid, g.n_edges, o.vertices(g), cap)
        colors = colors if colors.size == g.nv else None
        memo[key] = (colors, cap)
        return colors

    return color


def _best_distance2(bg: BipartiteGraph, order, seed, thorough=False):
    first = None
    if isinstance(order, str) and order == "best":
        cyc = _cyclic_coloring(bg)
        first = None if cyc is None else (cyc, "cyclic")
    return _best(bg, order, seed, _distance2, bg.lower_bound, first, thorough)


def _best_symmetric(g: AdjacencyGraph, order, seed, algo, thorough=False, cyclic=True,
                    cap=None, limit=None):
    """The fewest-color star or acyclic coloring over the candidate orders (and the periodic
    one), or None when none needs at most ``cap`` colors. ``limit``: only that many orders,
    no periodic coloring."""
    lb = g.symmetric_lower_bound(algo)
    color = _symmetric_kernel(algo)
    is_best = cyclic and limit is None and isinstance(order, str) and order == "best"
    if is_best and g.nv > _PYTHON_LARGE and not _kernels.available():
        # without numba the greedy loops are slow: the vectorised periodic coloring only
        cyc = _cyclic_symmetric(g, algo, lb)
        if cyc is not None:
            return (cyc[0], "cyclic") if cap is None or cyc[1] <= cap else None
    found = _best(g, order, seed, color, lb, None, thorough, cap, limit)
    if is_best:
        # the periodic coloring v mod k, for the k below the greedy count (it wins on some
        # grids: 3 acyclic colors on a 5-point stencil where greedy needs 4)
        k = _n_distinct(found[0]) if found is not None else cap + 1
        if k > lb:
            cyc = _cyclic_symmetric(g, algo, lb, below=k)
            if cyc is not None:
                return cyc[0], "cyclic"
    return found


# without compiled kernels, symmetric graphs above this many vertices get the periodic
# coloring only (the Python greedy loops are too slow there)
_PYTHON_LARGE = 20_000


def _color_symmetric(pattern, order, seed, algo, graph=None, cap=None, limit=None):
    """Star or acyclic coloring; the decompression data is built only if it is chosen.
    None when no coloring of at most ``cap`` colors was found (see [`_best`][])."""
    g = graph if graph is not None else AdjacencyGraph(pattern)
    found = _best_symmetric(g, order, seed, algo, cap=cap, limit=limit)
    if found is None:
        return None
    colors, name = found
    if not g.n_edges:  # diagonal pattern: one color for all vertices with a diagonal entry
        colors = np.zeros(pattern.shape[0], np.int64)
    # the pattern was symmetrized by color_hessian; the colors are still re-validated
    return _Lazy(_n_distinct(colors),
                 lambda: BUILDERS[algo](pattern, colors, name, check=False))


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
            cc, _ = _best_distance2(BipartiteGraph(rows[fwd], cols[fwd], (m, n)), order, seed,
                                    thorough=True)
            rc, _ = _best_distance2(
                BipartiteGraph(rows[~fwd], cols[~fwd], (m, n), transpose=True), order, seed,
                thorough=True,
            )
            kc = _n_distinct(cc)
            total = kc + _n_distinct(rc)
            if best is not None and total >= best[0]:
                continue
            best = (total, np.concatenate([cc, np.where(rc >= 0, rc + kc, -1)]))
    if best is None:
        return None
    return build_bidirectional(pattern, best[1], "dense_split")


def _star_bicoloring(pattern, order, seed):
    g = AdjacencyGraph.augmented(pattern)
    # (no periodic coloring here: its raw count ties greedy's but loses more colors in
    # the postprocessing)
    colors, name = _best_symmetric(g, order, seed, "star", thorough=True, cyclic=False)
    return build_bidirectional(pattern, colors, name)


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
    with _kernels.pattern_size(pattern):
        return BUILDERS[mode](pattern, colors, "custom")
