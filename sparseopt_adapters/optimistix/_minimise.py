"""Newton's method for ``optx.minimise`` with an exact, colored sparse Hessian.

optimistix has quasi-Newton minimisers (BFGS, DFP, LBFGS) but no exact-Hessian Newton. Here
an ``optx.AbstractQuasiNewton`` whose "Hessian update" evaluates the true Hessian from one
Hessian-vector product per color supplies the second-order model; optimistix's own step,
line search and termination do the rest. The descent is a *modified* Newton step: it solves
``(H + τI) d = ∇f`` with the first shift of the ladder ``0, τ₁, 10τ₁, 100τ₁, …`` for which
``H + τI`` is positive definite, where ``τ₁ = max(10⁻¹²·max|Hᵢⱼ|, τ_prev/4, −min Hᵢᵢ)`` and
``τ_prev`` is the previous step's shift. Definiteness is read off the pivots of a symmetric sparse
factorisation (SuperLU in symmetric mode, diagonal pivots only). Near a strict minimiser
``τ = 0`` (pure Newton, quadratic convergence); away from one, or at saddles, the shift makes
``-d`` a descent direction and the backtracking line search makes progress.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from equinox.internal import ω
from jaxtyping import PyTree, Scalar
from optimistix._misc import default_verbose

from .._coloring import ColoringResult, color_hessian
from .._compressed import decompress
from .._errors import DenseColoringWarning
from .._gauss_newton import check_x64
from .._pattern import SparsityPattern
from ._detect import MeshField, constrain_tree, flat_size, fn_pattern, struct_ravel, structure_of
from ._operator import SparseMatrixOperator

_METHODS = ("auto", "star", "acyclic")
_MAX_SHIFTS = 40
_SHIFT_FLOOR = 1e-12  # smallest shift, relative to max |H_ij|


# ---------------------------------------------------------------------------------------
# host side: the modified Newton solve
# ---------------------------------------------------------------------------------------


def _spd_factor(A):
    """SuperLU of ``A`` (symmetric) if its symmetric-pivoted factorisation shows ``A ≻ 0``."""
    try:
        lu = spla.splu(
            A,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
    except RuntimeError:  # exactly singular
        return None
    if not np.array_equal(lu.perm_r, lu.perm_c):  # an off-diagonal pivot: inertia unknown
        return None
    d = lu.U.diagonal()
    return lu if np.all(d > 0) and np.all(np.isfinite(d)) else None


def host_modified_newton(values, grad, tau_prev, *, pattern: SparsityPattern):
    """Solve ``(H + τI) d = grad`` with the smallest positive-definite shift of the ladder."""
    values = np.asarray(values, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    n = pattern.shape[0]
    H = sp.csr_array((values, (pattern.rows, pattern.cols)), shape=(n, n)).tocsc()
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    beta = _SHIFT_FLOOR * max(scale, 1e-30)
    eye = sp.identity(n, format="csc")
    min_diag = float(np.min(H.diagonal())) if n else 0.0
    tau = 0.0
    for k in range(_MAX_SHIFTS):
        lu = _spd_factor(H if tau == 0.0 else (H + tau * eye).tocsc())
        if lu is not None:
            d = lu.solve(grad)
            if np.all(np.isfinite(d)):
                return d.astype(np.float64), np.float64(tau)
        if k == 0:
            # a quarter of the last shift (needed one step ago), at least β, and past the
            # most negative diagonal entry (λ_min(H) ≤ min Hᵢᵢ)
            tau = max(beta, float(tau_prev) / 4.0, -1.001 * float(min_diag))
        else:
            tau = 10.0 * tau
    return np.full(n, np.nan), np.float64(tau)


# ---------------------------------------------------------------------------------------
# descent
# ---------------------------------------------------------------------------------------


class _ModifiedNewtonState(eqx.Module):
    newton: Any
    tau: jax.Array
    result: optx.RESULTS


class _ModifiedNewtonDescent(optx.AbstractDescent):
    """``-step_size · (H + τI)⁻¹ ∇f`` with ``H`` a [`SparseMatrixOperator`][]."""

    def init(self, y, f_info_struct):
        del f_info_struct
        return _ModifiedNewtonState(y, jnp.array(0.0), optx.RESULTS.successful)

    def query(self, y, f_info, state):
        del y
        hessian = f_info.hessian
        ravel, unravel, n = struct_ravel(hessian.in_structure())
        fn = functools.partial(host_modified_newton, pattern=hessian.pattern)
        d, tau = jax.pure_callback(
            fn,
            (jax.ShapeDtypeStruct((n,), jnp.float64), jax.ShapeDtypeStruct((), jnp.float64)),
            hessian.values.astype(jnp.float64),
            ravel(f_info.grad),
            state.tau,
            vmap_method="sequential",
        )
        ok = jnp.all(jnp.isfinite(d))
        result = optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.singular)
        return _ModifiedNewtonState(unravel(d), tau, result)

    def step(self, step_size, state):
        return (-step_size * state.newton**ω).ω, state.result


# ---------------------------------------------------------------------------------------
# the exact-Hessian "quasi-Newton" that optimistix iterates
# ---------------------------------------------------------------------------------------


class _HessianPlan(eqx.Module):
    coloring: ColoringResult = eqx.field(static=True)
    y_struct: Any = eqx.field(static=True)


def _hessian_values(fn, args, plan: _HessianPlan, y) -> jax.Array:
    """Hessian values on ``plan.coloring.pattern`` at ``y``: one HVP per color."""
    c = plan.coloring
    if c.pattern.nnz == 0:
        return jnp.zeros((0,), jnp.float64)
    ravel, unravel, _ = struct_ravel(plan.y_struct)
    x = ravel(y)

    def grad(v):
        return ravel(jax.grad(lambda yy: fn(yy, args)[0])(unravel(v)))

    colors = np.asarray(c.column_colors)
    seeds = (np.arange(c.n_colors)[:, None] == colors[None, :]).astype(np.float64)
    hvps = jax.vmap(lambda s: jax.jvp(grad, (x,), (s,))[1])(jnp.asarray(seeds))
    return decompress(c, hvps.reshape(-1))


class _ExactHessianNewton(optx.AbstractQuasiNewton):
    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar]
    use_inverse: bool
    descent: _ModifiedNewtonDescent
    search: optx.AbstractSearch
    verbose: Callable[..., None]
    hessian_at: Callable
    plan: _HessianPlan = eqx.field(static=True)

    def _operator(self, values):
        return SparseMatrixOperator(
            values, self.plan.coloring.pattern, self.plan.y_struct, tags=(lx.symmetric_tag,)
        )

    def init_hessian(self, y, f, grad):
        values = jnp.zeros((self.plan.coloring.pattern.nnz,), jnp.float64)
        return optx.FunctionInfo.EvalGradHessian(f, grad, self._operator(values)), None

    def update_hessian(self, y, y_eval, f_info, f_eval_info, hessian_update_state):
        values = self.hessian_at(y_eval)
        info = optx.FunctionInfo.EvalGradHessian(
            f_eval_info.f, f_eval_info.grad, self._operator(values)
        )
        return info, None


class _State(eqx.Module):
    inner: Any
    plan: _HessianPlan = eqx.field(static=True)


class Newton(optx.AbstractMinimiser):
    """Newton's method with an exact colored sparse Hessian, for ``optx.minimise``.

    Each accepted step evaluates the Hessian from one Hessian-vector product per color
    (forward-over-reverse) and solves a *modified* Newton system ``(H + τI) d = ∇f`` by a sparse
    factorisation, with the smallest shift ``τ ≥ 0`` that makes it positive definite (so the
    step is a descent direction even where ``H`` is indefinite); a backtracking Armijo line
    search (optimistix's) globalises it. Near a strict minimiser ``τ = 0``: pure Newton,
    quadratic convergence.

    The Hessian pattern is detected once per trace (closure constants by value, ``args`` as
    unknown values; see [`GaussNewton`][sparseopt_adapters.optimistix.GaussNewton]). ``y0`` may
    be any pytree of arrays and [`PatternMatrix`][sparseopt_adapters.PatternMatrix] parameters.

    Args:
        rtol: Relative tolerance for terminating the solve (as in optimistix).
        atol: Absolute tolerance for terminating the solve.
        norm: The norm of the termination test (default ``optx.max_norm``).
        pattern: The Hessian pattern (parameters flattened in ``jax.tree.leaves`` order) to
            skip detection; a lower or upper triangle is symmetrised.
        method: Hessian coloring: ``"auto"``, ``"star"`` or ``"acyclic"``.
        search: The line search (default ``optx.BacktrackingArmijo()``).
        verbose: As in optimistix: ``True``, ``False`` or a callable.
        mesh: A `jax.sharding.Mesh` (or a list of devices): ``y``, the gradient and the
            Hessian-vector products run split over it (``docs/sharding.md``); the values go
            to the host factorisation once per step. ``None``: one device.

    Example:
        >>> import jax.numpy as jnp, optimistix as optx
        >>> from sparseopt_adapters import optimistix as sa_optx
        >>> def rosenbrock(y, args):
        ...     return jnp.sum(100.0 * (y[1:] - y[:-1] ** 2) ** 2 + (1.0 - y[:-1]) ** 2)
        >>> sol = optx.minimise(rosenbrock, sa_optx.Newton(rtol=1e-10, atol=1e-10), jnp.zeros(8))
        >>> sol.value
        Array([1., 1., 1., 1., 1., 1., 1., 1.], dtype=float64)
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar]
    pattern: SparsityPattern | None = eqx.field(static=True)
    method: str = eqx.field(static=True)
    search: optx.AbstractSearch
    verbose: bool | Callable[..., None]
    mesh: MeshField = eqx.field(static=True)

    def __init__(
        self,
        rtol: float,
        atol: float,
        norm: Callable[[PyTree], Scalar] = optx.max_norm,
        *,
        pattern: SparsityPattern | None = None,
        method: str = "auto",
        search: optx.AbstractSearch | None = None,
        verbose: bool | Callable[..., None] = False,
        mesh=None,
    ):
        self.mesh = MeshField.of(mesh, "Newton")
        if method not in _METHODS:
            raise ValueError(f"Newton: method must be one of {_METHODS}, got {method!r}.")
        if pattern is not None and not isinstance(pattern, SparsityPattern):
            raise TypeError(
                "Newton: pattern must be a sa.SparsityPattern of the Hessian (e.g. from "
                f"sa.hessian_sparsity(fn, y0, args)), got {type(pattern).__name__}."
            )
        self.rtol, self.atol, self.norm = rtol, atol, norm
        self.pattern, self.method = pattern, method
        self.search = optx.BacktrackingArmijo() if search is None else search
        self.verbose = verbose

    def _plan(self, fn, y, args) -> _HessianPlan:
        y_struct = structure_of(y)
        n = flat_size(y_struct)
        pattern = self.pattern
        if pattern is None:
            pattern = fn_pattern(fn, y, args, hessian=True)
        elif pattern.shape != (n, n):
            raise ValueError(
                f"Newton: pattern has shape {pattern.shape}, but y has {n} entries, so the "
                f"Hessian is {n}×{n} (y flattened in jax.tree.leaves order). Detect it with "
                "sa.hessian_sparsity(fn, y0, args), or leave pattern=None."
            )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DenseColoringWarning)
            coloring = color_hessian(pattern, method=self.method)
        return _HessianPlan(coloring, y_struct)

    def _inner(self, plan, fn, args) -> _ExactHessianNewton:
        return _ExactHessianNewton(
            rtol=self.rtol,
            atol=self.atol,
            norm=self.norm,
            use_inverse=False,
            descent=_ModifiedNewtonDescent(),
            search=self.search,
            verbose=default_verbose(self.verbose),
            hessian_at=functools.partial(_hessian_values, fn, args, plan),
            plan=plan,
        )

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        check_x64("sa_optx.Newton")
        if not (isinstance(f_struct, jax.ShapeDtypeStruct) and f_struct.shape == ()):
            raise ValueError(
                f"Newton minimises a scalar, but fn returns {f_struct}. For a residual vector "
                "use optx.least_squares with sa_optx.LevenbergMarquardt."
            )
        plan = self._plan(fn, y, args)
        inner = self._inner(plan, fn, args)
        y = constrain_tree(y, self.mesh, host_callback=True)  # the modified Newton solve
        return _State(inner.init(fn, y, args, options, f_struct, aux_struct, tags), plan)

    def step(self, fn, y, args, options, state, tags):
        inner = self._inner(state.plan, fn, args)
        y = constrain_tree(y, self.mesh, host_callback=True)  # mesh=: y split (not on CPU)
        y, inner_state, aux = inner.step(fn, y, args, options, state.inner, tags)
        return constrain_tree(y, self.mesh, True), _State(inner_state, state.plan), aux

    def terminate(self, fn, y, args, options, state, tags):
        inner = self._inner(state.plan, fn, args)
        return inner.terminate(fn, y, args, options, state.inner, tags)

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        inner = self._inner(state.plan, fn, args)
        y, aux, stats = inner.postprocess(fn, y, aux, args, options, state.inner, tags, result)
        return constrain_tree(y, self.mesh, True), aux, stats
