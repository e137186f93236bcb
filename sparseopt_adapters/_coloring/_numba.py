"""The numba kernels (imported by ``_kernels.py`` only when first needed; see there)."""

import numpy as np

from ._kernels import _i64, _njit


@_njit
def greedy_distance2(nv, v_ptr, v_idx, o_ptr, o_idx, order):
    colors = np.full(nv, -1, np.int64)
    forbidden = np.full(nv + 1, -1, np.int64)
    for t in range(order.size):
        v = order[t]
        a = v_ptr[v]
        b = v_ptr[v + 1]
        if a == b:
            continue
        for p in range(a, b):
            r = v_idx[p]
            for q in range(o_ptr[r], o_ptr[r + 1]):
                c = colors[o_idx[q]]
                if c >= 0:
                    forbidden[c] = v
        c = 0
        while forbidden[c] == v:
            c += 1
        colors[v] = c
    return colors

@_njit
def distance2_degree(nv, v_ptr, v_idx, o_ptr, o_idx):
    seen = np.full(nv, -1, np.int64)
    deg = np.zeros(nv, np.int64)
    for v in range(nv):
        for p in range(v_ptr[v], v_ptr[v + 1]):
            r = v_idx[p]
            for q in range(o_ptr[r], o_ptr[r + 1]):
                x = o_idx[q]
                if x != v and seen[x] != v:
                    seen[x] = v
                    deg[v] += 1
    return deg

@_njit
def star_coloring(nv, ptr, idx, eid, n_edges, order, cap):
    # cap: give up (return an empty array) once more than cap colors are needed
    ne = max(n_edges, 1)
    color = np.full(nv, -1, np.int64)
    forbidden = np.full(nv + 1, -1, np.int64)
    fn_p = np.full(nv + 1, -1, np.int64)  # first neighbor of each color: (v, w, edge)
    fn_q = np.full(nv + 1, -1, np.int64)
    fn_e = np.full(nv + 1, -1, np.int64)
    treated = np.full(nv, -1, np.int64)
    star = np.full(ne, -1, np.int64)
    hub = np.full(ne, -1, np.int64)
    n_stars = 0
    for t in range(order.size):
        v = order[t]
        pv = ptr[v]
        qv = ptr[v + 1]
        for p in range(pv, qv):
            w = idx[p]
            cw = color[w]
            if cw < 0:
                continue
            forbidden[cw] = v
            if fn_p[cw] == v:  # two neighbors of v share color cw
                q = fn_q[cw]
                if treated[q] != v:
                    for p2 in range(ptr[q], ptr[q + 1]):
                        cx = color[idx[p2]]
                        if cx >= 0:
                            forbidden[cx] = v
                    treated[q] = v
                for p2 in range(ptr[w], ptr[w + 1]):
                    cx = color[idx[p2]]
                    if cx >= 0:
                        forbidden[cx] = v
                treated[w] = v
            else:
                fn_p[cw] = v
                fn_q[cw] = w
                fn_e[cw] = eid[p]
                for p2 in range(ptr[w], ptr[w + 1]):
                    x = idx[p2]
                    cx = color[x]
                    if x == v or cx < 0:
                        continue
                    s = star[eid[p2]]
                    if s >= 0 and hub[s] == x:
                        forbidden[cx] = v
        c = 0
        while forbidden[c] == v:
            c += 1
        if c >= cap:
            return np.empty(0, np.int64)
        color[v] = c
        # update the 2-colored stars around v
        for p in range(pv, qv):
            w = idx[p]
            cw = color[w]
            if cw < 0:
                continue
            e_vw = eid[p]
            found = -1
            for p2 in range(ptr[w], ptr[w + 1]):
                x = idx[p2]
                if x != v and color[x] == c:
                    found = p2
                    break
            if found >= 0:
                s = star[eid[found]]
                hub[s] = w
            elif fn_p[cw] == v and fn_q[cw] != w:
                s = star[fn_e[cw]]
                hub[s] = v
            else:
                s = n_stars
                n_stars += 1
                hub[s] = -1 - max(v, w)  # trivial star: no hub yet
            star[e_vw] = s
    return color

