"""Benchmark problems shared by the benchmark scripts (sizes are arguments)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def rosenbrock(x):
    """Chained Rosenbrock objective (Hessian tridiagonal)."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def bratu_residual(N, lam=6.0):
    """2-D Bratu residual on an N×N interior grid, zero Dirichlet boundary (5-point stencil)."""
    h2 = 1.0 / (N + 1) ** 2

    def r(u_flat):
        u = u_flat.reshape(N, N)
        up = jnp.pad(u, 1)
        lap = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4.0 * u
        return (lap / h2 + lam * jnp.exp(u)).reshape(-1)

    return r


def banded_residual(x):
    """Bandwidth-5 residual (pentadiagonal Jacobian)."""
    return (
        x[2:-2] ** 3 - 0.5 * x[1:-3] - 0.5 * x[3:-1] + 0.1 * x[:-4] * x[4:] + jnp.sin(x[2:-2])
    )


def mesh_laplacian(n_side):
    """Sparse 2-D grid Laplacian (p = n_side² nodes) as scipy CSR."""
    import scipy.sparse as sp

    one = sp.diags_array([-np.ones(n_side - 1), 2 * np.ones(n_side), -np.ones(n_side - 1)],
                         offsets=[-1, 0, 1])
    eye = sp.eye_array(n_side)
    return (sp.kron(one, eye) + sp.kron(eye, one)).tocsr()


def seed_problem(p=1000, q=200, ny=50, nb=40, per_row=3, selection=True, seed=0):
    """Pieces of E(g) = ||X - Y GᵀLG B||² with G = sparse(gi, gj, g) of shape p×q.

    Returns (gi, gj, L (scipy CSR p×p), Y, B, X, g0).
    """
    import scipy.sparse as sp

    r = np.random.default_rng(seed)
    gi = np.repeat(np.arange(p), per_row)
    gj = (np.arange(p)[:, None] * q // p + np.arange(per_row)[None, :]).reshape(-1) % q
    key = np.unique(gi * q + gj)
    gi, gj = key // q, key % q
    side = int(round(np.sqrt(p)))
    if side * side == p:
        L = mesh_laplacian(side)
    else:
        L = sp.diags_array([-np.ones(p - 1), 2 * np.ones(p), -np.ones(p - 1)], offsets=[-1, 0, 1])
        L = L.tocsr()
    if selection:
        Y = np.zeros((ny, q))
        Y[np.arange(ny), r.choice(q, ny, replace=False)] = 1.0
        B = np.zeros((q, nb))
        B[r.choice(q, nb, replace=False), np.arange(nb)] = 1.0
    else:
        Y = r.normal(size=(ny, q)) / np.sqrt(q)
        B = r.normal(size=(q, nb)) / np.sqrt(q)
    X = r.normal(size=(ny, nb))
    g0 = r.normal(size=gi.size)
    return gi, gj, L, Y, B, X, g0


def seed_residual_scatter(gi, gj, L, Y, B, X, p, q):
    """f(g) = vec(X - Y GᵀLG B) with G built by scatter (the form asdex struggles with)."""
    Ld = jnp.asarray(L.toarray())

    def f(g):
        G = jnp.zeros((p, q)).at[gi, gj].set(g)
        return (X - Y @ (G.T @ (Ld @ (G @ B)))).reshape(-1)

    return f
