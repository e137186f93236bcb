"""Structure-only patterns of the benchmark problems (numpy, no detection), at any size.

Used by the colour-count tests (small sizes) and by ``benchmarks/bench_coloring.py``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import sparseopt_adapters as sa


def _from_scipy(a) -> sa.SparsityPattern:
    a = sp.csr_array(a)
    a.sum_duplicates()
    a.sort_indices()
    coo = a.tocoo()
    return sa.SparsityPattern(coo.row, coo.col, a.shape)


def banded(m, n, lo, hi) -> sa.SparsityPattern:
    """Rows i hold columns i-lo .. i+hi (clipped)."""
    r, c = [], []
    for k in range(-lo, hi + 1):
        i = np.arange(max(0, -k), min(m, n - k))
        r.append(i)
        c.append(i + k)
    return sa.SparsityPattern(np.concatenate(r), np.concatenate(c), (m, n))


def stencil(nx, ny) -> sa.SparsityPattern:
    """The 2-D 5-point stencil on an nx × ny grid, natural (x fastest) order."""
    idx = np.arange(nx * ny).reshape(ny, nx)
    r, c = [idx.ravel()], [idx.ravel()]
    for a, b in ((idx[:, 1:], idx[:, :-1]), (idx[1:, :], idx[:-1, :])):
        r += [a.ravel(), b.ravel()]
        c += [b.ravel(), a.ravel()]
    n = nx * ny
    return _from_scipy(sp.coo_array((np.ones(sum(x.size for x in r)),
                                     (np.concatenate(r), np.concatenate(c))), shape=(n, n)))


def brybnd_hessian(n) -> sa.SparsityPattern:
    """Hessian of the BRYBND-type least squares sum f_i(x)²: f_i depends on x_{i-5} .. x_{i+1},
    so H = JᵀJ has half-bandwidth 6 (13 nonzeros per row, 1.3e5 at n = 1e4)."""
    j = banded(n, n, 5, 1)
    a = sp.csr_array((np.ones(j.nnz), (j.rows, j.cols)), shape=(n, n))
    return _from_scipy(a.T @ a)


def torsion_hessian(nx, ny) -> sa.SparsityPattern:
    """COPS torsion: the energy couples grid neighbours only, a 5-point stencil
    (102 × 102: n = 10 404, 5.2e4 nonzeros)."""
    return stencil(nx, ny)


def steering_jacobian(nh) -> sa.SparsityPattern:
    """COPS steering constraint Jacobian, trapezoidal collocation with free final time.

    Variables: x1..x4 (nh + 1 each), u (nh + 1), tf: 5 (nh + 1) + 1 columns. Constraints: 4 nh
    collocation rows (x_k[i+1] - x_k[i] - h/2 (f_k[i] + f_k[i+1]), h = tf / nh, with
    f_1 = x3, f_2 = x4, f_3 = a cos u, f_4 = a sin u) then 4 initial and 3 final conditions:
    4 nh + 7 rows (4007 × 5006 at nh = 1000). The tf column is dense.
    """
    n1 = nh + 1
    x = [np.arange(k * n1, (k + 1) * n1) for k in range(4)]
    u = np.arange(4 * n1, 5 * n1)
    tf = 5 * n1
    rows, cols = [], []
    i = np.arange(nh)
    for k in range(4):
        row = k * nh + i
        dep = [x[k][i], x[k][i + 1]]
        if k < 2:
            dep += [x[k + 2][i], x[k + 2][i + 1]]
        else:
            dep += [u[i], u[i + 1]]
        dep.append(np.full(nh, tf))
        for d in dep:
            rows.append(row)
            cols.append(d)
    base = 4 * nh
    for k in range(4):  # x_k(0) fixed
        rows.append(np.array([base + k]))
        cols.append(np.array([x[k][0]]))
    for k, var in enumerate((x[1], x[2], x[3])):  # x2(tf), x3(tf), x4(tf) fixed
        rows.append(np.array([base + 4 + k]))
        cols.append(np.array([var[-1]]))
    r, c = np.concatenate(rows), np.concatenate(cols)
    return _from_scipy(sp.coo_array((np.ones(r.size), (r, c)), shape=(4 * nh + 7, 5 * n1 + 1)))


def random_pattern(m, n, density, seed) -> sa.SparsityPattern:
    d = np.random.default_rng(seed).random((m, n)) < density
    return sa.SparsityPattern.from_dense(d)


def random_symmetric(n, density, seed, diag=True) -> sa.SparsityPattern:
    d = np.random.default_rng(seed).random((n, n)) < density
    d = d | d.T
    if diag:
        d |= np.eye(n, dtype=bool)
    else:
        d &= ~np.eye(n, dtype=bool)
    return sa.SparsityPattern.from_dense(d)


def arrow(m, n, row=0, col=0) -> sa.SparsityPattern:
    d = np.eye(m, n, dtype=bool)
    d[row, :] = True
    d[:, col] = True
    return sa.SparsityPattern.from_dense(d)


# extra patterns whose colour counts are recorded (tests/_coloring/baseline_counts.json)
EXTRA_JAC = {
    "steering_nh60": steering_jacobian(60),
    "stencil_jac_15x11": stencil(15, 11),
    "stencil_jac_10x10": stencil(10, 10),
    "stencil_jac_20x20": stencil(20, 20),
    "stencil_jac_13x30": stencil(13, 30),
    "band_60x73": banded(50, 73, 4, 1),
    "random_120x90": random_pattern(120, 90, 0.04, 11),
    "random_60x200": random_pattern(60, 200, 0.05, 12),
    "arrow_40x55": arrow(40, 55, row=5, col=50),
    "band_80x90": banded(80, 90, 3, 6),
}
EXTRA_SYM = {
    "brybnd_300": brybnd_hessian(300),
    "torsion_18x16": torsion_hessian(18, 16),
    "random_150": random_symmetric(150, 0.03, 13),
    "random_200_sparse": random_symmetric(200, 0.01, 14, diag=False),
    "arrow_90": arrow(90, 90, row=0, col=0),
    "band7_100": banded(100, 100, 7, 7),
    "arrow_300": arrow(300, 300, row=299, col=299),
    "stencil_20x20": stencil(20, 20),
}
