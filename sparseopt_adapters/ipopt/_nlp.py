"""The host-independent half of the IPOPT adapter: a JAX NLP compiled once, evaluated by x.

[`_NLP`][] turns ``fun``, ``x0``, ``args``, bounds and constraints into the flat problem IPOPT
sees (``n`` variables, ``m`` constraint rows, bounds, structures) plus three jitted, ahead-of-time
compiled functions:

- ``fc(z)``: objective and every constraint value, fused (IPOPT asks for both at each trial
  point);
- ``gj(z)``: objective gradient and constraint-Jacobian values in structure order, fused;
- ``h(z, sigma, lam)``: lower triangle of the Lagrangian Hessian in structure order.

Each returns a finiteness flag computed inside the same XLA program. No cyipopt here: the
callbacks raise the exception class they are given, so the evaluation engine can be tested and
reused without IPOPT.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
from jax.flatten_util import ravel_pytree

from .._coloring import color_hessian
from .._compressed import sparse_jacobian, sparse_lagrangian_hessian
from .._detection import hessian_sparsity
from .._parametrization import PatternMatrix, ravel_parameters, unwrap_fixed

_QUANTITIES = ("objective", "constraints", "gradient", "jacobian", "hessian")
_PRETTY = {
    "objective": "the objective",
    "constraints": "the constraints",
    "gradient": "the objective gradient",
    "jacobian": "the constraint Jacobian",
    "hessian": "the Lagrangian Hessian",
}


# ---------------------------------------------------------------------------------------
# variables: flat float64 vector <-> the user's x
# ---------------------------------------------------------------------------------------
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
    """IPOPT's flat float64 vector and the user's ``x`` (an array or a pytree)."""

    def __init__(self, x0, caller: str):
        self.plain = _is_plain_array(x0)
        if self.plain:
            a = np.asarray(x0)
            if np.issubdtype(a.dtype, np.complexfloating):
                raise TypeError(f"{caller}: x0 is complex; IPOPT is a real solver.")
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
            raise ValueError(
                f"{caller}: x0 has no floating-point entries to optimise (integer leaves and "
                "sa.Fixed(...) nodes are not variables)."
            )

    def to_user(self, z):
        """Traceable: flat vector -> what the user's functions take."""
        return self._unravel(z) if self.plain else unwrap_fixed(self._unravel(z))

    def result_x(self, z):
        """Flat vector -> x in x0's structure (numpy for a plain array x0)."""
        z = np.array(z, dtype=np.float64)
        if self.plain:
            return z.reshape(self.shape)
        return self._unravel(jnp.asarray(z))

    def flatten(self, x, what: str) -> np.ndarray:
        """A user-supplied point (flat vector, x0-shaped array or x0-like pytree) -> flat."""
        if not self.plain and not _is_plain_array(x):
            try:
                flat, _ = ravel_parameters(x)
            except TypeError as e:
                raise TypeError(f"{what}: could not flatten {type(x).__name__}: {e}") from e
            x = flat
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if a.size != self.n:
            raise ValueError(
                f"{what}: expected {self.n} values (the flat variables, in ravel_parameters "
                f"order) or a point shaped like x0, got {a.size}."
            )
        return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------
# bounds and constraints
# ---------------------------------------------------------------------------------------
def _broadcast_limits(value, size: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be numbers or arrays of numbers, got {value!r}.") from None
    if a.ndim == 0:
        return np.full(size, float(a))
    a = a.reshape(-1)
    if a.size == 1:
        return np.full(size, float(a[0]))
    if a.size != size:
        raise ValueError(f"{what} has {a.size} entries, but {size} are needed.")
    return np.array(a)


def _check_order(lo, hi, what: str):
    bad = np.flatnonzero(~(lo <= hi))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"{what}: lower bound > upper bound (or NaN) at entry {k}: "
            f"{lo[k]!r} > {hi[k]!r} ({bad.size} bad entr{'y' if bad.size == 1 else 'ies'}). "
            "Swap them or fix the NaN."
        )


