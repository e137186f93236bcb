"""One registry of test problems, shared by every adapter's tests (STYLE habit 15).

Each [`TestProblem`][] carries the problem in the host's conventions (a scalar objective
``fun(x, *args)``, optionally a residual with ``fun = ||residual||²``, bounds as ``(lo, hi)``
pairs, constraints as scipy dicts / ``NonlinearConstraint``) and a reference solution that does
not come from the code under test (closed form, Hock–Schittkowski, or a hand-written Newton
method). `tests/adapters/test_conformance.py` runs every adapter over `PROBLEMS`.

Add a problem with ``@register``: it returns a `TestProblem`; give it a reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import sparseopt_adapters as sa


@dataclasses.dataclass
class TestProblem:
    """A problem and its reference solution.

    Attributes:
        name: registry key.
        fun: scalar objective ``fun(x, *args)``.
        x0: starting point (array or pytree).
        args: extra arguments of ``fun`` / ``residual``.
        residual: ``residual(x, *args)`` with ``fun == sum(residual**2)`` (least-squares
            problems), or ``None``.
        bounds: ``(lo, hi)`` pairs on the flat variables, or ``None``.
        constraints: scipy-style constraints (dicts / NonlinearConstraint), or ``[]``.
        x_star: the reference minimiser (flat), or ``None`` where only ``f_star`` is known.
        f_star: the reference minimum of ``fun``.
        x_tol, f_tol: accepted errors (``f_tol`` relative to ``max(1, |f_star|)``); with
            bounds or constraints interior-point solvers stop ~1e-7 inside (IPOPT also
            relaxes bounds by 1e-8), hence 1e-6 there.
        flat: maps an adapter's ``res.x`` to the flat vector compared with ``x_star``.
    """

    __test__ = False  # not a pytest class

    name: str
    fun: Callable
    x0: Any
    args: tuple = ()
    residual: Callable | None = None
    bounds: list | None = None
    constraints: list = dataclasses.field(default_factory=list)
    x_star: np.ndarray | None = None
    f_star: float = 0.0
    x_tol: float = 1e-6
    f_tol: float = 1e-8
    flat: Callable = staticmethod(lambda x: np.asarray(x, dtype=np.float64).reshape(-1))

    @property
    def constrained(self) -> bool:
        return bool(self.constraints)

    @property
    def bounded(self) -> bool:
        return self.bounds is not None

    @property
    def unconstrained(self) -> bool:
        return not self.constrained and not self.bounded


PROBLEMS: dict[str, Callable[[], TestProblem]] = {}


def register(make: Callable[[], TestProblem]) -> Callable[[], TestProblem]:
    """Add a problem factory to `PROBLEMS` under its function name."""
    if make.__name__ in PROBLEMS:
        raise ValueError(f"problem {make.__name__!r} registered twice")
    PROBLEMS[make.__name__] = make
    return make


def get(name: str) -> TestProblem:
    """A fresh instance of a registered problem (its functions are module-level objects,
    so two instances share the setup cache)."""
    return PROBLEMS[name]()


# ---------------------------------------------------------------------------------------
# Hock–Schittkowski 71 (inequality + equality + bounds)
# ---------------------------------------------------------------------------------------
def hs071_objective(x):
    return x[0] * x[3] * jnp.sum(x[:3]) + x[2]


def hs071_ineq(x):
    return jnp.prod(x) - 25.0


def hs071_eq(x):
    return jnp.sum(x**2) - 40.0


HS071_CONSTRAINTS = [{"type": "ineq", "fun": hs071_ineq}, {"type": "eq", "fun": hs071_eq}]
HS071_X = np.array([1.0, 4.74299963, 3.82114998, 1.37940829])  # Hock & Schittkowski (1981)
HS071_F = 17.014017289


@register
def hs071():
    return TestProblem("hs071", hs071_objective, np.array([1.0, 5.0, 5.0, 1.0]),
                       bounds=[(1.0, 5.0)] * 4, constraints=HS071_CONSTRAINTS,
                       x_star=HS071_X, f_star=HS071_F, x_tol=1e-5, f_tol=1e-6)


# ---------------------------------------------------------------------------------------
# chained Rosenbrock (unconstrained; also a least-squares residual)
# ---------------------------------------------------------------------------------------
def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_residual(x):
    return jnp.concatenate([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])


@register
def rosenbrock_10():
    return TestProblem("rosenbrock_10", rosenbrock, np.full(10, 0.5),
                       residual=rosenbrock_residual, x_star=np.ones(10), f_star=0.0,
                       x_tol=1e-5, f_tol=1e-10)


# ---------------------------------------------------------------------------------------
# 2-D Bratu (least squares; reference: Newton with a hand-assembled Jacobian)
# ---------------------------------------------------------------------------------------
def bratu_residual(u, lam, N):
    """Residual of −Δu = λ eᵘ on the unit square, N×N interior grid, u = 0 on the boundary."""
    h = 1.0 / (N + 1)
    U = u.reshape(N, N)
    P = jnp.pad(U, 1)
    lap = (4.0 * U - P[:-2, 1:-1] - P[2:, 1:-1] - P[1:-1, :-2] - P[1:-1, 2:]) / h**2
    return (lap - lam * jnp.exp(U)).reshape(-1)


def bratu_objective(u, lam, N):
    return jnp.sum(bratu_residual(u, lam, N) ** 2)


def bratu_reference(N, lam):
    """Newton's method with a hand-assembled sparse Jacobian (independent of the package)."""
    h = 1.0 / (N + 1)
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1])
    A = (sp.kron(sp.eye(N), T) + sp.kron(T, sp.eye(N))) / h**2
    u = np.zeros(N * N)
    for _ in range(30):
        r = A @ u - lam * np.exp(u)
        du = spla.spsolve(sp.csc_matrix(A - lam * sp.diags(np.exp(u))), r)
        u -= du
        if np.max(np.abs(du)) < 1e-14:
            break
    return u


