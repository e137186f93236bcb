"""scipy.optimize with exact sparse derivatives of JAX functions.

Everything here ends in a scipy call with the host's own conventions: flat float64 numpy
vectors in, scipy sparse matrices / numpy arrays out, scipy's ``OptimizeResult`` back. The JAX
side is built once per problem (detection, coloring, one ``jax.jit`` per quantity) and every
callback is one compiled call plus a copy into numpy.

Why the defaults are what they are (measured; see ``PITFALLS.md``):

- ``NonlinearConstraint(hess=None)`` makes trust-constr keep a *dense* ``n × n`` BFGS matrix
  per constraint, so every constraint built here carries an exact ``hess(x, v)``.
- ``least_squares`` with a sparse Jacobian solves its subproblems with LSMR, whose default
  tolerances stalled a 2-D Bratu problem (97 743 LSMR iterations instead of 6 outer steps), so
  `least_squares` passes ``tr_options={'atol': 1e-12, 'btol': 1e-12}`` unless told otherwise.
- scipy probes ``LinearOperator``\\ s with ``int8`` vectors: every vector is cast to float64
  before it reaches JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from sparseopt_adapters._cache import cached
from sparseopt_adapters._compressed import (
    SparseHessian,
    SparseJacobian,
    sparse_hessian,
    sparse_jacobian,
)
from sparseopt_adapters._detection import hessian_sparsity, jacobian_sparsity
from sparseopt_adapters._host import (
    Variables,
    XCache,
    as_float_vector,
    canonical_bounds,
    check_options,
    normalize_constraints,
    require_x64,
    scalar_function,
    setup_key,
    split_args,
    to_numpy,
    vector_function,
)
from sparseopt_adapters._pattern import SparsityPattern
from sparseopt_adapters._sharding import placement

__all__ = [
    "Derivatives",
    "derivatives",
    "nonlinear_constraint",
    "minimize",
    "least_squares",
    "DENSE_LIMIT",
    "EXACT_MAX_N",
    "DEFAULT_TR_OPTIONS",
    "LSMR_MAXITER_FACTOR",
]

#: Largest number of entries (``rows × cols``) a Jacobian/Hessian is densified to for the
#: methods that only take dense matrices (``least_squares(method='lm')``,
#: ``tr_solver='exact'``, ``minimize(method='trust-exact' | 'dogleg')``): 10⁷ float64 = 80 MB.
DENSE_LIMIT = 10_000_000

#: `least_squares` hands scipy a *dense* Jacobian (so scipy uses ``tr_solver='exact'``, an
#: SVD per step) when ``n`` is at most this (and ``m·n <= DENSE_LIMIT``) unless
#: ``tr_solver`` is given. With a sparse Jacobian scipy always uses LSMR, which crashes on 1
#: variable (IndexError in its 2-D subspace step), stops at ~1e-16 where the exact solver
#: gives 0 on tiny problems, and was slower at every n measured up to 100 (see
#: ``benchmarks/bench_scipy.py --exact-threshold``).
EXACT_MAX_N = 100

#: LSMR tolerances `least_squares` uses unless ``tr_options`` names them.
DEFAULT_TR_OPTIONS = {"atol": 1e-12, "btol": 1e-12}

#: `least_squares` lets LSMR run ``LSMR_MAXITER_FACTOR · min(m, n)`` iterations (scipy's
#: default is ``min(m, n)``, the exact-arithmetic bound): on the seed energy with cond(J) ≈ 4e3
#: the truncated subproblem solves took 714 function evaluations, 4× took 23.
LSMR_MAXITER_FACTOR = 4

# methods of scipy.optimize.minimize and what each consumes
_NO_DERIVATIVES = {"nelder-mead", "powell", "cobyla", "cobyqa"}
_GRADIENT_ONLY = {"cg", "bfgs", "l-bfgs-b", "tnc", "slsqp"}
_HESSP = {"newton-cg", "trust-ncg", "trust-krylov"}
_DENSE_HESS = {"dogleg", "trust-exact"}
_OLD_STYLE_CONSTRAINTS = {"slsqp", "cobyla"}


# ---------------------------------------------------------------------------------------
# boundary helpers
# ---------------------------------------------------------------------------------------
_as_float_vector = as_float_vector
_to_numpy = to_numpy


def _no_extra_args(args, name):
    if args:
        raise TypeError(
            f"{name} got {len(args)} extra positional argument(s) from scipy. Extra arguments "
            "are bound once when the derivatives are built: pass args=... to "
            "sparseopt_adapters.scipy (derivatives / minimize / least_squares), not to "
            "scipy.optimize.minimize."
        )


def _scalar_fun(fun, variables: Variables, args, caller: str):
    """``fz(z, dyn) -> float64 scalar`` and the bound ``dyn`` (checked by tracing once)."""
    dyn, static = split_args(args)
    fz = scalar_function(fun, variables, static, caller,
                         "For a residual vector use sparseopt_adapters.scipy.least_squares.")
    jax.eval_shape(fz, jnp.asarray(variables.x0), dyn)  # fail early, with a clear message
    return fz, dyn


def _vector_fun(fun, variables: Variables, args, caller: str, what: str = "fun"):
    """``rz(z, dyn) -> 1-D float64`` (outputs raveled), the bound ``dyn`` and the length."""
    dyn, static = split_args(args)
    rz = vector_function(fun, variables, static, caller, what)
    m = int(jax.eval_shape(rz, jnp.asarray(variables.x0), dyn).shape[0])
    return rz, dyn, m


def _key(variables: Variables, args, *extra):
    """Setup-cache key: detection here closes over the arguments, so arrays count by value."""
    return (setup_key(variables, args, args_by_value=True), *extra)


def _hess_pattern(fz, z0, dyn) -> SparsityPattern:
    """Hessian pattern of ``fz(·, dyn)`` with ``dyn``'s values known.

    The bound arguments never change, so they are closed over for detection: their zeros are
    structural (a tridiagonal ``L`` passed in ``args`` keeps the pattern sparse).
    """
    return hessian_sparsity(lambda z: fz(z, dyn), z0)


def _jac_pattern(rz, z0, dyn) -> SparsityPattern:
    """Jacobian pattern of ``rz(·, dyn)`` with ``dyn``'s values known (see `_hess_pattern`)."""
    return jacobian_sparsity(lambda z: rz(z, dyn), z0)


