"""``backend="libipopt"``: IPOPT's C interface (IpStdCInterface.h) driven through ctypes.

[`CBackend`][] drives the same compiled, fused, x-cached evaluations cyipopt drives, but
each value array goes into IPOPT's own buffer in one ``memcpy`` (``out[...] = values`` on a
numpy view of the C pointer) where cyipopt copies element by element (100–230 ns per
nonzero). When the problem is a plain `ipopt.Problem`, the C callbacks call its `_NLP`
directly, on views of IPOPT's ``x`` and multipliers (no copy) and with IPOPT's ``new_x``
flag (the x-cache then skips comparing ``x``); a subclass that redefines a callback gets its
own ``objective`` ... ``hessian`` methods called, as cyipopt calls them.

Any library ``_libraries.resolve`` accepts can be used: the one in
``casadi`` (IPOPT 3.14.19, MUMPS 5.8.2 + METIS), the one in ``cyipopt-wheels``, or a user build
with HSL or Pardiso.

Failure semantics are cyipopt's, so that both backends take the same iterates: a callback
raising ``evaluation_error`` (``cyipopt.CyIpoptEvaluationError``) returns ``false`` to IPOPT;
any other exception also returns ``false`` (IPOPT stops at once, or cuts the step back for a
function value) and is re-raised by `CBackend.solve` with its traceback; after an exception
the intermediate callback returns ``false``.

Types follow IPOPT 3.14's default build: ``ipindex`` = ``int``, ``ipnumber`` = ``double``
(an ``IPOPT_INT64`` or ``IPOPT_SINGLE`` build is not supported).
"""

from __future__ import annotations

import ctypes as C
import functools
import sys
import weakref

import numpy as np

_I, _D, _B, _P = C.c_int, C.c_double, C.c_bool, C.c_void_p

# callback types; pointers come in as plain addresses (int, or None for NULL)
EVAL_F = C.CFUNCTYPE(_B, _I, _P, _B, _P, _P)
EVAL_GRAD_F = C.CFUNCTYPE(_B, _I, _P, _B, _P, _P)
EVAL_G = C.CFUNCTYPE(_B, _I, _P, _B, _I, _P, _P)
EVAL_JAC_G = C.CFUNCTYPE(_B, _I, _P, _B, _I, _I, _P, _P, _P, _P)
EVAL_H = C.CFUNCTYPE(_B, _I, _P, _B, _D, _I, _P, _B, _I, _P, _P, _P, _P)
INTERMEDIATE = C.CFUNCTYPE(_B, _I, _I, _D, _D, _D, _D, _D, _D, _D, _D, _I, _P)

