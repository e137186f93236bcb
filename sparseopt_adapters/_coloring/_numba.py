"""The numba kernels (imported by ``_kernels.py`` only when first needed; see there)."""

import numpy as np

from ._kernels import _njit


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
def star_coloring(nv, ptr, idx, eid, n_edges, order):
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
def acyclic_coloring(nv, ptr, idx, eid, n_edges, order):
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


def warm_up():
    """Call every kernel once on a 2-vertex graph: loads each from the disk cache (or
    compiles it, the first time on a machine)."""
    ptr = np.array([0, 1, 2], np.int64)
    idx = np.array([1, 0], np.int64)
    eid = np.zeros(2, np.int64)
    order = np.arange(2, dtype=np.int64)
    greedy_distance2(2, ptr, idx, ptr, idx, order)
    distance2_degree(2, ptr, idx, ptr, idx)
    star_coloring(2, ptr, idx, eid, 1, order)
    acyclic_coloring(2, ptr, idx, eid, 1, order)
    for kind in range(3):
        dynamic_order(kind, 2, ptr, idx)
    dsatur_order(2, ptr, idx)
    clique_lower_bound(2, ptr, idx, order)
    star_valid(2, ptr, idx, order, 2)


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
def star_valid(nv, ptr, idx, colors, k):
    """Whether ``colors`` (in ``range(k)``) is a star coloring: distance-1, and every edge
    has an end whose other end is the only neighbor of its color. Stops at the first
    violation (the periodic candidates that fail usually fail at once)."""
    table = np.zeros(nv * k, np.int32)  # (vertex, color) -> neighbors of that color
    for v in range(nv):
        cv = colors[v]
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if colors[w] == cv:
                return False
            table[v * k + colors[w]] += 1
    for v in range(nv):
        for p in range(ptr[v], ptr[v + 1]):
            w = idx[p]
            if table[v * k + colors[w]] != 1 and table[w * k + colors[v]] != 1:
                return False
    return True