def _hvp_fn(fz):
    def hvp(z, p, dyn):
        return jax.jvp(jax.grad(lambda q: fz(q, dyn)), (z,), (p,))[1]

    return jax.jit(hvp)


def _dense_check(shape, what: str, hint: str):
    size = int(shape[0]) * int(shape[1])
    if size > DENSE_LIMIT:
        raise ValueError(
            f"{what} needs a dense {shape[0]}×{shape[1]} matrix ({size:,} entries, "
            f"{8 * size / 1e9:.1f} GB), above DENSE_LIMIT={DENSE_LIMIT:,}. {hint}"
        )


# ---------------------------------------------------------------------------------------
# objective derivatives
# ---------------------------------------------------------------------------------------
class _ObjectiveSetup:
    """The reusable part of `Derivatives` (held by the setup cache): the flat objective,
    its jitted value-and-gradient and HVP, and the lazily built pattern and sparse Hessian."""

    def __init__(self, fun, variables: Variables, args, caller: str, hess_pattern, mesh=None):
        self.mesh = mesh  # normalized by `placement`
        self.fz, self.dyn0 = _scalar_fun(fun, variables, args, caller)
        self.z0 = jnp.asarray(variables.x0)
        self.value_and_grad = jax.jit(jax.value_and_grad(self.fz))
        self.hvp = _hvp_fn(self.fz)
        self._pattern = hess_pattern
        self._hessian: SparseHessian | None = None

    @property
    def hess_pattern(self) -> SparsityPattern:
        if self._pattern is None:
            self._pattern = _hess_pattern(self.fz, self.z0, self.dyn0)
        return self._pattern

    @property
    def hessian(self) -> SparseHessian:
        if self._hessian is None:
            self._hessian = sparse_hessian(self.fz, self.z0, self.dyn0,
                                           pattern=self.hess_pattern, mesh=self.mesh)
        return self._hessian