@register
def bratu_2d():
    N, lam = 8, 2.0
    return TestProblem("bratu_2d", bratu_objective, np.zeros(N * N), args=(lam, N),
                       residual=bratu_residual, x_star=bratu_reference(N, lam), f_star=0.0,
                       x_tol=1e-7, f_tol=1e-12)


# ---------------------------------------------------------------------------------------
# bounds only: a separable quadratic whose minimiser is clipped (closed form)
# ---------------------------------------------------------------------------------------
_BOX_C = np.linspace(-2.0, 2.0, 7)
_BOX_LO, _BOX_HI = -1.0, 1.5


def box_objective(x, c):
    return jnp.sum((x - c) ** 2)


def box_residual(x, c):
    return x - c


@register
def box_quadratic():
    xs = np.clip(_BOX_C, _BOX_LO, _BOX_HI)
    return TestProblem("box_quadratic", box_objective, np.zeros(7), args=(jnp.asarray(_BOX_C),),
                       residual=box_residual, bounds=[(_BOX_LO, _BOX_HI)] * 7, x_star=xs,
                       f_star=float(np.sum((xs - _BOX_C) ** 2)), x_tol=1e-5, f_tol=1e-6)


# ---------------------------------------------------------------------------------------
# equality + inequality: Euclidean projection onto the simplex (closed form by sorting)
# ---------------------------------------------------------------------------------------
_SIMPLEX_A = np.array([0.9, -0.4, 0.6, 0.1, 1.2, -0.8])


def simplex_objective(x):
    return 0.5 * jnp.sum((x - _SIMPLEX_A) ** 2)


def simplex_sum(x):
    return jnp.sum(x) - 1.0


def simplex_nonneg(x):
    return x


def simplex_projection(a):
    u = np.sort(a)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.nonzero(u - css / np.arange(1, a.size + 1) > 0)[0][-1]
    return np.maximum(a - css[k] / (k + 1), 0.0)


@register
def simplex_projection_eq_ineq():
    xs = simplex_projection(_SIMPLEX_A)
    return TestProblem(
        "simplex_projection_eq_ineq", simplex_objective, np.full(6, 1.0 / 6.0),
        constraints=[{"type": "eq", "fun": simplex_sum},
                     so.NonlinearConstraint(simplex_nonneg, 0.0, np.inf)],
        x_star=xs, f_star=float(0.5 * np.sum((xs - _SIMPLEX_A) ** 2)), x_tol=1e-5, f_tol=1e-6)


# ---------------------------------------------------------------------------------------
# the seed fit: E(g) = ||Y GᵀLG B − X||² over the nonzeros g of G (a PatternMatrix x0)
# ---------------------------------------------------------------------------------------
def _seed_data():
    rng = np.random.default_rng(7)
    p, q = 24, 16
    rows = np.repeat(np.arange(p), 2)
    cols = np.stack([np.arange(p) % q, (3 * np.arange(p) + 5) % q], 1).reshape(-1)
    key = np.unique(rows * q + cols)
    rows, cols = np.divmod(key, q)
    L = np.eye(p) * 2.0 + np.eye(p, k=1) * 0.5 - np.eye(p, k=-1) * 0.3
    Y = np.eye(q)[::2]  # a selection: observes every other row
    B = np.eye(q)
    g_true = rng.normal(size=rows.size)
    Gt = sa.PatternMatrix(g_true, rows, cols, (p, q)).todense()
    X = Y @ Gt.T @ L @ Gt @ B
    g0 = g_true + 0.05 * rng.normal(size=g_true.size)
    return rows, cols, (p, q), L, Y, B, X, g0


def seed_residual(G, L, Y, B, X):
    return (Y @ (G.T @ (L @ (G @ B)))) - X


def seed_objective(G, L, Y, B, X):
    return jnp.sum(seed_residual(G, L, Y, B, X) ** 2)


@register
def seed_fit():
    rows, cols, shape, L, Y, B, X, g0 = _seed_data()
    args = tuple(jnp.asarray(a) for a in (L, Y, B, X))
    G0 = sa.PatternMatrix(g0, rows, cols, shape)
    # minimisers are not unique (Y observes part of GᵀLG): check E = 0 only
    return TestProblem("seed_fit", seed_objective, G0, args=args, residual=seed_residual,
                       x_star=None, f_star=0.0, f_tol=1e-12,
                       flat=lambda x: np.asarray(sa.ravel_parameters(x)[0]))


def counting(fun):
    """``(f, traces)``: ``f`` calls ``fun`` and appends to ``traces`` each time it runs in
    Python, i.e. each time JAX traces it (a cache hit or a compiled call appends nothing)."""
    traces = []

    def f(*a):
        traces.append(1)
        return fun(*a)

    return f, traces


@contextlib.contextmanager
def count_compiles():
    """``with count_compiles() as c:`` — ``c`` lists one duration per XLA compilation
    (``jax.monitoring``'s backend-compile event) made inside the block."""
    import jax.monitoring

    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def main_example():
    """The README's main example module (``examples/sparse_operator_fit.py``)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "sparse_operator_fit.py"
    spec = importlib.util.spec_from_file_location("sparse_operator_fit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