def _convert_bounds(bounds, n: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
    if bounds is None:
        return np.full(n, -np.inf), np.full(n, np.inf)
    if isinstance(bounds, so.Bounds):
        lo = _broadcast_limits(bounds.lb, n, f"{caller}: Bounds.lb")
        hi = _broadcast_limits(bounds.ub, n, f"{caller}: Bounds.ub")
    else:
        try:
            pairs = list(bounds)
        except TypeError:
            raise TypeError(
                f"{caller}: bounds must be scipy.optimize.Bounds or a sequence of (lo, hi) "
                f"pairs, got {type(bounds).__name__}."
            ) from None
        if len(pairs) != n:
            raise ValueError(
                f"{caller}: bounds has {len(pairs)} (lo, hi) pairs, but there are {n} "
                "variables (flat, in ravel_parameters order). Pass one pair per variable, or "
                "scipy.optimize.Bounds(lb, ub) with scalar or length-n lb/ub."
            )
        try:
            lo = np.array([-np.inf if p[0] is None else p[0] for p in pairs], dtype=np.float64)
            hi = np.array([np.inf if p[1] is None else p[1] for p in pairs], dtype=np.float64)
        except (TypeError, IndexError, ValueError):
            raise TypeError(
                f"{caller}: each bound must be a (lo, hi) pair of numbers or None, got "
                f"{pairs[:3]!r}..."
            ) from None
    _check_order(lo, hi, f"{caller}: bounds")
    return lo, hi


class _Constraint:
    """One constraint block ``lb <= fun(x, *args) <= ub`` (outputs raveled)."""

    def __init__(self, fun, args, lb, ub, label, flat=False):
        self.fun = fun
        self.args = args
        self.lb = lb
        self.ub = ub
        self.label = label
        self.flat = flat  # fun takes the flat vector (LinearConstraint)


def _linear_fun(A):
    if sp.issparse(A):
        M = PatternMatrix.from_scipy(sp.csr_array(A, dtype=np.float64))
        return lambda z: M @ z
    A = jnp.asarray(np.asarray(A, dtype=np.float64))
    if A.ndim == 1:
        A = A[None, :]
    return lambda z: A @ z


def _normalize_constraints(constraints, caller: str) -> list[_Constraint]:
    if constraints is None:
        return []
    if isinstance(constraints, dict | so.NonlinearConstraint | so.LinearConstraint):
        constraints = [constraints]
    out = []
    for k, con in enumerate(constraints):
        label = f"constraints[{k}]"
        if isinstance(con, so.NonlinearConstraint):
            if callable(con.jac) or callable(con.hess):
                warnings.warn(
                    f"{caller}: {label} has a user jac/hess; they are ignored: "
                    "sparseopt_adapters differentiates fun with JAX.",
                    UserWarning,
                    stacklevel=3,
                )
            out.append(_Constraint(con.fun, (), con.lb, con.ub, label))
        elif isinstance(con, so.LinearConstraint):
            out.append(_Constraint(_linear_fun(con.A), (), con.lb, con.ub, label, flat=True))
        elif isinstance(con, dict):
            unknown = set(con) - {"type", "fun", "args", "jac"}
            if unknown:
                raise ValueError(
                    f"{caller}: {label} has unknown keys {sorted(unknown)}; a constraint dict "
                    "has 'type' ('eq' or 'ineq'), 'fun' and optionally 'args'."
                )
            kind = con.get("type")
            if kind not in ("eq", "ineq"):
                raise ValueError(
                    f"{caller}: {label}['type'] must be 'eq' or 'ineq' (meaning fun >= 0), got "
                    f"{kind!r}."
                )
            if "fun" not in con or not callable(con["fun"]):
                raise TypeError(f"{caller}: {label} needs a callable 'fun'.")
            if callable(con.get("jac")):
                warnings.warn(
                    f"{caller}: {label}['jac'] is ignored: sparseopt_adapters differentiates "
                    "'fun' with JAX.",
                    UserWarning,
                    stacklevel=3,
                )
            args = con.get("args", ())
            if not isinstance(args, tuple):
                args = (args,)
            ub = 0.0 if kind == "eq" else np.inf
            out.append(_Constraint(con["fun"], args, 0.0, ub, label))
        else:
            raise TypeError(
                f"{caller}: {label} is a {type(con).__name__}; pass "
                "scipy.optimize.NonlinearConstraint(fun, lb, ub), "
                "scipy.optimize.LinearConstraint(A, lb, ub) or a dict "
                "{'type': 'eq' | 'ineq', 'fun': fun, 'args': (...)}."
            )
    return out


def _split_args(args):
    if not isinstance(args, tuple):
        args = (args,)
    return eqx.partition(args, eqx.is_array)


# ---------------------------------------------------------------------------------------
# errors raised inside callbacks
# ---------------------------------------------------------------------------------------
class _NonFinite:
    """Book-keeping of NaN/inf values returned by the compiled functions."""

    def __init__(self):
        self.counts = dict.fromkeys(_QUANTITIES, 0)
        self.first: dict[str, int] = {}  # quantity -> iteration of the first occurrence
        self.fatal: str | None = None  # the derivative that stopped IPOPT

    def record(self, what: str, iteration: int):
        self.counts[what] += 1
        self.first.setdefault(what, iteration)

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def describe(self) -> str:
        parts = []
        for q in _QUANTITIES:
            c = self.counts[q]
            if c:
                parts.append(
                    f"{_PRETTY[q]} returned NaN/inf {c} time{'s' if c > 1 else ''} (first at "
                    f"iteration {self.first[q]})"
                )
        msg = "; ".join(parts)
        if self.fatal is not None:
            return (
                f"{msg}. A non-finite derivative stops IPOPT. Check {_PRETTY[self.fatal]} at "
                "the last iterate (res.x), e.g. sqrt/log/division near 0, or add bounds that "
                "keep x in the domain."
            )
        return (
            f"{msg}. Such trial points are reported to IPOPT as evaluation errors and it cuts "
            "the step back."
        )


# ---------------------------------------------------------------------------------------
# the compiled NLP
# ---------------------------------------------------------------------------------------
def _hessian_method(pattern) -> str:
    """Star coloring unless acyclic coloring at least halves the Hessian-vector products.

    Acyclic decompression (substitution along trees) compiles to a much larger XLA program
    (about 1 s instead of 0.15 s for a tridiagonal Hessian, measured at n = 1e3 and 1e5) to
    save, typically, one product per call: star wins unless IPOPT runs very many iterations.
    """
    star = color_hessian(pattern, method="star", warn=False)
    if star.n_colors <= 3:
        return "star"
    acyclic = color_hessian(pattern, method="acyclic", warn=False)
    return "acyclic" if 2 * acyclic.n_colors <= star.n_colors else "star"


def _aot(fn, *example):
    """``jax.jit(fn)`` compiled ahead of time for these argument shapes."""
    return jax.jit(fn).lower(*example).compile()


class _NLP:
    """A JAX NLP in IPOPT's flat form with compiled, fused, x-cached evaluations.

    The evaluation methods (``objective`` ... ``hessian``) have cyipopt's signatures. Any
    exception, and NaN/inf in a derivative, is recorded and turned into ``error_cls`` (cyipopt's
    ``CyIpoptEvaluationError``) so that IPOPT stops; ``raise_pending`` re-raises the original
    after the solve. After the first failure every call fails at once.
    """

    def __init__(
        self,
        fun,
        x0,
        args=(),
        *,
        bounds=None,
        constraints=(),
        hessian: bool = True,
        error_cls: type[Exception] = ArithmeticError,
        caller: str = "ipopt.Problem",
    ):
        t_setup = time.perf_counter()
        if not jax.config.jax_enable_x64:
            raise RuntimeError(
                f"{caller}: JAX float64 is off (jax_enable_x64=False); IPOPT needs double "
                "precision. Unset SPARSEOPT_NO_X64 or call "
                "jax.config.update('jax_enable_x64', True) before building the problem."
            )
        if not callable(fun):
            raise TypeError(f"{caller}: fun must be callable, got {type(fun).__name__}.")
        self.caller = caller
        self.error_cls = error_cls
        self.variables = v = _Variables(x0, caller)
        self.n = v.n
        self.x0 = v.x0
        self.lb, self.ub = _convert_bounds(bounds, self.n, caller)
        self.constraint_blocks = cons = _normalize_constraints(constraints, caller)

        dyn, static = _split_args(args)
        cdyn, cstatic = [], []
        for con in cons:
            d, s = _split_args(con.args)
            cdyn.append(d)
            cstatic.append(s)
        self.dyn = (dyn, tuple(cdyn))
        z0 = jnp.asarray(self.x0)

        def f(z, a):
            out = jnp.asarray(fun(v.to_user(z), *eqx.combine(a[0], static)))
            if out.size != 1:
                raise ValueError(
                    f"{caller}: fun must return a scalar, got shape {out.shape}. Put vector "
                    "conditions into constraints=..."
                )
            return jnp.reshape(out, ()).astype(jnp.float64)

        def block(k, z, a):
            con = cons[k]
            x = z if con.flat else v.to_user(z)
            out = con.fun(x, *eqx.combine(a[1][k], cstatic[k]))
            return ravel_pytree(out)[0].astype(jnp.float64)

        def c(z, a):
            if not cons:
                return jnp.zeros((0,), jnp.float64)
            parts = [block(k, z, a) for k in range(len(cons))]
            return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

        jax.eval_shape(f, z0, self.dyn)  # fail early, outside IPOPT
        sizes = [int(jax.eval_shape(lambda z, a, k=k: block(k, z, a), z0, self.dyn).shape[0])
                 for k in range(len(cons))]
        self.block_sizes = sizes
        self.block_offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.m = int(self.block_offsets[-1])
        cl, cu = [], []
        for con, size in zip(cons, sizes, strict=True):
            lo = _broadcast_limits(con.lb, size, f"{caller}: {con.label} lb")
            hi = _broadcast_limits(con.ub, size, f"{caller}: {con.label} ub")
            _check_order(lo, hi, f"{caller}: {con.label}")
            cl.append(lo)
            cu.append(hi)
        self.cl = np.concatenate(cl) if cl else np.zeros(0)
        self.cu = np.concatenate(cu) if cu else np.zeros(0)
        self._f, self._c = f, c

        # --- sparse derivatives: detection + coloring once -------------------------------
        t0 = time.perf_counter()
        if self.m:
            self.jac = sparse_jacobian(c, z0, self.dyn)
            jp = self.jac.pattern
            self.jac_rows = np.ascontiguousarray(jp.rows, dtype=np.int32)
            self.jac_cols = np.ascontiguousarray(jp.cols, dtype=np.int32)
        else:
            self.jac = None
            self.jac_rows = self.jac_cols = np.zeros(0, np.int32)
        self.has_hessian = bool(hessian)
        if self.has_hessian:
            pattern = hessian_sparsity(f, z0, self.dyn)
            if self.m:
                pattern = pattern.union(
                    hessian_sparsity(lambda z, a: jnp.sum(c(z, a)), z0, self.dyn))
            self.lag = sparse_lagrangian_hessian(
                f, c if self.m else None, z0, self.dyn, pattern=pattern,
                method=_hessian_method(pattern))
            hp = self.lag.lower_pattern
            self.hess_rows = np.ascontiguousarray(hp.rows, dtype=np.int32)
            self.hess_cols = np.ascontiguousarray(hp.cols, dtype=np.int32)
        else:
            self.lag = None
            self.hess_rows = self.hess_cols = np.zeros(0, np.int32)
        t1 = time.perf_counter()

        # --- one compiled function per quantity -----------------------------------------
        def fc(z, a):
            fv, cv = f(z, a), c(z, a)
            return fv, cv, jnp.isfinite(fv), jnp.all(jnp.isfinite(cv))

        jac = self.jac

        def gj(z, a):
            g = jax.grad(f)(z, a)
            jv = jac.values(z, a) if jac is not None else jnp.zeros((0,), jnp.float64)
            return g, jv, jnp.all(jnp.isfinite(g)), jnp.all(jnp.isfinite(jv))

        self._fc = _aot(fc, z0, self.dyn)
        self._gj = _aot(gj, z0, self.dyn)
        if self.has_hessian:
            lag = self.lag
            lam0 = jnp.zeros((self.m,), jnp.float64)

            def h(z, sigma, lam, a):
                hv = lag.lower_values(z, sigma, lam, a)
                return hv, jnp.all(jnp.isfinite(hv))

            self._h = _aot(h, z0, jnp.float64(1.0), lam0, self.dyn)
        t2 = time.perf_counter()
        self.setup_time = {
            "variables": t0 - t_setup,
            "sparsity_and_coloring": t1 - t0,
            "compile": t2 - t1,
        }
        self.reset()

    # -- per-solve state ------------------------------------------------------------------
    def reset(self):
        self.error: BaseException | None = None
        self.error_where: str | None = None
        self.nonfinite = _NonFinite()
        self.iteration = 0
        self.calls = dict.fromkeys(_QUANTITIES, 0)
        self.evals = {"fc": 0, "gj": 0, "h": 0}
        self.seconds = dict.fromkeys(_QUANTITIES, 0.0)
        self._fc_x = self._gj_x = None
        self._fc_val = self._gj_val = None

    # -- failure handling -------------------------------------------------------------------
    def _fail(self, where: str, exc: BaseException):
        if self.error is None:
            self.error = exc
            self.error_where = where
        raise self.error_cls(f"{where} raised {type(exc).__name__}; IPOPT is stopped.")

    def raise_pending(self):
        """Re-raise the first exception a callback hit (original type and traceback)."""
        err = self.error
        if err is not None:
            self.error = None
            raise err

    def _guard(self):
        if self.error is not None:
            raise self.error_cls("an earlier callback failed; IPOPT is stopped.")

    # -- fused evaluations ----------------------------------------------------------------
    def _eval_fc(self, x):
        if self._fc_x is None or not np.array_equal(x, self._fc_x):
            fv, cv, fok, cok = jax.device_get(self._fc(x, self.dyn))  # one transfer
            self._fc_val = (float(fv), cv, bool(fok), bool(cok))
            self._fc_x = np.array(x)
            self.evals["fc"] += 1
        return self._fc_val

    def _eval_gj(self, x):
        if self._gj_x is None or not np.array_equal(x, self._gj_x):
            g, jv, gok, jok = jax.device_get(self._gj(x, self.dyn))
            self._gj_val = (g, jv, bool(gok), bool(jok))
            self._gj_x = np.array(x)
            self.evals["gj"] += 1
        return self._gj_val

    def _run(self, what, compute):
        self._guard()
        t = time.perf_counter()
        self.calls[what] += 1
        try:
            return compute()
        except self.error_cls:
            raise
        except BaseException as e:  # noqa: BLE001 - re-raised after the solve
            self._fail(f"the {what} callback", e)
        finally:
            self.seconds[what] += time.perf_counter() - t

    def _nonfinite(self, what: str, fatal: bool):
        self.nonfinite.record(what, self.iteration)
        if fatal and self.nonfinite.fatal is None:
            self.nonfinite.fatal = what
        raise self.error_cls(f"{_PRETTY[what]} is not finite")

    # -- cyipopt's callback signatures ---------------------------------------------------------
    def objective(self, x) -> float:
        def compute():
            fv, _, ok, _ = self._eval_fc(x)
            if not ok:
                self._nonfinite("objective", fatal=False)
            return fv

        return self._run("objective", compute)

    def constraints(self, x) -> np.ndarray:
        def compute():
            _, cv, _, ok = self._eval_fc(x)
            if not ok:
                self._nonfinite("constraints", fatal=False)
            return cv

        return self._run("constraints", compute)

    def gradient(self, x) -> np.ndarray:
        def compute():
            g, _, ok, _ = self._eval_gj(x)
            if not ok:
                self._nonfinite("gradient", fatal=True)
            return g

        return self._run("gradient", compute)

    def jacobian(self, x) -> np.ndarray:
        def compute():
            _, jv, _, ok = self._eval_gj(x)
            if not ok:
                self._nonfinite("jacobian", fatal=True)
            return jv

        return self._run("jacobian", compute)

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.jac_rows, self.jac_cols

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.hess_rows, self.hess_cols

    def hessian(self, x, lagrange, obj_factor) -> np.ndarray:
        def compute():
            if not self.has_hessian:
                raise RuntimeError(
                    f"{self.caller} was built without an exact Hessian "
                    "(hessian_approximation='limited-memory' in options), but IPOPT asked for "
                    "one. Build the problem with the exact-Hessian options, or keep "
                    "hessian_approximation='limited-memory'."
                )
            hv, ok = jax.device_get(self._h(x, np.float64(obj_factor), lagrange, self.dyn))
            self.evals["h"] += 1
            if not ok:
                self._nonfinite("hessian", fatal=True)
            return hv

        return self._run("hessian", compute)

    # -- results ----------------------------------------------------------------------
    def split_constraints(self, g) -> list[Any]:
        """Flat constraint values -> one array per constraint block."""
        g = np.asarray(g)
        return [g[self.block_offsets[k]: self.block_offsets[k + 1]]
                for k in range(len(self.constraint_blocks))]

    def timing(self) -> dict[str, float]:
        t = {f"{q}_s": s for q, s in self.seconds.items()}
        t["callbacks_s"] = float(sum(self.seconds.values()))
        return t