@_njit
def _find(parent, e):
    r = e
    while parent[r] != r:
        r = parent[r]
    while parent[e] != r:
        nxt = parent[e]
        parent[e] = r
        e = nxt
    return r

@_njit
def _union(parent, rank, r1, r2):
    if rank[r1] < rank[r2]:
        r1, r2 = r2, r1
    parent[r2] = r1
    if rank[r1] == rank[r2]:
        rank[r1] += 1

@_njit
def acyclic_coloring(nv, ptr, idx, eid, n_edges, order, cap):
    # cap: give up (return an empty array) once more than cap colors are needed
    ne = max(n_edges, 1)
    color = np.full(nv, -1, np.int64)
    forbidden = np.full(nv + 1, -1, np.int64)
    fn_p = np.full(nv + 1, -1, np.int64)
    fn_q = np.full(nv + 1, -1, np.int64)
    fn_e = np.full(nv + 1, -1, np.int64)
    fv_p = np.full(ne, -1, np.int64)  # first visit of each tree (by its root edge)
    fv_q = np.full(ne, -1, np.int64)
    parent = np.arange(ne)
    rank = np.zeros(ne, np.int64)
    for t in range(order.size):
        v = order[t]
        pv = ptr[v]
        qv = ptr[v + 1]
        for p in range(pv, qv):
            cw = color[idx[p]]
            if cw >= 0:
                forbidden[cw] = v
        for p in range(pv, qv):
            w = idx[p]
            if color[w] < 0:
                continue
            for p2 in range(ptr[w], ptr[w + 1]):
                cx = color[idx[p2]]
                if cx < 0 or forbidden[cx] == v:
                    continue
                r = _find(parent, eid[p2])
                if fv_p[r] != v:
                    fv_p[r] = v
                    fv_q[r] = w
                elif fv_q[r] != w:  # the tree of wx touches v twice: a cycle
                    forbidden[cx] = v
        c = 0
        while forbidden[c] == v:
            c += 1
        if c >= cap:
            return np.empty(0, np.int64)
        color[v] = c
        for p in range(pv, qv):  # grow the 2-colored stars around v
            w = idx[p]
            cw = color[w]
            if cw < 0:
                continue
            if fn_p[cw] != v:
                fn_p[cw] = v
                fn_q[cw] = w
                fn_e[cw] = eid[p]
            else:
                r1 = _find(parent, eid[p])
                r2 = _find(parent, fn_e[cw])
                if r1 != r2:
                    _union(parent, rank, r1, r2)
        for p in range(pv, qv):  # merge trees joined through v
            w = idx[p]
            if color[w] < 0:
                continue
            e_vw = eid[p]
            for p2 in range(ptr[w], ptr[w + 1]):
                x = idx[p2]
                if x != v and color[x] == c:
                    r1 = _find(parent, e_vw)
                    r2 = _find(parent, eid[p2])
                    if r1 != r2:
                        _union(parent, rank, r1, r2)
    return color

