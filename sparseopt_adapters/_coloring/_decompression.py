"""Decompression data of a coloring: which product every nonzero is read from.

Derived from the colors alone (vectorised numpy), so building it is also a validity check.
The postprocessing that neutralises colours decompression never reads lives here
([`_choose`][]): a star or bidirectional color none of whose entries is needed is dropped
from the seeds (its vertices get color ``-1``), which saves a product.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from . import _kernels
from ._graphs import (
    BipartiteGraph,
    _column_coloring_valid,
    _compact,
    _counter,
    _mirror,
    _n_distinct,
    _symmetric,
)
from ._result import ColoringResult, Substitution, _ro


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


def build_forward(pattern, colors, order, bg=None, check=True):
    m, n = pattern.shape
    colors = np.asarray(colors, dtype=np.int64).reshape(-1)
    if colors.size != n:
        raise ValueError(f"forward coloring needs one color per column ({n}), got {colors.size}.")
    bg = BipartiteGraph.of(pattern) if bg is None else bg
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


def build_reverse(pattern, colors, order, bg=None, check=True):
    m, n = pattern.shape
    colors = np.asarray(colors, dtype=np.int64).reshape(-1)
    if colors.size != m:
        raise ValueError(f"reverse coloring needs one color per row ({m}), got {colors.size}.")
    bg = BipartiteGraph.of(pattern, transpose=True) if bg is None else bg
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


def build_bidirectional(pattern, colors, order):
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
    if check and not _symmetric(pattern):
        raise _not_symmetric(mode)
    return _one_color_per_vertex(pattern, colors, mode)


def _one_color_per_vertex(pattern, colors, mode):
    n = pattern.shape[0]
    colors = np.asarray(colors, dtype=np.int64).reshape(-1)
    if colors.size != n:
        raise ValueError(f"{mode} coloring needs one color per vertex ({n}), got {colors.size}.")
    return colors


def _not_symmetric(mode):
    return ValueError(f"{mode} coloring needs a symmetric pattern; use pattern.symmetrize().")


def _row_ptr(pattern):
    ptr = np.zeros(pattern.shape[0] + 1, np.int64)
    np.cumsum(pattern.row_counts(), out=ptr[1:])
    return ptr


def _star_invalid(pattern, i):
    r, c = pattern.rows[i], pattern.cols[i]
    return ValueError(
        f"Invalid star coloring: Hessian entry ({r}, {c}) cannot be read from any "
        "product. Recompute it with color_hessian(pattern, method='star')."
    )


def build_star(pattern, colors, order, check=True):
    """Direct decompression data of a star coloring: compiled ([`_numba.star_gather`][])
    when the kernels are used for this size, else numpy ([`_star_numpy`][]); both give the
    same arrays."""
    n = pattern.shape[0]
    raw = _one_color_per_vertex(pattern, colors, "star")
    k = int(raw.max()) + 1 if raw.size else 0
    out = _kernels.star_gather(n, _row_ptr(pattern), pattern.cols, raw, k)
    if out is None:
        if check and not _symmetric(pattern):
            raise _not_symmetric("star")
        seed_colors, n_used, gather = _star_numpy(pattern, raw, k)
    else:
        status, entry, seed_colors, n_used, gather = out
        if status == 2:
            raise _not_symmetric("star")
        if status == 1:
            raise _star_invalid(pattern, entry)
    labels = gather // max(n, 1)
    return ColoringResult(pattern, "star", order, seed_colors, np.full(n, -1), n_used, 0,
                          gather, None, raw, labels)


def _star_numpy(pattern, raw, k):
    """``(seed_colors, n_used, gather)`` of a star coloring, vectorised (the reference of the
    compiled kernel, and the path below ``_kernels.COLD_NNZ``)."""
    n = pattern.shape[0]
    r, c = pattern.rows, pattern.cols
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
        raise _star_invalid(pattern, lower[np.flatnonzero(bad)[0]])
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
    return seed_colors, int(u.size), gather


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


def build_acyclic(pattern, colors, order, check=True):
    """Substitution data of an acyclic coloring: compiled
    ([`_numba.acyclic_substitution`][]) when the kernels are used for this size, else
    numpy ([`_acyclic_numpy`][]); both give the same arrays."""
    n = pattern.shape[0]
    raw = _one_color_per_vertex(pattern, colors, "acyclic")
    if np.any(raw < 0):
        raise ValueError("acyclic coloring needs a color >= 0 for every vertex.")
    k = int(raw.max()) + 1 if raw.size else 0
    out = _kernels.acyclic_substitution(n, _row_ptr(pattern), pattern.cols, raw, k)
    if out is None:
        if check and not _symmetric(pattern):
            raise _not_symmetric("acyclic")
        subst, gather = _acyclic_numpy(pattern, raw, k)
    else:
        status, entry, slots, signs, widths, n_rows, cpos, cend, csign, gather = out
        if status == 3:
            raise _not_symmetric("acyclic")
        if status == 1:
            raise _acyclic_adjacent(pattern, raw, entry)
        if status == 2:
            raise _acyclic_cycle()
        blocks = []
        offset = 0
        for w, rows in zip(widths.tolist(), n_rows.tolist(), strict=True):
            size = w * rows
            blocks.append((_ro(slots[offset:offset + size].reshape(rows, w)),
                           _ro(signs[offset:offset + size].reshape(rows, w), np.float64)))
            offset += size
        subst = Substitution(blocks=tuple(blocks), child_pos=_ro(cpos), child_end=_ro(cend),
                             child_sign=_ro(csign, np.float64))
    labels = raw[pattern.cols]
    return ColoringResult(pattern, "acyclic", order, raw, np.full(n, -1), k, 0, gather, subst,
                          raw, labels)


def _acyclic_adjacent(pattern, raw, i):
    r, c = pattern.rows[i], pattern.cols[i]
    return ValueError(
        f"Invalid acyclic coloring: adjacent vertices {r} and {c} share color "
        f"{raw[r]}. Recompute it with color_hessian(pattern, method='acyclic')."
    )


def _acyclic_cycle():
    return ValueError(
        "Invalid acyclic coloring: a 2-colored subgraph has a cycle, so substitution "
        "cannot recover it. Recompute it with color_hessian(pattern, method='acyclic')."
    )


def _acyclic_numpy(pattern, raw, k):
    """``(substitution, gather)`` of an acyclic coloring, vectorised with scipy's graph
    routines (the reference of the compiled kernel, and the path below
    ``_kernels.COLD_NNZ``)."""
    n = pattern.shape[0]
    r, c = pattern.rows, pattern.cols
    diag = r == c
    bad = ~diag & (raw[r] == raw[c])
    if bad.any():
        raise _acyclic_adjacent(pattern, raw, int(np.flatnonzero(bad)[0]))
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
        raise _acyclic_cycle()
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
    return subst, gather


BUILDERS = {
    "forward": build_forward,
    "reverse": build_reverse,
    "bidirectional": build_bidirectional,
    "star": build_star,
    "acyclic": build_acyclic,
}
