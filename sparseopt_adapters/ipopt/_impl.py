"""IPOPT through cyipopt with exact sparse derivatives: `Problem` and `minimize`."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult

try:
    import cyipopt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sparseopt_adapters.ipopt needs cyipopt. Install the binary wheel with "
        "`pip install cyipopt-wheels` (IPOPT 3.14 + MUMPS bundled; imports as `cyipopt`). "
        "`pip install cyipopt` builds from source and needs a system IPOPT."
    ) from e

from . import _capi
from ._nlp import _NLP

__all__ = ["Problem", "minimize", "DEFAULT_OPTIONS"]

DEFAULT_OPTIONS: dict[str, Any] = {
    "tol": 1e-8, "print_level": 0, "sb": "yes", "mu_strategy": "monotone"}
"""Options `Problem` and `minimize` set unless the caller sets them (``sb``: no banner).

``mu_strategy='monotone'`` is IPOPT's own default (and CasADi's, and `cyipopt.Problem`'s);
`cyipopt.minimize_ipopt` alone switches to ``'adaptive'``. We keep IPOPT's: `Problem` and
`minimize` then run the same algorithm, and a comparison with CasADi or the IPOPT
documentation holds option for option. A cyipopt user who wants ``minimize_ipopt``'s
iterates passes ``options={'mu_strategy': 'adaptive'}``."""

# scipy spellings accepted in ``options`` (as cyipopt's ``minimize_ipopt`` does)
_ALIASES = {"maxiter": "max_iter", "disp": "print_level"}

_STATUS_NAMES = {
    0: "Solve_Succeeded",
    1: "Solved_To_Acceptable_Level",
    2: "Infeasible_Problem_Detected",
    3: "Search_Direction_Becomes_Too_Small",
    4: "Diverging_Iterates",
    5: "User_Requested_Stop",
    6: "Feasible_Point_Found",
    -1: "Maximum_Iterations_Exceeded",
    -2: "Restoration_Failed",
    -3: "Error_In_Step_Computation",
    -4: "Maximum_CpuTime_Exceeded",
    -5: "Maximum_WallTime_Exceeded",
    -10: "Not_Enough_Degrees_Of_Freedom",
    -11: "Invalid_Problem_Definition",
    -12: "Invalid_Option",
    -13: "Invalid_Number_Detected",
    -100: "Unrecoverable_Exception",
    -101: "NonIpopt_Exception_Thrown",
    -102: "Insufficient_Memory",
    -199: "Internal_Error",
}


# ---------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _capture_c_stdout():
    """Collect what C code prints to file descriptor 1 (IPOPT's option messages)."""
    out: list[str] = []
    try:
        libc = ctypes.CDLL(None)
        sys.stdout.flush()
        libc.fflush(None)
        saved = os.dup(1)
    except Exception:  # pragma: no cover - no fd-level capture possible: print through
        yield out
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield out
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _option_value(key: str, val):
    if isinstance(val, bool | np.bool_):
        if key == "print_level":
            return 5 if val else 0
        return "yes" if val else "no"
    if isinstance(val, np.integer):
        return int(val)
    if isinstance(val, np.floating):
        return float(val)
    if isinstance(val, bytes):
        return val.decode()
    if not isinstance(val, str | int | float):
        raise TypeError(
            f"IPOPT option {key!r}: value must be a str, int or float, got "
            f"{type(val).__name__} {val!r}."
        )
    return val


def _add_option(problem, key, val):
    """``problem.add_option`` with type coercion and IPOPT's own message on failure."""
    if isinstance(key, bytes):
        key = key.decode()
    key = _ALIASES.get(key, key)
    val = _option_value(key, val)
    tries = [val]
    if isinstance(val, int):
        tries.append(float(val))  # an int for a Number option
    elif isinstance(val, float) and val.is_integer():
        tries.append(int(val))  # a float for an Integer option
    text = ""
    for v in tries:
        with _capture_c_stdout() as out:
            try:
                backend = getattr(problem, "_capi", None)  # backend="libipopt": its library
                (backend.add_option if backend is not None else
                 lambda k, x: cyipopt.Problem.add_option(problem, k, x))(key, v)
                ok = True
            except TypeError:
                ok = False
        if ok:
            problem.__dict__.setdefault("_options_set", {})[key] = v  # for ipopt_library
            return
        text = text or "".join(out).strip()
    raise ValueError(
        f"IPOPT rejected the option {key}={val!r}. IPOPT says:\n  "
        + (text.replace("\n", "\n  ") if text else "(no message)")
        + "\nSee https://coin-or.github.io/Ipopt/OPTIONS.html for names, types and ranges."
    )


def _merged_options(options) -> dict[str, Any]:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(
            f"options must be a dict of IPOPT options, got {type(options).__name__}."
        )
    merged = dict(DEFAULT_OPTIONS)
    for k, v in options.items():
        k = k.decode() if isinstance(k, bytes) else k
        merged[_ALIASES.get(k, k)] = v
    return merged


def _wants_exact_hessian(options: dict) -> bool:
    ha = options.get("hessian_approximation", "exact")
    ha = ha.decode() if isinstance(ha, bytes) else ha
    return str(ha) != "limited-memory"


# ---------------------------------------------------------------------------------------
# Problem
# ---------------------------------------------------------------------------------------
class Problem(cyipopt.Problem):
    """A `cyipopt.Problem` built from a JAX objective and constraints, exact sparse derivatives.

    Sparsity detection and coloring happen once, here; the objective + constraint values,
    the gradient + Jacobian values, and the Lagrangian Hessian are three functions compiled
    ahead of time, here, and reused by every `solve`. `jacobianstructure()` is the detected
    Jacobian pattern and `hessianstructure()` the lower triangle (row >= col, row-major,
    duplicate-free) of the union of the Hessian patterns of the objective and every
    constraint; `jacobian()` / `hessian()` return values in exactly that order.

    Use it to drive cyipopt yourself (warm starts, `add_option`, repeated solves); for a
    scipy-style call with an `OptimizeResult`, use [`minimize`][].

    Exceptions inside any callback (the Hessian included, which cyipopt alone would swallow)
    stop IPOPT and are re-raised by `solve` with their original traceback. NaN/inf: see
    [`minimize`][].

    Args:
        fun: ``fun(x, *args) -> scalar``, JAX-traceable.
        x0: the starting point; an array or a pytree of arrays and
            [`PatternMatrix`][sparseopt_adapters.PatternMatrix] (its structure defines the
            flat vector IPOPT sees, in `ravel_parameters` order).
        args: extra arguments of ``fun``; array leaves are traced, others are static.
        bounds: `scipy.optimize.Bounds` or a sequence of ``(lo, hi)`` pairs (``None`` = no
            bound), on the flat variables.
        constraints: `scipy.optimize.NonlinearConstraint` (JAX-traceable ``fun(x)``,
            equality where ``lb == ub``), `scipy.optimize.LinearConstraint` (on the flat
            vector), dicts ``{'type': 'eq' | 'ineq', 'fun': ..., 'args': ...}`` (``ineq``:
            ``fun >= 0``), or a list of them.
        options: IPOPT options (see `DEFAULT_OPTIONS`); with
            ``hessian_approximation='limited-memory'`` no Hessian is built.
        callback: ``callback(intermediate_result) -> bool | None`` once per iteration; see
            [`minimize`][].
        backend: ``"cyipopt"`` (default) or ``"libipopt"``: IPOPT's C interface through
            ctypes, values written straight into IPOPT's buffers; see [`minimize`][].
        libipopt: with ``backend="libipopt"``, the IPOPT shared library to load (default:
            ``$SPARSEOPT_LIBIPOPT``, else casadi's, cyipopt-wheels', a system one).
        mesh: a `jax.sharding.Mesh` (or a list of devices) the evaluations run on (the
            Jacobian and Lagrangian Hessian split as ``sa.sparse_jacobian(mesh=)`` decides;
            ``docs/sharding.md``). IPOPT stays on the host: ``x`` goes to the mesh and each
            result comes back once per evaluation. ``None``: one device.

    Attributes:
        n, m: number of variables and of constraint rows.
        nlp: the compiled evaluations (counters, timers, patterns).
        setup_time: seconds this construction spent on ``variables``,
            ``sparsity_and_coloring`` and ``compile`` (0 when the setup came from the setup
            cache: same ``fun``/constraint function objects, shapes, dtypes and static
            arguments as an earlier problem) and in ``total``.
        compilations: XLA compilations this construction caused (``count``,
            ``evaluators``, ``seconds``); 0 on a setup-cache hit.
        ipopt_library: the IPOPT build in use: path, version, linear solver, ordering.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> from sparseopt_adapters import ipopt
        >>> f = lambda x: jnp.sum((x - 2.0) ** 2)
        >>> con = {"type": "eq", "fun": lambda x: x[1:] - x[:-1] ** 2}
        >>> prob = ipopt.Problem(f, np.ones(3), constraints=[con])
        >>> prob.hessianstructure()
        (array([0, 1, 2], dtype=int32), array([0, 1, 2], dtype=int32))
        >>> x, info = prob.solve()
        >>> info["status"], np.round(x, 4)
        (0, array([1.2272, 1.5061, 2.2685]))
        >>> x, info = prob.solve(np.full(3, 1.5))   # reuses the compiled callbacks
    """

    def __init__(
        self,
        fun: Callable,
        x0: Any,
        args=(),
        *,
        bounds=None,
        constraints=(),
        options: dict | None = None,
        callback: Callable | None = None,
        backend: str = "cyipopt",
        libipopt: str | os.PathLike | None = None,
        mesh=None,
    ):
        opts = _merged_options(options)
        self._capi = None
        self.nlp = _NLP(
            fun,
            x0,
            args,
            bounds=bounds,
            constraints=constraints,
            hessian=_wants_exact_hessian(opts),
            error_cls=cyipopt.CyIpoptEvaluationError,
            caller=type(self).__name__ if type(self) is not Problem else "ipopt.Problem",
            mesh=mesh,
        )
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}.")
        self._callback = callback
        self.stopped_by_callback: int | None = None
        nlp = self.nlp
        super().__init__(
            n=nlp.n, m=nlp.m, problem_obj=None, lb=nlp.lb, ub=nlp.ub,
            cl=nlp.cl if nlp.m else None, cu=nlp.cu if nlp.m else None,
        )
        self._capi = _capi.attach(self, backend, libipopt)  # None for backend="cyipopt"
        for k, v in opts.items():
            _add_option(self, k, v)

    # -- attributes -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.nlp.n

    @property
    def m(self) -> int:
        return self.nlp.m

    @property
    def setup_time(self) -> dict[str, float]:
        return dict(self.nlp.setup_time)

    @property
    def compilations(self) -> dict[str, float]:
        return dict(self.nlp.compilations)

    def add_option(self, keyword, val):
        """`cyipopt.Problem.add_option`, with IPOPT's own message in a ``ValueError``.

        Accepts numpy scalars, ``True``/``False`` for yes/no options, an int for a
        real-valued option, and the scipy spellings ``maxiter`` / ``disp``.
        """
        _add_option(self, keyword, val)

    # -- backend="libipopt": the C problem in the chosen library answers these (_capi.py) ----
    @property
    def ipopt_library(self) -> dict:
        return _capi.library_info(self)

    def get_current_iterate(self, scaled=False):
        if self._capi is not None:
            return self._capi.get_current_iterate(scaled)
        return super().get_current_iterate(scaled)

    def get_current_violations(self, scaled=False):
        if self._capi is not None:
            return self._capi.get_current_violations(scaled)
        return super().get_current_violations(scaled)

    def set_problem_scaling(self, obj_scaling=1.0, x_scaling=None, g_scaling=None):
        if self._capi is not None:
            return self._capi.set_problem_scaling(obj_scaling, x_scaling, g_scaling)
        return super().set_problem_scaling(obj_scaling, x_scaling, g_scaling)

    def close(self):
        if self._capi is not None:
            self._capi.close()
        super().close()

    # -- cyipopt callbacks (values in structure order, float64) -------------------------
    def objective(self, x):
        return self.nlp.objective(x)

    def gradient(self, x):
        return self.nlp.gradient(x)

    def constraints(self, x):
        return self.nlp.constraints(x)

    def jacobian(self, x):
        return self.nlp.jacobian(x)

    def jacobianstructure(self):
        return self.nlp.jacobianstructure()

    def hessian(self, x, lagrange, obj_factor):
        return self.nlp.hessian(x, lagrange, obj_factor)

    def hessianstructure(self):
        return self.nlp.hessianstructure()

    def intermediate(self, alg_mod, iter_count, obj_value, inf_pr, inf_du, mu, d_norm,
                     regularization_size, alpha_du, alpha_pr, ls_trials):
        nlp = self.nlp
        nlp.iteration = int(iter_count)
        if nlp.error is not None:
            return False
        if self._callback is None:
            return True
        try:
            it = self.get_current_iterate() or {}
            x = np.array(it["x"]) if "x" in it else None
            state = OptimizeResult(
                x=nlp.variables.result_x(x) if x is not None else None,
                x_flat=x,
                fun=float(obj_value),
                nit=int(iter_count),
                inf_pr=float(inf_pr),
                inf_du=float(inf_du),
                mu=float(mu),
                d_norm=float(d_norm),
                regularization_size=float(regularization_size),
                alpha_du=float(alpha_du),
                alpha_pr=float(alpha_pr),
                ls_trials=int(ls_trials),
                phase="restoration" if alg_mod == 1 else "regular",
                constr=np.array(it["g"]) if "g" in it else None,
                mult_g=np.array(it["mult_g"]) if "mult_g" in it else None,
                mult_x_L=np.array(it["mult_x_L"]) if "mult_x_L" in it else None,
                mult_x_U=np.array(it["mult_x_U"]) if "mult_x_U" in it else None,
            )
            stop = self._callback(state)
        except StopIteration:
            stop = True
        except BaseException as e:  # noqa: BLE001 - re-raised after the solve
            nlp.error, nlp.error_where = e, "callback"
            return False
        if stop:
            self.stopped_by_callback = int(iter_count)
            return False
        return True

    # -- solve ------------------------------------------------------------------------
    def solve(self, x=None, lagrange=(), zl=(), zu=()):
        """Run IPOPT from ``x`` (default: the ``x0`` given at construction).

        Args:
            x: starting point: flat (length ``n``) or shaped like ``x0``.
            lagrange, zl, zu: warm-start multipliers (with ``warm_start_init_point='yes'``).

        Returns:
            ``(x, info)`` as `cyipopt.Problem.solve`: the flat solution and IPOPT's info dict
            (``status_msg`` decoded to ``str``).

        Raises:
            Exception: the first exception raised inside a callback, re-raised with its
                original traceback after IPOPT has stopped.
        """
        nlp = self.nlp
        x = nlp.x0 if x is None else nlp.variables.flatten(x, "Problem.solve")
        nlp.reset()
        self.stopped_by_callback = None
        t = time.perf_counter()
        run = self._capi.solve if self._capi is not None else super().solve
        xs, info = run(x, lagrange=list(lagrange), zl=list(zl), zu=list(zu))
        self.solve_seconds = time.perf_counter() - t
        nlp.raise_pending()
        msg = info.get("status_msg", b"")
        info["status_msg"] = msg.decode() if isinstance(msg, bytes) else str(msg)
        return xs, info

    def __repr__(self) -> str:
        nlp = self.nlp
        h = (f"hessian nnz={nlp.hess_rows.size}" if nlp.has_hessian
             else "hessian=limited-memory")
        return (f"ipopt.Problem(n={nlp.n}, m={nlp.m}, jacobian nnz={nlp.jac_rows.size}, {h})")


