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

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
from jax.flatten_util import ravel_pytree
from scipy.sparse.linalg import LinearOperator

from sparseopt_adapters._compressed import (
    SparseHessian,
    SparseJacobian,
    sparse_hessian,
    sparse_jacobian,
)
from sparseopt_adapters._detection import hessian_sparsity, jacobian_sparsity
from sparseopt_adapters._parametrization import ravel_parameters, unwrap_fixed
from sparseopt_adapters._pattern import SparsityPattern

__all__ = [
    "Derivatives",
    "derivatives",
    "nonlinear_constraint",
    "minimize",
    "least_squares",
    "DENSE_LIMIT",
    "DEFAULT_TR_OPTIONS",
    "LSMR_MAXITER_FACTOR",
]

#: Largest number of entries (``rows × cols``) a Jacobian/Hessian is densified to for the
#: methods that only take dense matrices (``least_squares(method='lm')``,
#: ``tr_solver='exact'``, ``minimize(method='trust-exact' | 'dogleg')``): 10⁷ float64 = 80 MB.
DENSE_LIMIT = 10_000_000

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
def _as_float_vector(x, n: int, what: str) -> np.ndarray:
    """A float64 copy of ``x`` with shape ``(n,)`` (scipy sends int8 probes, lists, ...)."""
    a = np.asarray(x)
    if a.dtype != np.float64:
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise TypeError(f"{what}: expected a real vector of length {n}, got dtype {a.dtype}.")
        if np.issubdtype(a.dtype, np.complexfloating):
            raise TypeError(
                f"{what}: got a complex vector; the derivatives are real. scipy does not send "
                "complex vectors unless finite differences use 'cs': pass real vectors."
            )
        a = a.astype(np.float64)
    if a.shape != (n,):
        if a.size == n:
            a = a.reshape(n)
        else:
            raise ValueError(
                f"{what}: expected a vector of {n} entries (the flat parameters), got shape "
                f"{a.shape}."
            )
    return a


def _to_numpy(v) -> np.ndarray:
    """A writable float64 numpy copy (scipy scales Jacobians and residuals in place)."""
    return np.array(v, dtype=np.float64, copy=True)


def _no_extra_args(args, name):
    if args:
        raise TypeError(
            f"{name} got {len(args)} extra positional argument(s) from scipy. Extra arguments "
            "are bound once when the derivatives are built: pass args=... to "
            "sparseopt_adapters.scipy (derivatives / minimize / least_squares), not to "
            "scipy.optimize.minimize."
        )


def _is_plain_array(x0) -> bool:
    if isinstance(x0, np.ndarray | jax.Array):
        return True
    if isinstance(x0, float | int | np.floating | np.integer):
        return True
    if isinstance(x0, list | tuple):
        try:
            a = np.asarray(x0)
        except (ValueError, TypeError):
            return False
        return a.dtype != object and (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_)
    return False


class _Variables:
    """The map between scipy's flat float64 vector and the user's ``x`` (array or pytree)."""

    def __init__(self, x0, caller: str):
        self.plain = _is_plain_array(x0)
        if self.plain:
            a = np.asarray(x0)
            if np.issubdtype(a.dtype, np.complexfloating):
                raise TypeError(f"{caller}: x0 is complex; the scipy solvers are real.")
            self.shape = a.shape
            self.x0 = np.array(a, dtype=np.float64).reshape(-1)
            shape = self.shape
            self._unravel = lambda z: jnp.reshape(z, shape)
        else:
            try:
                flat, unravel = ravel_parameters(x0)
            except TypeError as e:
                raise TypeError(f"{caller}: could not flatten x0: {e}") from e
            self.x0 = np.array(flat, dtype=np.float64)
            self._unravel = unravel
        self.n = int(self.x0.size)
        if self.n == 0:
            raise ValueError(f"{caller}: x0 has no floating-point entries to optimise.")

    def to_user(self, z):
        """Traceable: flat vector -> what the user's function takes."""
        return self._unravel(z) if self.plain else unwrap_fixed(self._unravel(z))

    def result_x(self, z):
        """Flat solution -> x in x0's structure (numpy for plain arrays)."""
        z = np.asarray(z, dtype=np.float64)
        if self.plain:
            return z.reshape(self.shape) if self.shape != () else z.reshape(())
        return self._unravel(jnp.asarray(z))