class Derivatives:
    """Exact derivatives of a scalar JAX function, in the form scipy.optimize calls them.

    Built by [`derivatives`][sparseopt_adapters.scipy.derivatives]. All methods take scipy's
    flat float64 vector ``x`` (length ``n``); ``fun`` and ``jac`` share one fused, jitted
    value-and-gradient call cached on the last ``x``. The sparse Hessian (detection +
    coloring + compilation) is built on first use.

    Attributes:
        x0: the flat float64 starting point (numpy, length ``n``).
        n: number of variables.
        counts: how often each quantity was computed: ``{"fun_grad", "hess", "hessp"}``.
        mesh: the `jax.sharding.Mesh` the evaluations run on (``None``: one device).
    """

    def __init__(self, fun, x0, args=(), *, hess_pattern: SparsityPattern | None = None,
                 caller: str = "derivatives", mesh=None):
        require_x64(caller, "scipy.optimize")
        self._vars = Variables(x0, caller)
        self.x0 = self._vars.x0.copy()
        self.n = self._vars.n
        self.mesh, place = placement(mesh, self.n, caller)
        self._place = place
        if hess_pattern is not None and (not isinstance(hess_pattern, SparsityPattern)
                                         or hess_pattern.shape != (self.n, self.n)):
            raise ValueError(
                f"{caller}: hess_pattern must be a SparsityPattern of shape "
                f"{(self.n, self.n)} (x0 has {self.n} entries), got {hess_pattern!r}."
            )
        key = _key(self._vars, args, hess_pattern, self.mesh)
        self._setup = cached("scipy.objective", (fun,), key,
                             lambda: _ObjectiveSetup(fun, self._vars, args, caller, hess_pattern,
                                                     self.mesh))
        self._fz = self._setup.fz
        self._dyn, _ = split_args(args)
        vg, dyn = self._setup.value_and_grad, self._dyn
        # mesh=: x goes to the mesh, the values come back to the host once per evaluation
        self._fg = XCache(lambda x: vg(place(x), dyn), lambda r: (float(r[0]), to_numpy(r[1])))
        self.counts = {"fun_grad": 0, "hess": 0, "hessp": 0}

    # -- structure --------------------------------------------------------------------
    @property
    def hess_pattern(self) -> SparsityPattern:
        """The global Hessian pattern (detected on first use)."""
        return self._setup.hess_pattern

    @property
    def hessian(self) -> SparseHessian:
        """The underlying compressed [`SparseHessian`][] (built on first use)."""
        return self._setup.hessian

    @property
    def n_colors(self) -> int:
        """Hessian-vector products per sparse Hessian."""
        return self.hessian.n_colors

    def to_user(self, x):
        """A flat vector (e.g. ``res.x`` of a scipy call) in ``x0``'s structure."""
        return self._vars.result_x(_as_float_vector(x, self.n, "to_user"))

    # -- evaluation -------------------------------------------------------------------
    def _eval(self, x):
        x = _as_float_vector(x, self.n, "Derivatives")
        before = self._fg.count
        out = self._fg(x)
        self.counts["fun_grad"] += self._fg.count - before
        return out

    def fun(self, x, *args) -> float:
        """The objective at ``x`` (a float)."""
        _no_extra_args(args, "Derivatives.fun")
        return self._eval(x)[0]

    def jac(self, x, *args) -> np.ndarray:
        """The gradient at ``x`` (float64 numpy vector, a fresh copy)."""
        _no_extra_args(args, "Derivatives.jac")
        return self._eval(x)[1].copy()

    def fun_and_jac(self, x, *args) -> tuple[float, np.ndarray]:
        """``(fun(x), jac(x))``, for scipy's ``jac=True`` convention."""
        _no_extra_args(args, "Derivatives.fun_and_jac")
        f, g = self._eval(x)
        return f, g.copy()

    def hess(self, x, *args) -> sp.csr_array:
        """The exact Hessian at ``x`` as a scipy CSR array (index arrays precomputed)."""
        _no_extra_args(args, "Derivatives.hess")
        x = _as_float_vector(x, self.n, "Derivatives.hess")
        h = self.hessian
        self.counts["hess"] += 1
        return h.to_scipy(_to_numpy(h.values(self._place(x), self._dyn)), "csr")

    def hessp(self, x, p, *args) -> np.ndarray:
        """The Hessian-vector product ``∇²f(x) p`` (one forward-over-reverse product)."""
        _no_extra_args(args, "Derivatives.hessp")
        x = _as_float_vector(x, self.n, "Derivatives.hessp")
        p = _as_float_vector(p, self.n, "Derivatives.hessp")
        self.counts["hessp"] += 1
        return _to_numpy(self._setup.hvp(self._place(x), self._place(p), self._dyn))

    def hess_operator(self, x, *args) -> LinearOperator:
        """The Hessian at ``x`` as a matrix-free ``LinearOperator`` (products by `hessp`)."""
        _no_extra_args(args, "Derivatives.hess_operator")
        x = _as_float_vector(x, self.n, "Derivatives.hess_operator").copy()
        mv = lambda v: self.hessp(x, np.reshape(v, -1))
        return LinearOperator((self.n, self.n), matvec=mv, rmatvec=mv, dtype=np.float64)

    def hess_dense(self, x, *args) -> np.ndarray:
        """The Hessian as a dense array (for ``trust-exact``/``dogleg``; small ``n`` only)."""
        _no_extra_args(args, "Derivatives.hess_dense")
        _dense_check((self.n, self.n), "A dense Hessian", "Use hess / hessp instead.")
        return self.hess(x).toarray()

    def __repr__(self) -> str:
        h = f", {self._setup._hessian!r}" if self._setup._hessian is not None else ""
        return f"Derivatives(n={self.n}{h})"


def derivatives(fun, x0, args=(), *, hess_pattern: SparsityPattern | None = None,
                mesh=None) -> Derivatives:
    """Exact gradient, sparse Hessian and Hessian-vector products of ``fun`` for scipy.

    Args:
        fun: ``fun(x, *args) -> scalar``, JAX-traceable. ``x`` has ``x0``'s structure: an
            array of ``x0``'s shape, or a pytree of arrays and
            [`PatternMatrix`][sparseopt_adapters.PatternMatrix] parameters.
        x0: the starting point; fixes shapes (a pytree is flattened with
            [`ravel_parameters`][sparseopt_adapters.ravel_parameters]).
        args: extra arguments, bound here once. Do **not** also pass ``args=`` to
            ``scipy.optimize.minimize``: the methods raise if scipy hands them extra arguments.
        hess_pattern: the Hessian pattern, if known; detected on first use otherwise.
        mesh: a `jax.sharding.Mesh` (or a list of devices) the evaluations run on, split
            along the variables or the colours as ``sa.sparse_hessian(mesh=)`` decides
            (``docs/sharding.md``); scipy stays on the host and gets each result once.

    Returns:
        A [`Derivatives`][sparseopt_adapters.scipy.Derivatives] whose ``fun``, ``jac``,
        ``hess`` (scipy CSR), ``hessp`` and ``hess_operator`` take scipy's flat float64 ``x``.
        ``fun`` and ``jac`` share one jitted value-and-gradient call cached on ``x``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, scipy.optimize
        >>> from sparseopt_adapters import scipy as sa_scipy
        >>> f = lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
        >>> d = sa_scipy.derivatives(f, np.zeros(5))
        >>> d.hess(np.zeros(5)).nnz
        13
        >>> res = scipy.optimize.minimize(d.fun, d.x0, jac=d.jac, hess=d.hess,
        ...                               method="trust-constr")
        >>> bool(np.allclose(res.x, 1.0, atol=1e-5))
        True
        >>> res = scipy.optimize.minimize(d.fun, d.x0, jac=d.jac, hessp=d.hessp,
        ...                               method="trust-krylov")
        >>> bool(np.allclose(res.x, 1.0, atol=1e-6))
        True
    """
    return Derivatives(fun, x0, args, hess_pattern=hess_pattern, mesh=mesh)


