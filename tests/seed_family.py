"""The seed-problem family of issue 13: E(g) = ‖X − Y GᵀLG B‖² with 0/1 selections Y, B.

Members (``MEMBERS``): ``wide_zero_rows`` (m < n, a zero row of Y gives identically-zero
residual rows, unselected columns of G give unused parameters), ``tall_rank_deficient``
(m > n, still rank-deficient: unused parameters) and ``tall_full`` (Y, B select everything).
``G`` (p × q, two nonzeros per row) is built from its nonzeros ``g`` three ways (``BUILDS``):
``sa.PatternMatrix``, ``jax.experimental.sparse.BCOO``, and a scatter into a dense ``G``.
The target is reachable (E = 0 at g*), so "solved" means E ≤ 1e-12·E0.
"""

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

import sparseopt_adapters as sa

MEMBERS = {
    "wide_zero_rows": dict(n_y=3, n_b=4, n_ops=1, zero_row=True),
    "tall_rank_deficient": dict(n_y=3, n_b=3, n_ops=4, zero_row=True, pool=4),
    "tall_full": dict(n_y=6, n_b=6, n_ops=2, zero_row=False),
}
BUILDS = ("pattern", "bcoo", "dense")


def seed_family(member="wide_zero_rows", build="pattern", seed=0, p=13, q=6, noise=0.05):
    """``(residual, g0, X, gstar)`` with ``residual(g, X)`` a flat vector."""
    kw = MEMBERS[member]
    n_y, n_b, n_ops, zero_row = kw["n_y"], kw["n_b"], kw["n_ops"], kw["zero_row"]
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(p), 2)
    cols = np.concatenate([rng.choice(q, 2, replace=False) for _ in range(p)])
    Ls = [
        (sp.random_array((p, p), density=0.3, random_state=seed + k, format="csr")
         + 2 * sp.eye_array(p)).tocsr()
        for k in range(n_ops)
    ]
    pool = kw.get("pool", q)  # Y and B select among the first `pool` columns only
    ysel = np.sort(rng.choice(pool, n_y, replace=False))
    Y = np.zeros((n_y + int(zero_row), q))
    Y[np.arange(n_y), ysel] = 1.0
    bsel = np.sort(rng.choice(pool, n_b, replace=False))
    B = np.zeros((q, n_b))
    B[bsel, np.arange(n_b)] = 1.0
    Ysp, Bsp = sp.csr_array(Y), sp.csr_array(B)
    Ld = [L.toarray() for L in Ls]
    if build == "pattern":
        def model(g):
            G = sa.PatternMatrix(g, rows, cols, (p, q))
            outs = []
            for L in Ls:
                M = (Ysp @ (G.T @ L @ G)) @ Bsp
                outs.append(M.todense() if isinstance(M, sa.PatternMatrix) else M)
            return jnp.stack(outs)
    elif build == "bcoo":
        idx = np.stack([rows, cols], 1)
        Lj, Yj, Bj = [jnp.asarray(L) for L in Ld], jnp.asarray(Y), jnp.asarray(B)

        def model(g):
            G = jsparse.BCOO((g, idx), shape=(p, q))
            return jnp.stack([Yj @ (G.T @ (L @ G)) @ Bj for L in Lj])
    elif build == "dense":
        def model(g):
            G = jnp.zeros((p, q), g.dtype).at[rows, cols].set(g)
            return jnp.stack([Y @ G.T @ L @ G @ B for L in Ld])
    else:
        raise ValueError(build)
    gstar = rng.standard_normal(rows.size)
    X = np.asarray(model(jnp.asarray(gstar)))
    g0 = jnp.asarray(gstar + noise * rng.standard_normal(rows.size))

    def residual(g, X):
        return (model(g) - X).ravel()

    return residual, g0, X, gstar