@_njit
def dynamic_order(kind, nv, ptr, idx):
    # kind 0: incidence degree, 1: smallest last, 2: dynamic largest first. Buckets are
    # stacks (pop the last, remove by moving the last into the hole) stored in one pool;
    # a full bucket moves to the pool's end with twice the room.
    deg0 = ptr[1:] - ptr[:-1]
    dmax = 0
    for v in range(nv):
        dmax = max(dmax, deg0[v])
    if kind == 0:
        d = np.zeros(nv, np.int64)
        pick_max = True
        delta = 1
    else:
        d = deg0.copy()
        pick_max = kind == 2
        delta = -1
    nb = dmax + 2
    cnt = np.zeros(nb, np.int64)
    for v in range(nv):
        cnt[d[v]] += 1
    start = np.zeros(nb, np.int64)
    cap = np.zeros(nb, np.int64)
    length = np.zeros(nb, np.int64)
    end = 0
    for b in range(nb):
        start[b] = end
        cap[b] = cnt[b] + 4
        end += cap[b]
    pool = np.empty(2 * end + 16, np.int64)
    pos = np.zeros(nv, np.int64)
    for v in range(nv - 1, -1, -1):  # so that popping takes the lowest index first
        b = d[v]
        pool[start[b] + length[b]] = v
        pos[v] = length[b]
        length[b] += 1
    out = np.empty(nv, np.int64)
    cur = dmax if pick_max else 0
    for t in range(nv):
        if pick_max:
            cur = min(cur + 1, dmax + 1)
            while length[cur] == 0:
                cur -= 1
        else:
            cur = max(cur - 1, 0)
            while length[cur] == 0:
                cur += 1
        length[cur] -= 1
        u = pool[start[cur] + length[cur]]
        d[u] = -1
        out[t] = u
        for p in range(ptr[u], ptr[u + 1]):
            w = idx[p]
            dw = d[w]
            if dw < 0:
                continue
            last = pool[start[dw] + length[dw] - 1]
            pool[start[dw] + pos[w]] = last
            pos[last] = pos[w]
            length[dw] -= 1
            dn = dw + delta
            if length[dn] == cap[dn]:
                new_cap = 2 * cap[dn]
                if end + new_cap > pool.size:
                    bigger = np.empty(2 * (end + new_cap), np.int64)
                    bigger[:end] = pool[:end]
                    pool = bigger
                pool[end:end + length[dn]] = pool[start[dn]:start[dn] + length[dn]]
                start[dn] = end
                cap[dn] = new_cap
                end += new_cap
            pool[start[dn] + length[dn]] = w
            pos[w] = length[dn]
            length[dn] += 1
            d[w] = dn
    if kind == 1:
        return out[::-1].copy()
    return out

@_njit
def _heap_push(heap, size, key):
    i = size
    heap[i] = key
    while i > 0:
        par = (i - 1) >> 1
        if heap[par] <= heap[i]:
            break
        tmp = heap[par]
        heap[par] = heap[i]
        heap[i] = tmp
        i = par
    return size + 1

@_njit
def _heap_pop(heap, size):
    top = heap[0]
    size -= 1
    heap[0] = heap[size]
    i = 0
    while True:
        a = 2 * i + 1
        if a >= size:
            break
        if a + 1 < size and heap[a + 1] < heap[a]:
            a += 1
        if heap[i] <= heap[a]:
            break
        tmp = heap[a]
        heap[a] = heap[i]
        heap[i] = tmp
        i = a
    return top, size