# ---------------------------------------------------------------------------------------
# constraints
# ---------------------------------------------------------------------------------------
class _ConstraintSetup:
    """The reusable part of `_ConstraintDerivatives` (held by the setup cache)."""

    def __init__(self, cfun, variables: Variables, args, caller: str, what: str, mesh=None):
        self.mesh = mesh
        self.rz, self.dyn0, self.m = _vector_fun(cfun, variables, args, caller, what)
        self.z0 = jnp.asarray(variables.x0)
        self.c = jax.jit(self.rz)
        rz = self.rz

        def vc(z, v, dyn):
            return jnp.dot(v, rz(z, dyn))

        self.vc = vc
        self.hvp = jax.jit(
            lambda z, v, p, dyn: jax.jvp(jax.grad(lambda q: vc(q, v, dyn)), (z,), (p,))[1]
        )
        self._jacobian = None
        self._hess_pattern = None
        self._hessian = None

    @property
    def jacobian(self) -> SparseJacobian:
        if self._jacobian is None:
            self._jacobian = sparse_jacobian(
                self.rz, self.z0, self.dyn0, pattern=_jac_pattern(self.rz, self.z0, self.dyn0),
                mesh=self.mesh)
        return self._jacobian

    @property
    def hess_pattern(self) -> SparsityPattern:
        if self._hess_pattern is None:
            rz = self.rz
            self._hess_pattern = _hess_pattern(
                lambda z, dyn: jnp.sum(rz(z, dyn)), self.z0, self.dyn0
            )
        return self._hess_pattern

    @property
    def hessian(self) -> SparseHessian:
        if self._hessian is None:
            self._hessian = sparse_hessian(
                self.vc, self.z0, jnp.zeros(self.m), self.dyn0, pattern=self.hess_pattern,
                mesh=self.mesh,
            )
        return self._hessian


class _ConstraintDerivatives:
    """Value, sparse Jacobian and ``∇²(vᵀc)`` of one vector constraint on the flat x."""

    def __init__(self, cfun, variables: Variables, args, caller: str, hessian: str,
                 what: str = "fun", mesh=None):
        mesh, self._place = placement(mesh, variables.n, caller)
        self._setup = cached(
            "scipy.constraint", (cfun,), _key(variables, args, mesh),
            lambda: _ConstraintSetup(cfun, variables, args, caller, what, mesh))
        self._dyn, _ = split_args(args)
        self.m = self._setup.m
        self.n = variables.n
        self._hessian_mode = hessian

    @property
    def jacobian(self) -> SparseJacobian:
        return self._setup.jacobian

    @property
    def hess_pattern(self) -> SparsityPattern:
        return self._setup.hess_pattern

    @property
    def hessian(self) -> SparseHessian:
        return self._setup.hessian

    def fun(self, x):
        x = self._place(_as_float_vector(x, self.n, "constraint fun"))
        return _to_numpy(self._setup.c(x, self._dyn))

    def jac(self, x):
        x = self._place(_as_float_vector(x, self.n, "constraint jac"))
        J = self.jacobian
        return J.to_scipy(_to_numpy(J.values(x, self._dyn)), "csr")

    def jac_dense(self, x):
        _dense_check((self.m, self.n), "A dense constraint Jacobian", "Use method='trust-constr'.")
        return self.jac(x).toarray()

    def hess(self, x, v):
        x = _as_float_vector(x, self.n, "constraint hess")
        v = _as_float_vector(v, self.m, "constraint hess (multipliers v)")
        if _use_operator(self._hessian_mode, self.hess_pattern):
            x = x.copy()
            hvp, dyn = self._setup.hvp, self._dyn
            mv = lambda p: _to_numpy(
                hvp(x, v, _as_float_vector(p, self.n, "constraint hess matvec"), dyn)
            )
            return LinearOperator((self.n, self.n), matvec=mv, rmatvec=mv, dtype=np.float64)
        H = self.hessian
        return H.to_scipy(_to_numpy(H.values(self._place(x), v, self._dyn)), "csr")


def _use_operator(mode: str, pattern: SparsityPattern) -> bool:
    if mode == "sparse":
        return False
    if mode == "operator":
        return True
    n = pattern.shape[0]
    return n > 200 and pattern.nnz > 0.2 * n * n


