"""The pure-Python coloring kernels: the reference the compiled ones in ``_kernels.py`` must
match color for color, and the fallback when numba cannot be imported.

Same signatures as the compiled kernels (CSR arrays in, one color or vertex per entry out).
"""

from __future__ import annotations

import numpy as np

# A neighbor list longer than this is handled by numpy instead of a Python loop.
_BIG_DEGREE = 32


def dynamic_order(name, nv, ptr, idx):
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


def dsatur_order(nv, ptr, idx, degree=None):
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


def greedy_distance2(nv, no, v_ptr, v_idx, order: np.ndarray) -> np.ndarray:
    """First-fit column coloring: columns sharing a row get different colors.

    Each row keeps the set of colors already used in it as a Python int bitmask, so the work
    is O(nnz) big-int operations and no column-intersection graph is built.
    """
    ptr = v_ptr.tolist()
    idx = v_idx.tolist()
    used = [0] * no
    colors = [-1] * nv
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

def star_coloring(nv, ptr, idx, eid, n_edges, order: np.ndarray, cap=None) -> np.ndarray:
    """Greedy star coloring (Gebremedhin et al. 2007, Algorithm 4.1), colors from 0; an
    empty array once more than ``cap`` colors are needed."""
    cap = nv + 1 if cap is None else cap
    idx_np, eid_np = idx, eid
    ptr = ptr.tolist()
    idx = idx.tolist()
    eid = eid.tolist()
    color = [0] * nv  # 0 = uncolored, colors start at 1 internally
    color_np = np.zeros(nv, np.int64)
    forbidden = [-1] * (nv + 2)
    first_neighbor = [(-1, -1, -1)] * (nv + 2)
    treated = [-1] * nv
    star = [0] * max(n_edges, 1)
    star_np = np.zeros(max(n_edges, 1), np.int64)
    hub = []
    hub_np = np.full(max(n_edges, 1), -1, np.int64)
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
        if c > cap:
            return np.empty(0, np.int64)
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


def acyclic_coloring(nv, ptr, idx, eid, n_edges, order: np.ndarray, cap=None) -> np.ndarray:
    """Greedy acyclic coloring (Gebremedhin et al. 2007, Algorithm 3.1), colors from 0; an
    empty array once more than ``cap`` colors are needed.

    The 2-colored trees are kept as a disjoint-set forest over edges.
    """
    ptr = ptr.tolist()
    idx = idx.tolist()
    eid = eid.tolist()
    ne = max(n_edges, 1)
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

    cap = nv + 1 if cap is None else cap
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
        if c > cap:
            return np.empty(0, np.int64)
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




def clique_lower_bound(nv, ptr, idx, starts) -> int:
    """Size of the largest clique found greedily from each start vertex (see ``_numba``)."""
    best = 1 if nv else 0
    for v in starts.tolist():
        members = [v]
        for w in idx[ptr[v]:ptr[v + 1]].tolist():
            row = idx[ptr[w]:ptr[w + 1]]
            others = np.asarray(members[1:], dtype=np.int64)
            if others.size == 0 or np.all(np.isin(others, row)):
                members.append(w)
        best = max(best, len(members))
    return best