@_njit
def dsatur_order(nv, ptr, idx):
    # DSATUR: the uncolored vertex with the most distinct neighbor colors next (ties:
    # larger degree, then lower index); its color is the smallest free one. Lazy heap of
    # packed keys ((dmax - sat) * (dmax + 1) + (dmax - deg)) * nv + v.
    deg = ptr[1:] - ptr[:-1]
    dmax = 0
    for v in range(nv):
        dmax = max(dmax, deg[v])
    kc = dmax + 2  # colors are < dmax + 1
    sat = np.zeros(nv, np.int64)
    done = np.zeros(nv, np.bool_)
    color = np.full(nv, -1, np.int64)
    forbidden = np.full(kc + 1, -1, np.int64)
    # hash set of (vertex, color) pairs seen among colored neighbors
    hsize = 1
    while hsize < 2 * (idx.size + 1):
        hsize *= 2
    table = np.full(hsize, -1, np.int64)
    heap = np.empty(nv + idx.size + 1, np.int64)
    size = 0
    for v in range(nv):
        size = _heap_push(heap, size, (dmax * (dmax + 1) + (dmax - deg[v])) * nv + v)
    out = np.empty(nv, np.int64)
    for t in range(nv):
        while True:
            key, size = _heap_pop(heap, size)
            v = key % nv
            s = dmax - (key // nv) // (dmax + 1)
            if not done[v] and s == sat[v]:
                break
        for p in range(ptr[v], ptr[v + 1]):
            cw = color[idx[p]]
            if cw >= 0:
                forbidden[cw] = v
        c = 0
        while forbidden[c] == v:
            c += 1
        color[v] = c
        done[v] = True
        out[t] = v
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if done[w]:
                continue
            hk = w * kc + c
            h = (hk * 0x9E3779B97F4A7C1) & (hsize - 1)
            while table[h] != -1 and table[h] != hk:
                h = (h + 1) & (hsize - 1)
            if table[h] == hk:
                continue
            table[h] = hk
            sat[w] += 1
            size = _heap_push(
                heap, size, ((dmax - sat[w]) * (dmax + 1) + (dmax - deg[w])) * nv + w
            )
    return out


# -- decompression data (the compiled twins of _decompression's numpy builders) --------------
@_njit
def transpose_source(n, cols):
    """``source`` of the transpose of a row-major sorted pattern: ``source[q]`` is the entry
    landing at position ``q`` of the column-major order (a stable counting sort)."""
    cursor = np.zeros(n + 1, np.int64)
    for e in range(cols.size):
        cursor[cols[e] + 1] += 1
    for j in range(n):
        cursor[j + 1] += cursor[j]
    source = np.empty(cols.size, np.int64)
    for e in range(cols.size):
        c = cols[e]
        source[cursor[c]] = e
        cursor[c] += 1
    return source


@_njit
def _symmetric_mirror(n, ptr, idx):
    """Position of ``(c, r)`` for every entry ``(r, c)`` of a symmetric CSR pattern, or an
    empty array when the pattern is not symmetric."""
    nnz = idx.size
    mirror = np.empty(nnz, np.int64)
    cursor = ptr[:-1].copy()
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            q = cursor[w]
            if q >= ptr[w + 1] or idx[q] != v:
                return np.empty(0, np.int64)
            mirror[p] = q
            cursor[w] = q + 1
    return mirror


@_njit
def star_gather(n, ptr, idx, raw, k):
    """Direct (star) decompression data, as ``_decompression._star_numpy``: returns
    ``(status, entry, seed_colors, n_used, gather)``; status 1: entry ``entry`` cannot be
    read from any product, 2: the pattern is not symmetric."""
    nnz = idx.size
    gather = np.empty(nnz, np.int64)
    seed = np.full(n, -1, np.int64)
    mirror = _symmetric_mirror(n, ptr, idx)
    if mirror.size != nnz:
        return 2, -1, seed, 0, gather
    kk = max(k, 1)
    cnt = np.zeros(kk, np.int64)
    stamp = np.full(kk, -1, np.int64)
    # ok[p] for an off-diagonal (v, w): w is v's only neighbor of its color; for a diagonal
    # (v, v): v has no neighbor of its own color
    ok = np.zeros(nnz, np.bool_)
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            c = raw[w]
            if w != v and c >= 0:
                if stamp[c] != v:
                    stamp[c] = v
                    cnt[c] = 0
                cnt[c] += 1
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            c = raw[w]
            if c < 0:
                continue
            if w == v:
                ok[p] = stamp[c] != v or cnt[c] == 0
            else:
                ok[p] = stamp[c] == v and cnt[c] == 1
    # per lower entry (r >= c, pattern order): option a reads color raw[c], b color raw[r]
    n_low = 0
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] <= v:
                n_low += 1
    low_p = np.empty(n_low, np.int64)
    used = np.zeros(kk, np.bool_)
    ba = np.empty(n_low, np.int64)
    bb = np.empty(n_low, np.int64)
    nb = 0
    t = 0
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if w > v:
                continue
            low_p[t] = p
            t += 1
            oa = ok[p]
            ob = w != v and ok[mirror[p]]
            if not (oa or ob):
                return 1, p, seed, 0, gather
            if oa and not ob:
                used[raw[w]] = True
            elif ob and not oa:
                used[raw[v]] = True
            else:
                ba[nb] = raw[w]
                bb[nb] = raw[v]
                nb += 1
    # entries with two options: greedily the color that covers most of them
    count = np.zeros(kk, np.int64)
    while nb > 0:
        j = 0
        for q in range(nb):
            if not (used[ba[q]] or used[bb[q]]):
                ba[j] = ba[q]
                bb[j] = bb[q]
                j += 1
        nb = j
        if nb == 0:
            break
        count[:] = 0
        for q in range(nb):
            count[ba[q]] += 1
            count[bb[q]] += 1
        best = 0
        for c in range(kk):
            if count[c] > count[best]:
                best = c
        used[best] = True
    remap = np.full(kk, -1, np.int64)
    n_used = 0
    for c in range(k):
        if used[c]:
            remap[c] = n_used
            n_used += 1
    for v in range(n):
        if raw[v] >= 0:
            seed[v] = remap[raw[v]]
    for t in range(n_low):
        p = low_p[t]
        w = idx[p]
        r = idx[mirror[p]]  # the row of p: the column of its mirror
        use_a = ok[p] and (used[raw[w]] or not (w != r and ok[mirror[p]]))
        if use_a:
            gather[p] = seed[w] * n + r
        else:
            gather[p] = seed[r] * n + w
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] > v:
                gather[p] = gather[mirror[p]]
    return 0, -1, seed, n_used, gather