def nonlinear_constraint(
    fun, x0, lb=-np.inf, ub=np.inf, args=(), *, keep_feasible=False, hessian: str = "auto"
) -> so.NonlinearConstraint:
    """A ``scipy.optimize.NonlinearConstraint`` with an exact sparse ``jac`` and ``hess``.

    Without ``hess``, scipy gives every nonlinear constraint a dense ``n × n`` BFGS
    approximation; this one carries ``hess(x, v) = ∇²(vᵀ c)(x)`` from colored
    Hessian-vector products (``v`` is the multiplier vector scipy passes at call time) and a
    colored sparse Jacobian in CSR.

    Args:
        fun: ``fun(x, *args) -> array``, JAX-traceable; ``x`` in ``x0``'s structure.
        x0: an example point (array or pytree), as for [`derivatives`][].
        lb, ub: bounds on ``fun(x)`` (raveled), as in ``NonlinearConstraint``.
        args: extra arguments bound to ``fun``.
        keep_feasible: passed to ``NonlinearConstraint``.
        hessian: ``"sparse"`` (CSR), ``"operator"`` (matrix-free ``LinearOperator``) or
            ``"auto"`` (operator when the Hessian pattern is more than 20 % dense and
            ``n > 200``).

    Returns:
        A ``NonlinearConstraint`` on scipy's flat float64 vector.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from sparseopt_adapters import scipy as sa_scipy
        >>> con = sa_scipy.nonlinear_constraint(lambda x: x[1:] * x[:-1], np.ones(4), 1.0, 1.0)
        >>> con.jac(np.arange(4.0)).toarray()
        array([[1., 0., 0., 0.],
               [0., 2., 1., 0.],
               [0., 0., 3., 2.]])
        >>> con.hess(np.ones(4), np.array([1.0, 0.0, 0.0])).toarray()[:2, :2]
        array([[0., 1.],
               [1., 0.]])
    """
    _check_hessian_mode(hessian, "nonlinear_constraint")
    require_x64("nonlinear_constraint", "scipy.optimize")
    variables = Variables(x0, "nonlinear_constraint")
    cd = _ConstraintDerivatives(fun, variables, args, "nonlinear_constraint", hessian)
    from sparseopt_adapters._host import Constraint

    lo, hi = Constraint(fun, args, lb, ub, "the constraint", "nonlinear").limits(
        cd.m, "nonlinear_constraint")
    return so.NonlinearConstraint(
        cd.fun, lo, hi, jac=cd.jac, hess=cd.hess, keep_feasible=keep_feasible
    )


def _check_hessian_mode(hessian, caller):
    if hessian not in ("auto", "sparse", "operator"):
        raise ValueError(
            f"{caller}: hessian must be 'auto', 'sparse' or 'operator', got {hessian!r}."
        )


def _convert_constraints(constraints, variables: Variables, method: str, hessian: str,
                         mesh=None):
    """User constraints -> what scipy's ``method`` takes, with our derivatives filled in.

    Canonical form and validation (keys, types, limit lengths, ``lb <= ub``) are the host
    layer's (`_host.normalize_constraints`), shared with the IPOPT adapter. A ``jac`` or
    ``hess`` the user set is kept (scipy's meaning); the IPOPT adapter ignores them.
    """
    caller = "minimize"
    out = []
    for con in normalize_constraints(constraints, caller):
        where = f"{caller}: {con.label}"
        if con.kind == "linear":
            A = con.original.A
            rows = 1 if np.ndim(A) == 1 else int(A.shape[0])
            lo, hi = con.limits(rows, caller)
            out.append(so.LinearConstraint(A, lo, hi, keep_feasible=con.keep_feasible))
            continue
        cargs = con.args
        user_jac = con.jac
        if user_jac is not None and con.kind == "dict" and cargs:
            user_jac = _bind_args(user_jac, cargs)
        cd = _ConstraintDerivatives(con.fun, variables, cargs, where, hessian,
                                    what=f"{con.label} fun", mesh=mesh)
        lo, hi = con.limits(cd.m, caller)
        keep = con.keep_feasible
        if method in _NO_DERIVATIVES:
            out.append(so.NonlinearConstraint(cd.fun, lo, hi, keep_feasible=keep))
            continue
        jac = user_jac if user_jac is not None else cd.jac
        if method in _OLD_STYLE_CONSTRAINTS:
            # scipy converts to dicts and densifies the Jacobian itself; hess unused
            jac = user_jac if user_jac is not None else cd.jac_dense
            out.append(so.NonlinearConstraint(cd.fun, lo, hi, jac=jac, keep_feasible=keep))
        else:
            hess = con.hess if con.hess is not None else cd.hess
            out.append(so.NonlinearConstraint(cd.fun, lo, hi, jac=jac, hess=hess,
                                              keep_feasible=keep))
    return out


def _bind_args(f, args):
    return lambda x: f(x, *args)


def _scipy_bounds(bounds, n: int, caller: str):
    """Validated bounds as ``scipy.optimize.Bounds`` (``None`` stays ``None``: with bounds,
    trust-constr switches to its interior-point path)."""
    if bounds is None:
        return None
    lo, hi = canonical_bounds(bounds, n, caller)
    keep = getattr(bounds, "keep_feasible", False) if isinstance(bounds, so.Bounds) else False
    return so.Bounds(lo, hi, keep_feasible=keep)