def _split_args(args, caller: str):
    if not isinstance(args, tuple):
        args = (args,)
    dyn, static = eqx.partition(args, eqx.is_array)
    return dyn, static, args


def _scalar_fun(fun, variables: _Variables, args, caller: str):
    """``fz(z, dyn) -> float64 scalar`` and the bound ``dyn``."""
    if not callable(fun):
        raise TypeError(f"{caller}: fun must be callable, got {type(fun).__name__}.")
    dyn, static, _ = _split_args(args, caller)

    def fz(z, dyn):
        out = fun(variables.to_user(z), *eqx.combine(dyn, static))
        out = jnp.asarray(out)
        if out.size != 1:
            raise ValueError(
                f"{caller}: fun must return a scalar, got an array of shape {out.shape}. For "
                "a residual vector use sparseopt_adapters.scipy.least_squares."
            )
        return jnp.reshape(out, ()).astype(jnp.float64)

    jax.eval_shape(fz, jnp.asarray(variables.x0), dyn)  # fail early, with the message above
    return fz, dyn


def _vector_fun(fun, variables: _Variables, args, caller: str):
    """``rz(z, dyn) -> 1-D float64`` (outputs raveled) and the bound ``dyn``."""
    if not callable(fun):
        raise TypeError(f"{caller}: fun must be callable, got {type(fun).__name__}.")
    dyn, static, _ = _split_args(args, caller)

    def rz(z, dyn):
        out = fun(variables.to_user(z), *eqx.combine(dyn, static))
        return ravel_pytree(out)[0].astype(jnp.float64)

    m = int(jax.eval_shape(rz, jnp.asarray(variables.x0), dyn).shape[0])
    return rz, dyn, m


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
    """

    def __init__(self, fun, x0, args=(), *, hess_pattern: SparsityPattern | None = None):
        self._vars = _Variables(x0, "derivatives")
        self._fz, self._dyn = _scalar_fun(fun, self._vars, args, "derivatives")
        self.x0 = self._vars.x0.copy()
        self.n = self._vars.n
        self._value_and_grad = jax.jit(jax.value_and_grad(self._fz))
        self._hvp = _hvp_fn(self._fz)
        self._pattern = hess_pattern
        if hess_pattern is not None and hess_pattern.shape != (self.n, self.n):
            raise ValueError(
                f"derivatives: hess_pattern has shape {hess_pattern.shape}, but x0 has "
                f"{self.n} entries, so the Hessian is {(self.n, self.n)}."
            )
        self._hessian: SparseHessian | None = None
        self._x = None
        self._f = None
        self._g = None
        self.counts = {"fun_grad": 0, "hess": 0, "hessp": 0}

    # -- structure --------------------------------------------------------------------
    @property
    def hess_pattern(self) -> SparsityPattern:
        """The global Hessian pattern (detected on first use)."""
        if self._pattern is None:
            self._pattern = _hess_pattern(self._fz, jnp.asarray(self.x0), self._dyn)
        return self._pattern

    @property
    def hessian(self) -> SparseHessian:
        """The underlying compressed [`SparseHessian`][] (built on first use)."""
        if self._hessian is None:
            self._hessian = sparse_hessian(
                self._fz, jnp.asarray(self.x0), self._dyn, pattern=self.hess_pattern
            )
        return self._hessian

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
        if self._x is None or not np.array_equal(x, self._x):
            f, g = self._value_and_grad(x, self._dyn)
            self._f = float(f)
            self._g = _to_numpy(g)
            self._x = x.copy()
            self.counts["fun_grad"] += 1
        return self._f, self._g

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
        return h.to_scipy(_to_numpy(h.values(x, self._dyn)), "csr")

    def hessp(self, x, p, *args) -> np.ndarray:
        """The Hessian-vector product ``∇²f(x) p`` (one forward-over-reverse product)."""
        _no_extra_args(args, "Derivatives.hessp")
        x = _as_float_vector(x, self.n, "Derivatives.hessp")
        p = _as_float_vector(p, self.n, "Derivatives.hessp")
        self.counts["hessp"] += 1
        return _to_numpy(self._hvp(x, p, self._dyn))

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
        h = f", {self._hessian!r}" if self._hessian is not None else ""
        return f"Derivatives(n={self.n}{h})"


def derivatives(fun, x0, args=(), *, hess_pattern: SparsityPattern | None = None) -> Derivatives:
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
    return Derivatives(fun, x0, args, hess_pattern=hess_pattern)


# ---------------------------------------------------------------------------------------
# constraints
# ---------------------------------------------------------------------------------------
class _ConstraintDerivatives:
    """Value, sparse Jacobian and ``∇²(vᵀc)`` of one vector constraint on the flat x."""

    def __init__(self, cfun, variables: _Variables, args, caller: str, hessian: str):
        self._rz, self._dyn, self.m = _vector_fun(cfun, variables, args, caller)
        self.n = variables.n
        z0 = jnp.asarray(variables.x0)
        self._c = jax.jit(self._rz)
        self.jacobian: SparseJacobian = sparse_jacobian(
            self._rz, z0, self._dyn, pattern=_jac_pattern(self._rz, z0, self._dyn)
        )
        rz = self._rz

        def vc(z, v, dyn):
            return jnp.dot(v, rz(z, dyn))

        self._vc = vc
        self._hvp = jax.jit(
            lambda z, v, p, dyn: jax.jvp(jax.grad(lambda q: vc(q, v, dyn)), (z,), (p,))[1]
        )
        self._hess_pattern = None
        self._hessian = None
        self._hessian_mode = hessian
        self._z0 = z0

    @property
    def hess_pattern(self) -> SparsityPattern:
        if self._hess_pattern is None:
            rz = self._rz
            self._hess_pattern = _hess_pattern(
                lambda z, dyn: jnp.sum(rz(z, dyn)), self._z0, self._dyn
            )
        return self._hess_pattern

    @property
    def hessian(self) -> SparseHessian:
        if self._hessian is None:
            self._hessian = sparse_hessian(
                self._vc, self._z0, jnp.zeros(self.m), self._dyn, pattern=self.hess_pattern
            )
        return self._hessian

    def fun(self, x):
        return _to_numpy(self._c(_as_float_vector(x, self.n, "constraint fun"), self._dyn))

    def jac(self, x):
        x = _as_float_vector(x, self.n, "constraint jac")
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
            mv = lambda p: _to_numpy(
                self._hvp(x, v, _as_float_vector(p, self.n, "constraint hess matvec"), self._dyn)
            )
            return LinearOperator((self.n, self.n), matvec=mv, rmatvec=mv, dtype=np.float64)
        H = self.hessian
        return H.to_scipy(_to_numpy(H.values(x, v, self._dyn)), "csr")


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
    variables = _Variables(x0, "nonlinear_constraint")
    cd = _ConstraintDerivatives(fun, variables, args, "nonlinear_constraint", hessian)
    return so.NonlinearConstraint(
        cd.fun, lb, ub, jac=cd.jac, hess=cd.hess, keep_feasible=keep_feasible
    )


def _check_hessian_mode(hessian, caller):
    if hessian not in ("auto", "sparse", "operator"):
        raise ValueError(
            f"{caller}: hessian must be 'auto', 'sparse' or 'operator', got {hessian!r}."
        )


def _convert_constraints(constraints, variables: _Variables, method: str, hessian: str):
    """User constraints -> what scipy's ``method`` takes, with our derivatives filled in."""
    if isinstance(constraints, dict | so.NonlinearConstraint | so.LinearConstraint):
        constraints = [constraints]
    out = []
    for k, con in enumerate(constraints):
        where = f"minimize: constraints[{k}]"
        if isinstance(con, so.LinearConstraint):
            out.append(con)
            continue
        if isinstance(con, so.NonlinearConstraint):
            cfun, cargs = con.fun, ()
            lb, ub, keep = con.lb, con.ub, con.keep_feasible
            user_jac = con.jac if callable(con.jac) else None
            # scipy stores BFGS() when hess=None, so a BFGS instance means "not given"
            user_hess = (
                None
                if con.hess is None or isinstance(con.hess, so.BFGS)
                else con.hess
            )
        elif isinstance(con, dict):
            unknown = set(con) - {"type", "fun", "jac", "args"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)} in a constraint dict.")
            ctype = con.get("type")
            if ctype not in ("eq", "ineq"):
                raise ValueError(
                    f"{where}: a constraint dict needs 'type': 'eq' or 'ineq', got {ctype!r}."
                )
            if "fun" not in con:
                raise ValueError(f"{where}: a constraint dict needs a 'fun'.")
            cfun = con["fun"]
            cargs = con.get("args", ())
            if not isinstance(cargs, tuple):
                cargs = (cargs,)
            lb, ub, keep = 0.0, (0.0 if ctype == "eq" else np.inf), False
            user_jac = con.get("jac")
            if user_jac is not None and cargs:
                user_jac = _bind_args(user_jac, cargs)
            user_hess = None
        else:
            raise TypeError(
                f"{where} is a {type(con).__name__}; expected a "
                "scipy.optimize.NonlinearConstraint, LinearConstraint or a dict "
                "{'type': 'eq'|'ineq', 'fun': ...}."
            )
        if not callable(cfun):
            raise TypeError(f"{where}: fun must be callable, got {type(cfun).__name__}.")
        if method in _NO_DERIVATIVES:
            cd = _ConstraintValue(cfun, variables, cargs, where)
            out.append(so.NonlinearConstraint(cd.fun, lb, ub, keep_feasible=keep))
            continue
        cd = _ConstraintDerivatives(cfun, variables, cargs, where, hessian)
        jac = user_jac if user_jac is not None else cd.jac
        if method in _OLD_STYLE_CONSTRAINTS:
            # scipy converts to dicts and densifies the Jacobian itself; hess unused
            jac = user_jac if user_jac is not None else cd.jac_dense
            out.append(so.NonlinearConstraint(cd.fun, lb, ub, jac=jac, keep_feasible=keep))
        else:
            hess = user_hess if user_hess is not None else cd.hess
            out.append(so.NonlinearConstraint(cd.fun, lb, ub, jac=jac, hess=hess,
                                              keep_feasible=keep))
    return out