@_njit
def acyclic_substitution(n, ptr, idx, raw, k):
    """Substitution (acyclic) decompression data, as ``_decompression._acyclic_numpy``:
    the 2-colored trees as a union-find forest over (vertex, other color) nodes, each rooted
    at a leaf and laid out in depth-first preorder (neighbors in increasing node order).

    Returns ``(status, entry, slots, signs, block_width, block_rows, child_pos, child_end,
    child_sign, gather)``; status 1: adjacent vertices share a color (entry ``entry``),
    2: a 2-colored subgraph has a cycle, 3: the pattern is not symmetric."""
    nnz = idx.size
    z_i = np.empty(0, np.int64)
    z_f = np.empty(0, np.float64)
    gather = np.empty(nnz, np.int64)
    mirror = _symmetric_mirror(n, ptr, idx)
    if mirror.size != nnz:
        return 3, -1, z_i, z_f, z_i, z_i, z_i, z_i, z_f, gather
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] != v and raw[idx[p]] == raw[v]:
                return 1, p, z_i, z_f, z_i, z_i, z_i, z_i, z_f, gather
    # nodes (v, color of a neighbor), numbered by vertex then color
    kk = max(k, 1)
    stamp = np.full(kk, -1, np.int64)
    node_id = np.empty(kk, np.int64)
    node_of = np.full(nnz, -1, np.int64)
    node_index = np.empty(nnz, np.int64)  # color * n + vertex: its compressed entry
    buf = np.empty(kk, np.int64)
    nn = 0
    for v in range(n):
        m = 0
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if w != v and stamp[raw[w]] != v:
                stamp[raw[w]] = v
                buf[m] = raw[w]
                m += 1
        for a in range(1, m):  # insertion sort (few colors per vertex)
            x = buf[a]
            b = a - 1
            while b >= 0 and buf[b] > x:
                buf[b + 1] = buf[b]
                b -= 1
            buf[b + 1] = x
        for a in range(m):
            node_id[buf[a]] = nn
            node_index[nn] = buf[a] * n + v
            nn += 1
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if w != v:
                node_of[p] = node_id[raw[w]]
    # tree edges: the lower entries (r > c) in pattern order, between (r, raw[c]), (c, raw[r])
    ne = 0
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] < v:
                ne += 1
    na = np.empty(ne, np.int64)
    nb = np.empty(ne, np.int64)
    parent = np.arange(nn)
    rank = np.zeros(nn, np.int64)
    deg = np.zeros(nn, np.int64)
    t = 0
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] < v:
                a = node_of[p]
                b = node_of[mirror[p]]
                na[t] = a
                nb[t] = b
                t += 1
                deg[a] += 1
                deg[b] += 1
                ra = _find(parent, a)
                rb = _find(parent, b)
                if ra == rb:
                    return 2, -1, z_i, z_f, z_i, z_i, z_i, z_i, z_f, gather
                _union(parent, rank, ra, rb)
    # root of each tree: its node of lowest degree, then lowest number
    best = np.full(nn, -1, np.int64)
    for x in range(nn):
        r = _find(parent, x)
        if best[r] < 0 or deg[x] < deg[best[r]]:
            best[r] = x
    is_root = np.zeros(nn, np.bool_)
    for x in range(nn):
        if parent[x] == x:
            is_root[best[x]] = True
    # node adjacency with increasing neighbors: position p of row v links (v, raw[w]) to
    # (w, raw[v]); rows and their entries come in increasing order
    aptr = np.zeros(nn + 1, np.int64)
    for p in range(nnz):
        if node_of[p] >= 0:
            aptr[node_of[p] + 1] += 1
    for x in range(nn):
        aptr[x + 1] += aptr[x]
    adj = np.empty(aptr[nn], np.int64)
    fill = aptr[:-1].copy()
    for p in range(nnz):
        a = node_of[p]
        if a >= 0:
            adj[fill[a]] = node_of[mirror[p]]
            fill[a] += 1
    # depth-first preorder from the roots in increasing order
    pos = np.full(nn, -1, np.int64)
    pre = np.empty(nn, np.int64)
    par = np.full(nn, -1, np.int64)
    depth = np.zeros(nn, np.int64)
    cursor = aptr[:-1].copy()
    stack = np.empty(nn, np.int64)
    n_pre = 0
    n_trees = 0
    for x0 in range(nn):
        if not is_root[x0]:
            continue
        n_trees += 1
        pos[x0] = n_pre
        pre[n_pre] = x0
        n_pre += 1
        top = 0
        stack[0] = x0
        while top >= 0:
            x = stack[top]
            found = -1
            while cursor[x] < aptr[x + 1]:
                y = adj[cursor[x]]
                cursor[x] += 1
                if pos[y] < 0:
                    found = y
                    break
            if found < 0:
                top -= 1
                continue
            pos[found] = n_pre
            pre[n_pre] = found
            n_pre += 1
            par[found] = x
            depth[found] = depth[x] + 1
            top += 1
            stack[top] = found
    size = np.ones(nn, np.int64)
    for q in range(nn - 1, -1, -1):
        x = pre[q]
        if par[x] >= 0:
            size[par[x]] += size[x]
    # trees in preorder; a tree of s nodes goes to the block of rows of width 2**bitlen(s)
    t_start = np.empty(n_trees, np.int64)
    t_size = np.empty(n_trees, np.int64)
    t_g = np.empty(n_trees, np.int64)
    tree_of_pos = np.empty(nn, np.int64)
    t = -1
    for q in range(nn):
        x = pre[q]
        if par[x] < 0:
            t += 1
            t_start[t] = q
            t_size[t] = size[x]
            s = size[x]
            g = 0
            while s > 0:
                s >>= 1
                g += 1
            t_g[t] = g
        tree_of_pos[q] = t
    g_max = 0
    for t in range(n_trees):
        g_max = max(g_max, t_g[t])
    per_g = np.zeros(g_max + 1, np.int64)
    for t in range(n_trees):
        per_g[t_g[t]] += 1
    n_blocks = 0
    for g in range(g_max + 1):
        if per_g[g]:
            n_blocks += 1
    block_width = np.empty(n_blocks, np.int64)
    block_rows = np.empty(n_blocks, np.int64)
    g_offset = np.zeros(g_max + 1, np.int64)
    offset = 0
    b = 0
    for g in range(g_max + 1):
        if per_g[g]:
            block_width[b] = 1 << g
            block_rows[b] = per_g[g]
            g_offset[g] = offset
            offset += per_g[g] << g
            b += 1
    t_flat = np.empty(n_trees, np.int64)
    for t in range(n_trees):
        g = t_g[t]
        t_flat[t] = g_offset[g]
        g_offset[g] += 1 << g
    pad = k * n
    slots = np.full(offset, pad, np.int64)
    signs = np.zeros(offset, np.float64)
    flat_of_pos = np.empty(nn, np.int64)
    for q in range(nn):
        t = tree_of_pos[q]
        f = t_flat[t] + (q - t_start[t])
        flat_of_pos[q] = f
        x = pre[q]
        slots[f] = node_index[x]
        signs[f] = 1.0 if depth[x] % 2 == 0 else -1.0
    child_pos = np.empty(ne, np.int64)
    child_end = np.empty(ne, np.int64)
    child_sign = np.empty(ne, np.float64)
    for e in range(ne):
        c = na[e] if depth[na[e]] > depth[nb[e]] else nb[e]
        q = pos[c]
        t = tree_of_pos[q]
        child_pos[e] = flat_of_pos[q]
        child_end[e] = t_flat[t] + (q + size[c] - t_start[t])
        child_sign[e] = 1.0 if depth[c] % 2 == 0 else -1.0
    ext = k * n
    t = 0
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if w == v:
                gather[p] = raw[v] * n + v
            elif w < v:
                gather[p] = ext + t
                t += 1
    for v in range(n):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] > v:
                gather[p] = gather[mirror[p]]
    return (0, -1, slots, signs, block_width, block_rows, child_pos, child_end, child_sign,
            gather)