# ---------------------------------------------------------------------------------------
# minimize
# ---------------------------------------------------------------------------------------
def minimize(
    fun: Callable,
    x0: Any,
    args=(),
    *,
    bounds=None,
    constraints=(),
    options: dict | None = None,
    callback: Callable | None = None,
    backend: str = "cyipopt",
    libipopt: str | os.PathLike | None = None,
    mesh=None,
) -> OptimizeResult:
    """Minimise a JAX function with IPOPT, exact sparse Jacobian and Lagrangian Hessian.

    Solves ``min fun(x, *args)`` subject to bounds on the (flat) variables and constraints
    ``lb <= c(x) <= ub``. The constraint Jacobian and the Hessian of the Lagrangian are
    detected, colored and compiled once (see [`Problem`][]); every IPOPT callback is one call
    of a compiled function, with objective + constraints and gradient + Jacobian each fused
    into one evaluation per point.

    Setup is paid once: a second call with the same ``fun`` and constraint function
    objects, the same shapes and dtypes of ``x0`` and ``args`` and the same static
    arguments reuses the detection, colouring and compiled executables (``setup_time`` is
    then 0 but for ``total``; see ``sa.cache_info()``, ``sa.clear_cache()``,
    ``sa.set_cache_size(0)`` to opt out). A new lambda per call is a new function and
    sets up anew, as with `jax.jit`. Across runs of a script, JAX's persistent compilation
    cache skips the XLA compilations: ``jax.config.update("jax_compilation_cache_dir",
    "/tmp/jax_cache")``.

    NaN/inf: a non-finite objective or constraint value at a trial point is reported to IPOPT
    as an evaluation error, so IPOPT cuts the step back (its documented behaviour); a
    non-finite gradient, Jacobian or Hessian stops IPOPT (status -13). Either way the
    result's ``message`` and ``nonfinite`` say which quantity and how often.

    Exceptions raised by ``fun``, a constraint or ``callback`` stop IPOPT and are re-raised
    with their original traceback (never swallowed, the Hessian included).

    Args:
        fun: ``fun(x, *args) -> scalar``, JAX-traceable; ``x`` has ``x0``'s structure.
        x0: the starting point: an array (any shape) or a pytree of arrays and
            [`PatternMatrix`][sparseopt_adapters.PatternMatrix]; ``sa.Fixed`` nodes and
            integer leaves are not variables.
        args: extra positional arguments of ``fun``.
        bounds: `scipy.optimize.Bounds` or a sequence of ``(lo, hi)`` pairs (``None`` for no
            bound), on the flat variables (``ravel_parameters`` order).
        constraints: `scipy.optimize.NonlinearConstraint` (JAX-traceable ``fun(x)``;
            ``lb == ub`` is an equality, ``±inf`` one-sided; its ``jac``/``hess`` are
            ignored), `scipy.optimize.LinearConstraint` (on the flat vector), dicts
            ``{'type': 'eq' | 'ineq', 'fun': f, 'args': (...)}`` with ``ineq`` meaning
            ``f >= 0``, or a list of these.
        options: IPOPT options, passed to ``add_option`` after `DEFAULT_OPTIONS`
            (``tol=1e-8``, ``print_level=0``, ``sb='yes'``, ``mu_strategy='monotone'``:
            IPOPT's default, where `cyipopt.minimize_ipopt` sets ``'adaptive'``; see
            `DEFAULT_OPTIONS`); ``maxiter`` and ``disp`` are
            accepted as aliases. A name IPOPT does not know raises ``ValueError`` with IPOPT's
            message. ``hessian_approximation='limited-memory'`` skips the Hessian.
        callback: ``callback(intermediate_result)`` after each iteration, with an
            `OptimizeResult` holding ``x`` (x0's structure), ``x_flat``, ``fun``, ``nit``,
            ``inf_pr``, ``inf_du``, ``mu``, ``alpha_pr``, ``alpha_du``, ``phase``, ``constr``,
            ``mult_g``. Return ``True`` (or raise ``StopIteration``) to stop: the result then
            has ``status == 5`` (User_Requested_Stop) and ``success=False``.
        backend: ``"cyipopt"`` (default: cyipopt-wheels' IPOPT 3.14.11 + MUMPS, no METIS) or
            ``"libipopt"``: IPOPT's C interface through ctypes with values written straight
            into IPOPT's buffers, in the library ``libipopt`` names (the same iterates as
            ``"cyipopt"`` on the same library). See docs/adapters/ipopt.md.
        libipopt: with ``backend="libipopt"``: the IPOPT shared library; default
            ``$SPARSEOPT_LIBIPOPT``, else casadi's (IPOPT 3.14.19, MUMPS + METIS), else
            cyipopt-wheels', else a system one.
        mesh: the devices the evaluations run on; see [`Problem`][].

    Returns:
        `scipy.optimize.OptimizeResult` with ``x`` (x0's structure: a numpy array for an
        array ``x0``, else the pytree), ``x_flat``, ``fun``, ``success`` (IPOPT status 0
        or 1, "solved" or "solved to acceptable level"), ``status`` (IPOPT's
        ApplicationReturnStatus), ``status_name``, ``message`` (str), ``nit``, ``nfev``,
        ``njev``, ``nhev`` (IPOPT's callback calls), ``constr`` (one array per constraint),
        ``g`` (all constraint rows), ``mult_g`` / ``mult_x_L`` / ``mult_x_U`` (IPOPT's
        multipliers: the Lagrangian is ``f + mult_gᵀ g`` ), ``info`` (IPOPT's info dict),
        ``nonfinite`` (NaN/inf counts per quantity), ``setup_time``, ``compilations``
        and ``timing`` (seconds in our callbacks vs the whole solve), ``ipopt_library``
        (``backend``, ``path``, ``version``, ``linear_solver``, ``ordering`` of the IPOPT
        used).

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> from sparseopt_adapters import ipopt
        >>> def hs071(x):
        ...     return x[0] * x[3] * jnp.sum(x[:3]) + x[2]
        >>> cons = [{"type": "ineq", "fun": lambda x: jnp.prod(x) - 25.0},
        ...         {"type": "eq", "fun": lambda x: jnp.sum(x**2) - 40.0}]
        >>> res = ipopt.minimize(hs071, np.array([1.0, 5.0, 5.0, 1.0]),
        ...                      bounds=[(1, 5)] * 4, constraints=cons)
        >>> res.success, round(res.fun, 6), res.nit
        (True, 17.014017, 8)
        >>> np.round(res.x, 4)
        array([1.    , 4.743 , 3.8211, 1.3794])
    """
    opts = _merged_options(options)
    prob = Problem(fun, x0, args, bounds=bounds, constraints=constraints, options=opts,
                   callback=callback, backend=backend, libipopt=libipopt, mesh=mesh)
    try:
        return _solve(prob)
    finally:
        prob.close()