def _check_finite_start(d: Derivatives, caller: str) -> None:
    """A NaN/inf objective or gradient at x0 is reported as such (scipy would iterate and
    end with an unrelated message, e.g. "maximum number of function evaluations")."""
    f, g = d._eval(d.x0)
    if not np.isfinite(f):
        raise ValueError(
            f"{caller}: the objective is {f} at x0. Start from a point where fun is finite "
            "(check log/sqrt/division at x0, or the data passed in args)."
        )
    bad = np.flatnonzero(~np.isfinite(g))
    if bad.size:
        raise ValueError(
            f"{caller}: the objective gradient is not finite at x0 ({bad.size} of {g.size} "
            f"entries, first at flat index {int(bad[0])}: {g[bad[0]]}). Start from a point "
            "where fun is differentiable (e.g. not sqrt(0) or |x| at 0)."
        )


# ---------------------------------------------------------------------------------------
# minimize
# ---------------------------------------------------------------------------------------
def minimize(
    fun: Callable,
    x0: Any,
    args=(),
    *,
    method: str | Callable = "trust-constr",
    bounds=None,
    constraints=(),
    options: dict | None = None,
    callback: Callable | None = None,
    tol: float | None = None,
    hessian: str = "auto",
    mesh=None,
) -> so.OptimizeResult:
    """``scipy.optimize.minimize`` with exact sparse derivatives of a JAX objective.

    Builds the gradient, the colored sparse Hessian (or Hessian-vector products) of ``fun``
    and the sparse Jacobians and exact Hessians ``hess(x, v)`` of every nonlinear constraint,
    and hands each method what it can use:

    | method | derivatives passed |
    | --- | --- |
    | ``trust-constr`` (default) | ``jac``, ``hess`` (CSR); constraints: ``jac`` (CSR), |
    | | ``hess(x, v)`` |
    | ``Newton-CG``, ``trust-ncg``, ``trust-krylov`` | ``jac``, ``hessp`` |
    | ``dogleg``, ``trust-exact`` | ``jac``, dense ``hess`` (up to `DENSE_LIMIT` entries) |
    | ``CG``, ``BFGS``, ``L-BFGS-B``, ``TNC`` | ``jac`` |
    | ``SLSQP`` | ``jac``, dense constraint Jacobians |
    | ``Nelder-Mead``, ``Powell``, ``COBYLA``, ``COBYQA`` | none (values only) |

    Args:
        fun: ``fun(x, *args) -> scalar``, JAX-traceable. ``x`` has ``x0``'s structure.
        x0: starting point: an array (any shape) or a pytree of arrays and
            [`PatternMatrix`][sparseopt_adapters.PatternMatrix] parameters
            ([`Fixed`][sparseopt_adapters.Fixed] leaves are held constant). scipy sees the
            flat float64 vector of [`ravel_parameters`][sparseopt_adapters.ravel_parameters].
        args: extra arguments of ``fun``, bound once: arrays are passed to the compiled
            functions, anything else is closed over. Sparsity detection sees their values,
            so zeros in them are structural (e.g. a tridiagonal matrix stays tridiagonal).
        method: a ``scipy.optimize.minimize`` method name.
        bounds: ``scipy.optimize.Bounds`` or a sequence of ``(lo, hi)`` pairs, on the flat
            vector (``None`` for no bound).
        constraints: a ``NonlinearConstraint`` (JAX-traceable ``fun`` taking ``x`` in
            ``x0``'s structure), a ``LinearConstraint``, a dict ``{'type': 'eq'|'ineq',
            'fun': ..., 'args': ...}`` (``ineq`` means ``fun(x) >= 0``), or a list of these.
            A callable ``jac`` or non-BFGS ``hess`` you set on a ``NonlinearConstraint`` is
            kept; scipy's defaults (``'2-point'``, ``BFGS()``) are replaced by exact ones.
        options: passed to scipy unchanged.
        callback: passed to scipy unchanged (it sees scipy's flat ``x``).
        tol: passed to scipy unchanged.
        hessian: how trust-constr gets Hessians: ``"sparse"`` (CSR from colored products),
            ``"operator"`` (matrix-free products) or ``"auto"`` (operator when a Hessian
            pattern is more than 20 % dense and ``n > 200``, sparse otherwise).
        mesh: a `jax.sharding.Mesh` (or a list of devices) the objective's and constraints'
            derivatives are evaluated on (see [`derivatives`][]); scipy stays on the host.

    Returns:
        scipy's ``OptimizeResult``. ``res.x`` is in ``x0``'s structure (a numpy array of
        ``x0``'s shape, or a pytree like ``x0``); ``res.x_flat`` is scipy's flat vector and
        ``res.derivatives`` the [`Derivatives`][sparseopt_adapters.scipy.Derivatives] used.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from scipy.optimize import NonlinearConstraint
        >>> from sparseopt_adapters import scipy as sa_scipy
        >>> f = lambda x: jnp.sum((x - 2.0) ** 2)
        >>> circle = NonlinearConstraint(lambda x: jnp.sum(x ** 2), 2.0, 2.0)
        >>> res = sa_scipy.minimize(f, np.array([2.0, 0.0]), constraints=circle)
        >>> np.round(res.x, 6)
        array([1., 1.])
    """
    options = check_options(options, "minimize") or None
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, int | float | np.number)):
        raise TypeError(f"minimize: tol must be a real number or None, got {tol!r}.")
    _check_hessian_mode(hessian, "minimize")
    d = Derivatives(fun, x0, args, caller="minimize", mesh=mesh)
    variables = d._vars
    scipy_bounds = _scipy_bounds(bounds, d.n, "minimize")
    meth = method.lower() if isinstance(method, str) else None
    kw: dict[str, Any] = {}
    if meth is None or meth not in _NO_DERIVATIVES:
        kw["jac"] = d.jac
    if meth is None:
        kw["hess"] = d.hess
    elif meth == "trust-constr":
        if _use_operator(hessian, d.hess_pattern):
            kw["hessp"] = d.hessp
        else:
            kw["hess"] = d.hess
    elif meth in _HESSP:
        kw["hessp"] = d.hessp
    elif meth in _DENSE_HESS:
        _dense_check((d.n, d.n), f"method={method!r}",
                     "Use 'trust-krylov' or 'trust-constr', which take sparse Hessians.")
        kw["hess"] = d.hess_dense
    cons = _convert_constraints(constraints, variables, meth or "", hessian, d.mesh)
    _check_finite_start(d, "minimize")
    res = so.minimize(
        d.fun,
        d.x0.copy(),
        method=method,
        bounds=scipy_bounds,
        constraints=cons if cons else (),
        options=options,
        callback=callback,
        tol=tol,
        **kw,
    )
    res.x_flat = np.asarray(res.x, dtype=np.float64)
    res.x = variables.result_x(res.x_flat)
    res.derivatives = d
    return res