def warm_up():
    """Call every kernel once on a 2-vertex graph: loads each from the disk cache (or
    compiles it, the first time on a machine), with the argument types the dispatch in
    ``_kernels`` passes (read-only int64 arrays)."""
    ptr = _i64([0, 1, 2])
    idx = _i64([1, 0])
    eid = _i64([0, 0])
    order = _i64([0, 1])
    greedy_distance2(2, ptr, idx, ptr, idx, order)
    distance2_degree(2, ptr, idx, ptr, idx)
    star_coloring(2, ptr, idx, eid, 1, order, 3)
    acyclic_coloring(2, ptr, idx, eid, 1, order, 3)
    for kind in range(3):
        dynamic_order(kind, 2, ptr, idx)
    dsatur_order(2, ptr, idx)
    clique_lower_bound(2, ptr, idx, order)
    star_valid(2, ptr, idx, order, 2)
    acyclic_valid(2, ptr, idx, order, 2)
    transpose_source(2, idx)
    star_gather(2, ptr, idx, order, 2)
    acyclic_substitution(2, ptr, idx, order, 2)


@_njit
def clique_lower_bound(nv, ptr, idx, starts):
    """Size of the largest clique found greedily from each start vertex: grow {v} by the
    neighbors of v (in index order) adjacent to every member (binary search in the sorted
    rows). Any distance-1 coloring needs at least that many colors."""
    best = 1 if nv else 0
    members = np.empty(nv + 1, np.int64)
    for t in range(starts.size):
        v = starts[t]
        q = 1
        members[0] = v
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            ok = True
            for j in range(q):
                u = members[j]
                if u == v:
                    continue
                lo = ptr[w]
                hi = ptr[w + 1]
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if idx[mid] < u:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo == ptr[w + 1] or idx[lo] != u:
                    ok = False
                    break
            if ok:
                members[q] = w
                q += 1
        best = max(best, q)
    return best