class _ConstraintValue:
    def __init__(self, cfun, variables, args, caller):
        self._rz, self._dyn, self.m = _vector_fun(cfun, variables, args, caller)
        self.n = variables.n
        self._c = jax.jit(self._rz)

    def fun(self, x):
        return _to_numpy(self._c(_as_float_vector(x, self.n, "constraint fun"), self._dyn))


def _bind_args(f, args):
    return lambda x: f(x, *args)


def _convert_bounds(bounds, n: int):
    if bounds is None or isinstance(bounds, so.Bounds):
        return bounds
    try:
        pairs = list(bounds)
    except TypeError:
        raise TypeError(
            f"minimize: bounds must be scipy.optimize.Bounds or a sequence of (lo, hi) pairs, "
            f"got {type(bounds).__name__}."
        ) from None
    if len(pairs) != n:
        raise ValueError(
            f"minimize: bounds has {len(pairs)} (lo, hi) pairs, but there are {n} variables "
            "(flat, in ravel_parameters order). Pass one pair per variable or a "
            "scipy.optimize.Bounds with length-n or scalar lb/ub."
        )
    lo = np.array([-np.inf if p[0] is None else p[0] for p in pairs], dtype=np.float64)
    hi = np.array([np.inf if p[1] is None else p[1] for p in pairs], dtype=np.float64)
    return so.Bounds(lo, hi)


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
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"minimize: options must be a dict or None, got {type(options).__name__}.")
    _check_hessian_mode(hessian, "minimize")
    d = Derivatives(fun, x0, args)
    variables = d._vars
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
    cons = _convert_constraints(constraints, variables, meth or "", hessian)
    res = so.minimize(
        d.fun,
        d.x0.copy(),
        method=method,
        bounds=_convert_bounds(bounds, d.n),
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


def least_squares(fun: Callable, x0: Any, args=(), **kwargs) -> so.OptimizeResult:
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
    variables = _Variables(x0, "least_squares")
    rz, dyn, m = _vector_fun(fun, variables, args, "least_squares")
    n = variables.n
    z0 = jnp.asarray(variables.x0)
    jac = sparse_jacobian(rz, z0, dyn, pattern=_jac_pattern(rz, z0, dyn))
    r_jit = jax.jit(rz)

    method = kwargs.get("method", "trf")
    tr_solver = kwargs.get("tr_solver")
    dense = method == "lm" or tr_solver == "exact"
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
        return _to_numpy(r_jit(_as_float_vector(x, n, "least_squares fun"), dyn))

    def j(x):
        x = _as_float_vector(x, n, "least_squares jac")
        J = jac.to_scipy(_to_numpy(jac.values(x, dyn)), "csr")
        return J.toarray() if dense else J

    res = so.least_squares(f, variables.x0.copy(), jac=j, **kwargs)
    res.x_flat = np.asarray(res.x, dtype=np.float64)
    res.x = variables.result_x(res.x_flat)
    res.jacobian = jac
    return res