# ---------------------------------------------------------------------------------------
# least_squares
# ---------------------------------------------------------------------------------------
_LSQ_REJECTED = {
    "jac": "the Jacobian is computed exactly by sparse AD",
    "jac_sparsity": "the sparsity pattern is detected from fun",
    "kwargs": "fun receives positional args only; bind keyword arguments with "
    "functools.partial",
}


def least_squares(fun: Callable, x0: Any, args=(), *, mesh=None, **kwargs) -> so.OptimizeResult:
    """``scipy.optimize.least_squares`` with an exact colored sparse Jacobian.

    The Jacobian pattern of ``fun`` is detected once, colored, and each ``jac`` call costs
    one batch of ``n_colors`` JVPs/VJPs; scipy receives a CSR array (no ``jac_sparsity`` and
    no finite differences).

    LSMR settings: with a sparse Jacobian scipy always solves the trust-region subproblem
    by LSMR. With LSMR's default tolerances a 2-D Bratu problem at n = 10 000 took
    97 743 LSMR iterations (469 s) instead of 6 outer steps (2.2 s); with its default
    ``maxiter = min(m, n)`` an ill-conditioned fit (the seed energy, cond(J) ≈ 4e3) took 714
    evaluations instead of 23. So ``tr_options`` defaults to ``atol=btol=1e-12``
    (`DEFAULT_TR_OPTIONS`) and ``maxiter = 4·min(m, n)`` (`LSMR_MAXITER_FACTOR`); keys you
    pass in ``tr_options`` win.

    ``method='lm'`` (MINPACK) and ``tr_solver='exact'`` only take dense Jacobians: the sparse
    Jacobian is densified for them when it has at most `DENSE_LIMIT` entries (80 MB), and a
    ``ValueError`` pointing to ``method='trf'`` is raised above that.

    Args:
        fun: ``fun(x, *args) -> residuals`` (any shape or pytree; raveled), JAX-traceable.
            ``x`` has ``x0``'s structure.
        x0: starting point: an array or a pytree of arrays and
            [`PatternMatrix`][sparseopt_adapters.PatternMatrix] parameters.
        args: extra arguments of ``fun``, bound once (as in [`minimize`][]: detection sees
            their values, so zeros in them are structural).
        **kwargs: every other ``scipy.optimize.least_squares`` keyword (``method``,
            ``bounds`` on the flat vector, ``loss``, ``x_scale``, ``ftol``/``xtol``/``gtol``,
            ``max_nfev``, ``tr_solver``, ``tr_options``, ``verbose``, ``callback``, ...) is
            passed through. ``jac``, ``jac_sparsity`` and ``kwargs`` are refused.
        mesh: a `jax.sharding.Mesh` (or a list of devices) the residual and its Jacobian
            are evaluated on (``docs/sharding.md``); scipy stays on the host and gets the
            CSR values once per ``jac`` call.

    Returns:
        scipy's ``OptimizeResult``; ``res.jac`` is the sparse Jacobian at the solution,
        ``res.x`` is in ``x0``'s structure, ``res.x_flat`` is the flat vector and
        ``res.jacobian`` the [`SparseJacobian`][] used (``.n_colors``, ``.pattern``).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from sparseopt_adapters import scipy as sa_scipy
        >>> r = lambda x: jnp.concatenate([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]])
        >>> res = sa_scipy.least_squares(r, np.zeros(50))
        >>> res.jacobian.n_colors, bool(np.allclose(res.x, 1.0))
        (2, True)
    """
    for key, why in _LSQ_REJECTED.items():
        if key in kwargs:
            raise TypeError(
                f"least_squares: {key}= is not accepted here ({why}). To supply your own, "
                "call scipy.optimize.least_squares directly."
            )
    check_options(kwargs, "least_squares", where=None)
    require_x64("least_squares", "scipy.optimize.least_squares")
    variables = Variables(x0, "least_squares")
    n = variables.n
    if "bounds" in kwargs:
        kwargs["bounds"] = _lsq_bounds(kwargs["bounds"], n)
    mesh, place = placement(mesh, n, "least_squares")
    setup = cached("scipy.least_squares", (fun,), _key(variables, args, mesh),
                   lambda: _ResidualSetup(fun, variables, args, mesh))
    m, jac, r_jit = setup.m, setup.jacobian, setup.r
    dyn, _ = split_args(args)

    method = kwargs.get("method", "trf")
    tr_solver = kwargs.get("tr_solver")
    dense = method == "lm" or tr_solver == "exact" or (
        tr_solver is None and method in ("trf", "dogbox") and _small(m, n))
    if dense:
        _dense_check(
            (m, n),
            f"least_squares(method={method!r}, tr_solver={tr_solver!r})",
            "Use method='trf' (or 'dogbox') with tr_solver='lsmr', which take the sparse "
            "Jacobian.",
        )
    else:
        user_tr = kwargs.get("tr_options") or {}
        if not isinstance(user_tr, dict):
            raise TypeError(
                f"least_squares: tr_options must be a dict, got {type(user_tr).__name__}."
            )
        defaults = {**DEFAULT_TR_OPTIONS, "maxiter": LSMR_MAXITER_FACTOR * max(min(m, n), 1)}
        kwargs["tr_options"] = {**defaults, **user_tr}

    def f(x):
        return _to_numpy(r_jit(place(_as_float_vector(x, n, "least_squares fun")), dyn))

    def j(x):
        x = place(_as_float_vector(x, n, "least_squares jac"))
        J = jac.to_scipy(_to_numpy(jac.values(x, dyn)), "csr")
        return J.toarray() if dense else J

    res = so.least_squares(f, variables.x0.copy(), jac=j, **kwargs)
    res.x_flat = np.asarray(res.x, dtype=np.float64)
    res.x = variables.result_x(res.x_flat)
    res.jacobian = jac
    res.tr_solver = None if method == "lm" else ("exact" if dense else "lsmr")
    return res