@_njit
def _neighbor_color_counts(v, ptr, idx, colors, k, table, done):
    """Fill row ``v`` of the (vertex, color) -> number of neighbors table, once."""
    if done[v]:
        return
    done[v] = True
    for p in range(ptr[v], ptr[v + 1]):
        table[v * k + colors[idx[p]]] += 1


@_njit
def star_valid(nv, ptr, idx, colors, k):
    """Whether ``colors`` (in ``range(k)``) is a star coloring: distance-1, and every edge
    has an end whose other end is the only neighbor of its color. The table rows are filled
    when first needed, so that a candidate fails at its first violation (the periodic
    candidates that fail usually fail at once) without a pass over the whole graph."""
    table = np.zeros(nv * k, np.int32)  # (vertex, color) -> neighbors of that color
    done = np.zeros(nv, np.bool_)
    for v in range(nv):
        cv = colors[v]
        _neighbor_color_counts(v, ptr, idx, colors, k, table, done)
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if colors[w] == cv:
                return False
            if table[v * k + colors[w]] != 1:
                _neighbor_color_counts(w, ptr, idx, colors, k, table, done)
                if table[w * k + cv] != 1:
                    return False
    return True


@_njit
def acyclic_valid(nv, ptr, idx, colors, k):
    """Whether ``colors`` (in ``range(k)``) is an acyclic coloring of the symmetric graph
    (CSR, no diagonal needed): distance-1, and the (vertex, other color) nodes joined by the
    edges form a forest (union-find; stops at the first cycle)."""
    for v in range(nv):
        for p in range(ptr[v], ptr[v + 1]):
            if idx[p] != v and colors[idx[p]] == colors[v]:
                return False
    node = np.full(nv * k, -1, np.int64)
    nn = 0
    for v in range(nv):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if w != v and node[v * k + colors[w]] < 0:
                node[v * k + colors[w]] = nn
                nn += 1
    parent = np.arange(nn)
    rank = np.zeros(nn, np.int64)
    for v in range(nv):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if w < v:
                a = _find(parent, node[v * k + colors[w]])
                b = _find(parent, node[w * k + colors[v]])
                if a == b:
                    return False
                _union(parent, rank, a, b)
    return True