_SIGNATURES = {
    "CreateIpoptProblem": (_P, [_I, _P, _P, _I, _P, _P, _I, _I, _I, EVAL_F, EVAL_G,
                                EVAL_GRAD_F, EVAL_JAC_G, EVAL_H]),
    "FreeIpoptProblem": (None, [_P]),
    "AddIpoptStrOption": (_B, [_P, C.c_char_p, C.c_char_p]),
    "AddIpoptNumOption": (_B, [_P, C.c_char_p, _D]),
    "AddIpoptIntOption": (_B, [_P, C.c_char_p, _I]),
    "OpenIpoptOutputFile": (_B, [_P, C.c_char_p, _I]),
    "SetIpoptProblemScaling": (_B, [_P, _D, _P, _P]),
    "SetIntermediateCallback": (_B, [_P, INTERMEDIATE]),
    "IpoptSolve": (_I, [_P, _P, _P, _P, _P, _P, _P, _P]),
    "GetIpoptCurrentIterate": (_B, [_P, _B, _I, _P, _P, _P, _I, _P, _P]),
    "GetIpoptCurrentViolations": (_B, [_P, _B, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
}


def bind(cdll) -> None:
    """Declare the C signatures on ``cdll`` (idempotent)."""
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(cdll, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes


def _views(k: int, ctype=_D, dtype=np.float64):
    """``view(addr)``: a numpy array of ``k`` items over the C buffer at ``addr`` (no copy)."""
    if k == 0:
        empty = np.zeros(0, dtype)
        return lambda addr: empty
    arr_t = ctype * k
    return lambda addr: np.frombuffer(arr_t.from_address(addr), dtype)


def _cached_views(k: int, ctype=_D, dtype=np.float64):
    """`_views` remembering the last few addresses: IPOPT hands the same buffers again and
    again (``x`` is always its one full-space copy), so most calls skip building a view.
    A view is only used inside the callback that received its address."""
    make = _views(k, ctype, dtype)
    if k == 0:
        return make
    cache: dict[int, np.ndarray] = {}

    def view(addr):
        v = cache.get(addr)
        if v is None:
            if len(cache) >= 16:
                cache.clear()
            v = cache[addr] = make(addr)
        return v

    return view


_CALLBACK_METHODS = ("objective", "gradient", "constraints", "jacobian", "hessian",
                     "jacobianstructure", "hessianstructure")


def _direct_nlp(problem):
    """The `_NLP` whose methods the C callbacks may call directly (passing IPOPT's ``new_x``
    and views of IPOPT's memory), or ``None`` when ``problem`` redefines a callback (a
    subclass or an instance attribute), whose own methods are then called as cyipopt
    would."""
    nlp = getattr(problem, "nlp", None)
    if nlp is None or not hasattr(nlp, "layout"):
        return None
    from ._impl import Problem

    cls = type(problem)
    for name in _CALLBACK_METHODS:
        if getattr(cls, name, None) is not getattr(Problem, name) or name in vars(problem):
            return None
    return nlp


def _buffer(values, k: int) -> tuple[np.ndarray, int]:
    a = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if a.size != k:
        raise ValueError(f"expected {k} values, got {a.size}")
    if k == 0:
        a = np.zeros(1)  # a valid pointer; IPOPT reads none of it
    return a, a.ctypes.data


class CBackend:
    """One IPOPT problem in ``lib`` whose callbacks call ``problem``'s cyipopt-style methods.

    Args:
        problem: an object with cyipopt's callback methods (normally the `ipopt.Problem`;
            held weakly) and ``n``, ``m``; bounds ``lb``, ``ub``, ``cl``, ``cu`` come in here.
        lib: an [`IpoptLibrary`][sparseopt_adapters.ipopt._libraries.IpoptLibrary].
        evaluation_error: the exception class that means "report an evaluation error to
            IPOPT" rather than "stop and re-raise" (cyipopt's ``CyIpoptEvaluationError``).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from sparseopt_adapters import ipopt
        >>> prob = ipopt.Problem(lambda x: jnp.sum((x - 2.0) ** 2), np.zeros(3),
        ...                      backend="libipopt")
        >>> x, info = prob.solve()
        >>> info["status"], np.round(x, 6)
        (0, array([2., 2., 2.]))
    """

    def __init__(self, problem, lib, lb, ub, cl, cu, evaluation_error=ArithmeticError):
        self.lib = lib
        c = lib.cdll
        bind(c)
        self._c = c
        self.n = n = int(problem.n)
        self.m = m = int(problem.m)
        self.evaluation_error = evaluation_error
        self._exception = None
        self._in_solve = False
        ref = weakref.ref(problem)
        jr, jc = (np.asarray(a) for a in problem.jacobianstructure())
        hr, hc = (np.asarray(a) for a in problem.hessianstructure())
        self.nnz_jac, self.nnz_hess = int(jr.size), int(hr.size)
        self._callbacks = self._make_callbacks(ref, n, m, self.nnz_jac, self.nnz_hess)
        bufs = [_buffer(v, k) for v, k in ((lb, n), (ub, n), (cl, m), (cu, m))]
        self._handle = c.CreateIpoptProblem(
            n, bufs[0][1], bufs[1][1], m, bufs[2][1], bufs[3][1], self.nnz_jac, self.nnz_hess,
            0, *self._callbacks[:5])
        if not self._handle:
            raise RuntimeError(
                f"{lib.path}: CreateIpoptProblem returned NULL for n={n}, m={m}, "
                f"nnz(J)={self.nnz_jac}, nnz(H)={self.nnz_hess} (IPOPT refuses bounds with "
                "lb > ub or a negative size)."
            )
        if not c.SetIntermediateCallback(self._handle, self._callbacks[5]):
            raise RuntimeError(f"{lib.path}: SetIntermediateCallback failed.")

    # -- the C callbacks ----------------------------------------------------------------
    def _make_callbacks(self, ref, n, m, nj, nh):
        xv, mv = _cached_views(n), _cached_views(m)
        jv, hv = _cached_views(nj), _cached_views(nh)
        jiv, hiv = _views(nj, _I, np.int32), _views(nh, _I, np.int32)
        scalar = _D.from_address
        evaluation_error = self.evaluation_error
        me = weakref.ref(self)
        no_lam = np.zeros(0)

        def guarded(body):
            def cb(*a):
                try:
                    body(ref(), *a)
                    return True
                except evaluation_error:
                    return False
                except BaseException:  # noqa: BLE001 - re-raised by solve()
                    backend = me()
                    if backend is not None and backend._exception is None:
                        backend._exception = sys.exc_info()
                    return False
            return cb

        def eval_f(p, n_, x, new_x, obj, ud):
            scalar(obj).value = p.objective(np.array(xv(x)))

        def eval_grad_f(p, n_, x, new_x, out, ud):
            xv(out)[...] = p.gradient(np.array(xv(x)))

        def eval_g(p, n_, x, new_x, m_, out, ud):
            if m:
                mv(out)[...] = p.constraints(np.array(xv(x)))

        def eval_jac_g(p, n_, x, new_x, m_, k, rows, cols, vals, ud):
            if vals is None:
                r, c = p.jacobianstructure()
                if nj:
                    jiv(rows)[...] = r
                    jiv(cols)[...] = c
            elif nj:
                jv(vals)[...] = p.jacobian(np.array(xv(x)))

        def eval_h(p, n_, x, new_x, sigma, m_, lam, new_lam, k, rows, cols, vals, ud):
            if vals is None:
                r, c = p.hessianstructure()
                if nh:
                    hiv(rows)[...] = r
                    hiv(cols)[...] = c
            else:
                out = p.hessian(np.array(xv(x)), np.array(mv(lam)) if m else np.zeros(0),
                                sigma)
                if nh:
                    hv(vals)[...] = out

        nlp = _direct_nlp(ref())
        if nlp is not None:
            # the direct path: the NLP reads IPOPT's x (and multipliers) in place and knows
            # IPOPT's new_x; each result is one memcpy into IPOPT's buffer

            def eval_f(p, n_, x, new_x, obj, ud):  # noqa: F811 - the direct variants
                scalar(obj).value = nlp.objective(xv(x), new_x)

            def eval_grad_f(p, n_, x, new_x, out, ud):  # noqa: F811
                xv(out)[...] = nlp.gradient(xv(x), new_x)

            def eval_g(p, n_, x, new_x, m_, out, ud):  # noqa: F811
                if m:
                    mv(out)[...] = nlp.constraints(xv(x), new_x)

            def eval_jac_g(p, n_, x, new_x, m_, k, rows, cols, vals, ud):  # noqa: F811
                if vals is None:
                    r, c = nlp.jacobianstructure()
                    if nj:
                        jiv(rows)[...] = r
                        jiv(cols)[...] = c
                elif nj:
                    jv(vals)[...] = nlp.jacobian(xv(x), new_x)

            def eval_h(p, n_, x, new_x, sigma, m_, lam, new_lam, k, rows, cols,  # noqa: F811
                       vals, ud):
                if vals is None:
                    r, c = nlp.hessianstructure()
                    if nh:
                        hiv(rows)[...] = r
                        hiv(cols)[...] = c
                else:
                    out = nlp.hessian(xv(x), mv(lam) if m else no_lam, sigma, new_x)
                    if nh:
                        hv(vals)[...] = out

        def intermediate(alg_mod, it, obj, inf_pr, inf_du, mu, d_norm, reg, a_du, a_pr, ls,
                         ud):
            backend, p = me(), ref()
            if backend is None or p is None or backend._exception is not None:
                return False
            try:
                ret = p.intermediate(alg_mod, it, obj, inf_pr, inf_du, mu, d_norm, reg, a_du,
                                     a_pr, ls)
            except BaseException:  # noqa: BLE001 - re-raised by solve()
                backend._exception = sys.exc_info()
                return False
            return True if ret is None else bool(ret)

        return (EVAL_F(guarded(eval_f)), EVAL_G(guarded(eval_g)),
                EVAL_GRAD_F(guarded(eval_grad_f)), EVAL_JAC_G(guarded(eval_jac_g)),
                EVAL_H(guarded(eval_h)), INTERMEDIATE(intermediate))

    # -- options ------------------------------------------------------------------------
    def add_option(self, keyword, val) -> None:
        """cyipopt's ``add_option`` contract: str/bytes, int or float; ``TypeError`` if refused."""
        self._check_open()
        key = keyword.encode() if isinstance(keyword, str) else bytes(keyword)
        if isinstance(val, str):
            val = val.encode()
        if isinstance(val, bytes):
            ok = self._c.AddIpoptStrOption(self._handle, key, val)
        elif type(val) is float:
            ok = self._c.AddIpoptNumOption(self._handle, key, val)
        elif type(val) is int:
            ok = self._c.AddIpoptIntOption(self._handle, key, val)
        else:
            raise TypeError("Invalid option type")
        if not ok:
            raise TypeError("Error while assigning an option")

    def set_problem_scaling(self, obj_scaling=1.0, x_scaling=None, g_scaling=None) -> None:
        """IPOPT's ``SetIpoptProblemScaling`` (used with ``nlp_scaling_method='user-scaling'``)."""
        self._check_open()
        xs = None if x_scaling is None else _buffer(x_scaling, self.n)[0]
        gs = None if g_scaling is None else _buffer(g_scaling, self.m)[0]
        self._scaling = (xs, gs)  # IPOPT copies them, but keep them alive for the call anyway
        ok = self._c.SetIpoptProblemScaling(
            self._handle, float(obj_scaling), None if xs is None else xs.ctypes.data,
            None if gs is None else gs.ctypes.data)
        if not ok:
            raise ValueError("IPOPT refused the problem scaling.")

    def open_output_file(self, path, print_level: int = 5) -> None:
        """IPOPT's ``OpenIpoptOutputFile``: an extra log file at ``print_level``."""
        self._check_open()
        if not self._c.OpenIpoptOutputFile(self._handle, str(path).encode(), int(print_level)):
            raise OSError(f"IPOPT could not open the output file {path!r}.")

    # -- solve --------------------------------------------------------------------------
    def solve(self, x, lagrange=(), zl=(), zu=()):
        """``IpoptSolve`` from ``x``; returns ``(x, info)`` with cyipopt's info keys."""
        self._check_open()
        n, m = self.n, self.m
        x = np.array(x, dtype=np.float64).reshape(-1)
        if x.size != n:
            raise ValueError("Wrong length of x0.")

        def start(v, k, what):
            v = np.atleast_1d(np.asarray(v, dtype=np.float64)).reshape(-1)
            if v.size == 0:
                return np.zeros(k)
            if v.size != k:
                raise ValueError(f"Wrong length of {what}.")
            return np.array(v)

        mult_g, mult_x_L, mult_x_U = start(lagrange, m, "lagrange"), start(zl, n, "zl"), \
            start(zu, n, "zu")
        g = np.zeros(m)
        obj = _D(0.0)
        ptr = lambda a: a.ctypes.data if a.size else None  # noqa: E731
        self._exception = None
        self._in_solve = True
        try:
            status = self._c.IpoptSolve(self._handle, x.ctypes.data, ptr(g), C.addressof(obj),
                                        ptr(mult_g), ptr(mult_x_L), ptr(mult_x_U), None)
        finally:
            self._in_solve = False
        exc, self._exception = self._exception, None
        if exc is not None:
            raise exc[1].with_traceback(exc[2])
        info = {"x": x, "g": g, "obj_val": obj.value, "mult_g": mult_g, "mult_x_L": mult_x_L,
                "mult_x_U": mult_x_U, "status": int(status),
                "status_msg": _status_message(int(status))}
        return x, info

    def get_current_iterate(self, scaled: bool = False):
        """cyipopt's ``get_current_iterate``: only inside a solve (intermediate callback)."""
        if not self._in_solve:
            raise RuntimeError("get_current_iterate can only be called during a call to solve, "
                               "e.g. in an intermediate callback.")
        n, m = self.n, self.m
        out = {k: np.zeros(s) for k, s in (("x", n), ("mult_x_L", n), ("mult_x_U", n),
                                            ("g", m), ("mult_g", m))}
        p = {k: (v.ctypes.data if v.size else None) for k, v in out.items()}
        ok = self._c.GetIpoptCurrentIterate(self._handle, bool(scaled), n, p["x"],
                                            p["mult_x_L"], p["mult_x_U"], m, p["g"],
                                            p["mult_g"])
        return out if ok else None

    def get_current_violations(self, scaled: bool = False):
        """cyipopt's ``get_current_violations``: only inside a solve."""
        if not self._in_solve:
            raise RuntimeError("get_current_violations can only be called during a call to "
                               "solve, e.g. in an intermediate callback.")
        n, m = self.n, self.m
        names = (("x_L_violation", n), ("x_U_violation", n), ("compl_x_L", n),
                 ("compl_x_U", n), ("grad_lag_x", n), ("g_violation", m), ("compl_g", m))
        out = {k: np.zeros(s) for k, s in names}
        p = [v.ctypes.data if v.size else None for v in out.values()]
        ok = self._c.GetIpoptCurrentViolations(self._handle, bool(scaled), n, *p[:5], m, *p[5:])
        return out if ok else None

    # -- lifetime -----------------------------------------------------------------------
    def _check_open(self):
        if not self._handle:
            raise RuntimeError("this IPOPT problem was closed (close() frees it).")

    def close(self) -> None:
        """``FreeIpoptProblem`` (idempotent)."""
        if getattr(self, "_handle", None):
            self._c.FreeIpoptProblem(self._handle)
        self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _status_message(status: int) -> bytes:
    """cyipopt's message for an ApplicationReturnStatus (the same text on both backends)."""
    wrapper = sys.modules.get("ipopt_wrapper")  # cyipopt's extension module
    messages = getattr(wrapper, "STATUS_MESSAGES", None) or {}
    return messages.get(status, b"Unknown status")


# ---------------------------------------------------------------------------------------
# probe: one tiny solve, for the version banner
# ---------------------------------------------------------------------------------------
class _Quadratic:
    """min (x - 1)² in cyipopt's callback protocol, numpy only."""

    n, m = 1, 0

    def objective(self, x):
        return float((x[0] - 1.0) ** 2)

    def gradient(self, x):
        return np.array([2.0 * (x[0] - 1.0)])

    def constraints(self, x):
        return np.zeros(0)

    def jacobian(self, x):
        return np.zeros(0)

    def jacobianstructure(self):
        return np.zeros(0, np.int32), np.zeros(0, np.int32)

    def hessian(self, x, lam, sigma):
        return np.array([2.0 * sigma])

    def hessianstructure(self):
        return np.zeros(1, np.int32), np.zeros(1, np.int32)

    def intermediate(self, *a):
        return True


def probe_solve(cdll, log_path: str) -> int:
    """Solve ``_Quadratic`` in ``cdll`` with IPOPT's banner written to ``log_path``."""

    class _Lib:
        path = getattr(cdll, "_name", "libipopt")

    _Lib.cdll = cdll
    q = _Quadratic()
    b = CBackend(q, _Lib, [-np.inf], [np.inf], [], [])
    try:
        for k, v in (("print_level", 0), ("sb", "yes"), ("max_iter", 20)):
            b.add_option(k, v)
        b.open_output_file(log_path, 5)
        _, info = b.solve(np.zeros(1))
    finally:
        b.close()
    return info["status"]


# ---------------------------------------------------------------------------------------
# the ipopt.Problem side: which backend, which library
# ---------------------------------------------------------------------------------------
BACKENDS = ("cyipopt", "libipopt")


def attach(problem, backend: str, libipopt=None) -> CBackend | None:
    """The C problem behind ``problem`` for ``backend="libipopt"``; ``None`` for cyipopt."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {BACKENDS}, got {backend!r}. 'cyipopt' (default) solves "
            "through cyipopt; 'libipopt' drives an IPOPT shared library through its C interface "
            "(libipopt= a path, $SPARSEOPT_LIBIPOPT, or an installed casadi/cyipopt-wheels)."
        )
    if backend == "cyipopt":
        if libipopt is not None:
            raise ValueError(
                f"libipopt={libipopt!r} is used only with backend='libipopt'; cyipopt always "
                "uses the IPOPT it was built with. Pass backend='libipopt' as well."
            )
        return None
    import cyipopt

    from . import _libraries

    lib = _libraries.resolve(libipopt)
    nlp = problem.nlp
    return CBackend(problem, lib, nlp.lb, nlp.ub, nlp.cl, nlp.cu,
                    evaluation_error=cyipopt.CyIpoptEvaluationError)


@functools.lru_cache(maxsize=1)  # candidates() runs ctypes.util.find_library: ~70 ms a call
def cyipopt_library_path() -> str | None:
    """The libipopt file cyipopt uses: the wheel's, else (Linux) the one mapped in-process."""
    from . import _libraries

    for source, path in _libraries.candidates():
        if source == "cyipopt-wheels":
            return path
    try:  # cyipopt built against another IPOPT (conda, a system build): it is loaded already
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if "libipopt" in line}
    except OSError:
        return None
    return min(mapped) if len(mapped) == 1 else None


def library_info(problem) -> dict:
    """``res.ipopt_library``: backend, path, IPOPT version, linear solver, ordering."""
    options = dict(getattr(problem, "_options_set", {}))
    backend = getattr(problem, "_capi", None)
    if backend is not None:
        return {"backend": "libipopt", **backend.lib.describe(options)}
    from . import _libraries

    path = cyipopt_library_path()
    try:
        facts = _libraries.load(path, "cyipopt-wheels").describe(options) if path else {}
    except _libraries.LibIpoptError:
        facts = {}
    return {"backend": "cyipopt", **({"path": path} if path else {}), **facts,
            "source": "cyipopt"}