def _solve(prob: Problem, x=None) -> OptimizeResult:
    nlp = prob.nlp
    xs, info = prob.solve(x)
    status = int(info["status"])
    message = info["status_msg"]
    if prob.stopped_by_callback is not None:
        message += f" (callback asked to stop at iteration {prob.stopped_by_callback})"
    if nlp.nonfinite:
        message += " Note: " + nlp.nonfinite.describe()
    timing = nlp.timing()
    timing["solve_s"] = prob.solve_seconds
    timing["ipopt_s"] = prob.solve_seconds - timing["callbacks_s"]
    g = np.array(info["g"])
    return OptimizeResult(
        x=nlp.variables.result_x(xs),
        x_flat=np.array(xs),
        fun=float(info["obj_val"]),
        success=status in (0, 1),
        status=status,
        status_name=_STATUS_NAMES.get(status, "Unknown"),
        message=message,
        nit=nlp.iteration,
        nfev=nlp.calls["objective"],
        njev=nlp.calls["gradient"],
        nhev=nlp.calls["hessian"],
        g=g,
        constr=nlp.split_constraints(g),
        mult_g=np.array(info["mult_g"]),
        mult_x_L=np.array(info["mult_x_L"]),
        mult_x_U=np.array(info["mult_x_U"]),
        info=info,
        nonfinite=dict(nlp.nonfinite.counts),
        setup_time=prob.setup_time,
        compilations=prob.compilations,
        timing=timing,
        ipopt_library=prob.ipopt_library,
    )