class _ResidualSetup:
    """The reusable part of `least_squares` (held by the setup cache): the flat residual,
    its jitted evaluation and the colored sparse Jacobian."""

    def __init__(self, fun, variables: Variables, args, mesh=None):
        self.rz, dyn, self.m = _vector_fun(fun, variables, args, "least_squares")
        z0 = jnp.asarray(variables.x0)
        self.jacobian = sparse_jacobian(self.rz, z0, dyn, pattern=_jac_pattern(self.rz, z0, dyn),
                                        mesh=mesh)
        self.r = jax.jit(self.rz)


def _small(m: int, n: int) -> bool:
    """Whether `least_squares` hands scipy a dense Jacobian (and so ``tr_solver='exact'``)."""
    return n <= EXACT_MAX_N and m * n <= DENSE_LIMIT


def _lsq_bounds(bounds, n: int):
    """``least_squares`` bounds -> scipy's ``(lb, ub)`` with ``lb < ub`` checked.

    Accepts scipy's own forms (``Bounds``, a 2-tuple ``(lb, ub)`` of scalars or length-n
    arrays) and, as `minimize` does, a sequence of ``n`` ``(lo, hi)`` pairs (``None`` = no
    bound). With ``n = 2`` a 2-sequence of 2-sequences is read as scipy's ``(lb, ub)``.
    """
    caller = "least_squares"
    if bounds is None:
        return (-np.inf, np.inf)
    if isinstance(bounds, so.Bounds):
        lo, hi = canonical_bounds(bounds, n, caller)
    else:
        try:
            seq = list(bounds)
        except TypeError:
            raise TypeError(
                f"{caller}: bounds must be (lb, ub), scipy.optimize.Bounds or a sequence of "
                f"n (lo, hi) pairs, got {type(bounds).__name__}."
            ) from None

        def scipy_side(e):
            return e is not None and (np.ndim(e) == 0 or np.size(e) == n) and not (
                isinstance(e, list | tuple) and any(v is None for v in e))

        if len(seq) == 2 and all(scipy_side(e) for e in seq):
            from sparseopt_adapters._host import broadcast_limits, check_order

            lo = broadcast_limits(seq[0], n, f"{caller}: bounds lb")
            hi = broadcast_limits(seq[1], n, f"{caller}: bounds ub")
            check_order(lo, hi, f"{caller}: bounds")
        else:
            lo, hi = canonical_bounds(seq, n, caller)
    eq = np.flatnonzero(lo == hi)
    if eq.size:
        k = int(eq[0])
        raise ValueError(
            f"{caller}: lower bound == upper bound ({lo[k]}) at entry {k} ({eq.size} "
            "entries); scipy.optimize.least_squares needs lb < ub. Take fixed variables out "
            "of x0 (e.g. wrap them in sa.Fixed(...) in a pytree x0) or widen the bound."
        )
    return lo, hi
