"""IPOPT with exact sparse JAX derivatives vs CasADi, dense JAX derivatives and L-BFGS.

Problems:
    luksan-vlcek   chained Rosenbrock with trigonometric-exponential equality constraints
                   (Lukšan & Vlček 1999, problem 5.1; CUTEst-type, IPOPT's classic
                   large-scale test), n = 1e4, 1e5 (--quick: 1e3, 1e4).
    control        1-D reaction-diffusion optimal control (examples/optimal_control_ipopt.py;
                   COPS-type): implicit Euler on an nx × nt grid, bounded distributed control,
                   n = 2·nx·nt = 1e4 (50×100) and 1e5 (250×200) (--quick: 20×20).

Solvers (the same IPOPT options for all: tol 1e-8, mu_strategy monotone, MUMPS):
    casadi         CasADi nlpsol('ipopt') on the same problem written with MX symbols
                   (casadi's own libipopt: IPOPT 3.14.19, MUMPS 5.8.2 + METIS)
    ours           sparseopt_adapters.ipopt.Problem, backend='cyipopt' (the default: the
                   cyipopt-wheels build, IPOPT 3.14.11, MUMPS 5.5.1, no METIS)
    ours-libipopt  the same Problem with backend='libipopt' on casadi's libipopt: IPOPT's C
                   interface through ctypes, values memcpy'd into IPOPT's buffers; the same
                   IPOPT build as the casadi row, so the comparison is callbacks vs callbacks
    ours-lib@wheel backend='libipopt' on cyipopt-wheels' own libipopt (same build as `ours`):
                   what the zero-copy callbacks alone save over cyipopt's element copies
    dense-jax      cyipopt.minimize_ipopt with jitted dense jax.jacfwd / jax.hessian
                   (only where the dense n × n Hessian and m × n Jacobian are small)
    ours-lbfgs     ours with hessian_approximation='limited-memory' (no Hessian built;
                   n <= 2e4 only: it needs hundreds of iterations)

Columns: iterations; setup (ours: detection + coloring + compile, the setup cache cleared
first; casadi: nlpsol build; dense: jit compile); solve wall time (median of --reps solves
after one warm-up solve) and process CPU time; ×cas: the median over reps of the ratio to
CasADi's solve in the same rep (the solvers of a problem take turns rep by rep, in reversed
order every other rep, so a load change on a shared machine hits both sides of a ratio);
IPOPT's own print_timing_statistics split of the solve into time in NLP function evaluations
(everything inside the callbacks, including cyipopt's copies) and everything else (MUMPS,
line search, ...); `cb share`: the function evaluations' share of IPOPT's CPU time (goal for
ours-libipopt: < 10 % where CasADi's is); for ours also the wall time inside our Python
callbacks. A second table puts IPOPT's own timers for casadi and ours-libipopt (the same
library) side by side, with MUMPS' factor size from one more, untimed, solve: where a gap is
inside IPOPT, it shows there. Both sides' IPOPT options are printed first.

--glue replays one IPOPT iteration's callbacks (f and c at a new point, ∇f, J, H) through
the libipopt backend's C callbacks and splits each: the jitted call (dispatch + run +
wait), the memcpy into IPOPT's buffer, ctypes' C -> Python round trip, and our Python glue.

Run:
    python benchmarks/bench_ipopt.py --no-lbfgs     # n = 1e4 and 1e5 (10-20 minutes)
    python benchmarks/bench_ipopt.py --pair         # casadi vs ours-libipopt only
    python benchmarks/bench_ipopt.py --quick        # small sizes only (< 2 min)
    python benchmarks/bench_ipopt.py --glue         # the per-callback cost split
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize as so  # noqa: E402

import sparseopt_adapters  # noqa: E402, F401  (float64)
from sparseopt_adapters import ipopt  # noqa: E402

from _report import add_json_argument, table, write_json  # noqa: E402  isort: skip

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMON = {"tol": 1e-8, "mu_strategy": "monotone", "linear_solver": "mumps", "max_iter": 3000}
TMP = pathlib.Path(tempfile.mkdtemp(prefix="bench_ipopt_"))
LBFGS_WALL_CAP = 120.0  # seconds per L-BFGS solve (IPOPT's max_wall_time; status -5 if hit)
DENSE_LIMIT = 2500  # largest n for the dense-JAX baseline (n² / 2 Hessian entries)
LBFGS_LIMIT = 20_000  # largest n for the L-BFGS row (hundreds of iterations)


# ---------------------------------------------------------------------------------------
# problems: JAX and CasADi versions of the same NLP
# ---------------------------------------------------------------------------------------
def lv_objective(x):
    return jnp.sum(100.0 * (x[:-1] ** 2 - x[1:]) ** 2 + (x[:-1] - 1.0) ** 2)


def lv_constraints(x):
    a, b, d = x[:-2], x[1:-1], x[2:]
    return (3 * b**3 + 2 * d - 5 + jnp.sin(b - d) * jnp.sin(b + d) + 4 * b
            - a * jnp.exp(a - b) - 3)


def luksan_vlcek(n):
    x0 = np.where(np.arange(n) % 2 == 0, -1.2, 1.0)
    return dict(name="luksan-vlcek", size=f"n={n:.0e}", n=n, f=lv_objective, c=lv_constraints,
                x0=x0, cl=0.0, cu=0.0, lb=None, ub=None, casadi=lambda: lv_casadi(n))


def lv_casadi(n):
    import casadi as ca

    x = ca.MX.sym("x", n)
    f = ca.sum1(100 * (x[:-1] ** 2 - x[1:]) ** 2 + (x[:-1] - 1) ** 2)
    a, b, d = x[:-2], x[1:-1], x[2:]
    g = 3 * b**3 + 2 * d - 5 + ca.sin(b - d) * ca.sin(b + d) + 4 * b - a * ca.exp(a - b) - 3
    return {"x": x, "f": f, "g": g}


def _load_example():
    path = ROOT / "examples" / "optimal_control_ipopt.py"
    spec = importlib.util.spec_from_file_location("optimal_control_ipopt", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def control(nx, nt):
    ex = _load_example()
    objective, dynamics, x0_tree, bounds = ex.make_problem(nx, nt)
    flat0, unravel = sparseopt_adapters.ravel_parameters(x0_tree)
    n = flat0.size

    def f(z):  # the flat form, as IPOPT sees it (u first, then y; row-major)
        return objective(unravel(z))

    def c(z):
        return jnp.ravel(dynamics(unravel(z)))

    return dict(name="control", size=f"{nx}x{nt}", n=n, f=f, c=c, x0=np.asarray(flat0),
                cl=0.0, cu=0.0, lb=bounds.lb, ub=bounds.ub,
                casadi=lambda: control_casadi(nx, nt))


def control_casadi(nx, nt, nu=0.05, alpha=1e-4, T=2.0):
    import casadi as ca
    import scipy.sparse as sp

    dx, dt = 1.0 / (nx + 1), T / nt
    xs = np.linspace(dx, 1.0 - dx, nx)
    y_init = 0.2 * np.sin(np.pi * xs)
    y_target = 0.8 * np.sin(2 * np.pi * xs) ** 2
    lap = sp.diags_array([1.0, -2.0, 1.0], offsets=[-1, 0, 1], shape=(nx, nx)).tocsc() / dx**2
    D = ca.DM(ca.Sparsity(nx, nx, lap.indptr.tolist(), lap.indices.tolist()), lap.data)
    v = ca.MX.sym("v", 2 * nx * nt)
    U = ca.reshape(v[: nx * nt], nx, nt)  # column k = u[k] (our row-major (nt, nx))
    Y = ca.reshape(v[nx * nt:], nx, nt)
    prev = ca.horzcat(ca.DM(y_init), Y[:, : nt - 1])
    R = (Y - prev) / dt - (nu * ca.mtimes(D, Y) + Y - Y**3 + U)
    f = 0.5 * dx * ca.sumsqr(Y[:, nt - 1] - ca.DM(y_target)) + 0.5 * alpha * dt * dx * ca.sumsqr(U)
    return {"x": v, "f": f, "g": ca.vec(R)}


# ---------------------------------------------------------------------------------------
# IPOPT's timing statistics
# ---------------------------------------------------------------------------------------
_TIMING = re.compile(r"^\s*([A-Za-z][\w ]*?)\.*:\s*([\d.]+)\s*\(sys:\s*([\d.]+)\s*wall:\s*"
                     r"([\d.]+)\)", re.M)
#: IPOPT's timers shown side by side by --detail (CPU seconds; "sys" is kernel time)
DETAIL = {"OverallAlgorithm": "overall", "Function Evaluations": "f-evals",
          "ComputeSearchDirection": "search dir", "LinearSystemSymbolicFactorization": "symbolic",
          "LinearSystemBackSolve": "backsolve", "ComputeAcceptableTrialPoint": "trial point",
          "UpdateHessian": "upd. hess.", "CheckConvergence": "convergence"}


def ipopt_timing(path):
    """IPOPT's seconds for the last solve logged in ``path``: CPU ``overall``/``functions``,
    wall ``overall_wall``/``functions_wall``, and every timer as ``timers[name] = (cpu, sys,
    wall)``."""
    text = pathlib.Path(path).read_text()
    text = text[text.rfind("Number of Iterations"):]
    t = {name.strip(): (float(cpu), float(sy), float(wall))
         for name, cpu, sy, wall in _TIMING.findall(text)}
    nan = (np.nan, np.nan, np.nan)
    overall, functions = t.get("OverallAlgorithm", nan), t.get("Function Evaluations", nan)
    return {"overall": overall[0], "functions": functions[0], "overall_wall": overall[2],
            "functions_wall": functions[2], "timers": t}


_MUMPS = re.compile(r"Number of doubles for MUMPS to hold factorization \(INFO\(9\)\) = (\d+)")
_ORDER = re.compile(r"MUMPS used permuting_scaling (\d+) and pivot_order (\d+)")


def mumps_facts(path):
    """MUMPS' factor size (doubles, INFO(9), last factorization) and the pivot order used,
    from a log written at file_print_level >= 6 (an extra, untimed solve)."""
    text = pathlib.Path(path).read_text()
    sizes = _MUMPS.findall(text)
    order = _ORDER.findall(text)
    return {"factor_doubles": int(sizes[-1]) if sizes else None,
            "pivot_order": int(order[-1][1]) if order else None}


def timing_options(tag, level=3):
    path = TMP / f"{tag}.out"
    return path, {"print_timing_statistics": "yes", "output_file": str(path),
                  "file_print_level": level}


def options_for(tag, detail=False):
    """The IPOPT options of every solver (``detail``: the untimed log with MUMPS' facts)."""
    path, topts = timing_options(tag + ("-detail" if detail else ""), 6 if detail else 3)
    return path, dict(COMMON, **topts)


# ---------------------------------------------------------------------------------------
# cases: each builds its solver (timed setup) and returns a `solve` closure; `measure` times
# the cases of one problem interleaved (rep 1 of every solver, then rep 2, ...), so that a
# load change on a shared machine hits every solver alike
# ---------------------------------------------------------------------------------------
def measure(cases, reps, warmup=True):
    """Rows: median wall and median CPU of ``reps`` interleaved solves per case, and the
    median of the per-rep ratios to the first case (``pair_wall``, ``pair_cpu``: each rep
    times every case back to back, so a load change on a shared machine hits them alike;
    the order is reversed every other rep, so no case always runs first)."""
    if warmup:
        for case in cases:
            case["solve"]()
    runs = {id(c): [] for c in cases}
    for rep in range(reps):
        for case in (cases if rep % 2 == 0 else cases[::-1]):
            t, c = time.perf_counter(), time.process_time()
            extra = case["solve"]()
            runs[id(case)].append((time.perf_counter() - t, time.process_time() - c, extra))
    ref = runs[id(cases[0])]
    rows = []
    for case in cases:
        rs = runs[id(case)]
        k = sorted(range(reps), key=lambda i: rs[i][0])[reps // 2]
        cpu = float(np.median([r[1] for r in rs]))
        pair_wall = float(np.median([r[0] / q[0] for r, q in zip(rs, ref, strict=True)]))
        pair_cpu = float(np.median([r[1] / q[1] for r, q in zip(rs, ref, strict=True)]))
        rows.append(dict(solver=case["solver"], setup=case["setup"], wall=rs[k][0], cpu=cpu,
                         pair_wall=pair_wall, pair_cpu=pair_cpu, **rs[k][2]))
    return rows


def close_all(cases):
    for case in cases:
        case.get("close", lambda: None)()


def run_ours(p, lbfgs=False, backend="cyipopt", libipopt=None, label=None):
    label = label or ("ours-lbfgs" if lbfgs else "ours")
    tag = f"{label}-{p['name']}-{p['size']}".replace("@", "_")
    path, opts = options_for(tag)
    if lbfgs:  # capped: L-BFGS can need thousands of iterations here
        opts.update(hessian_approximation="limited-memory", max_wall_time=LBFGS_WALL_CAP)
    bounds = None if p["lb"] is None else so.Bounds(p["lb"], p["ub"])
    sparseopt_adapters.clear_cache()  # setup paid by every row, not served by the cache
    t = time.perf_counter()
    prob = ipopt.Problem(p["f"], p["x0"], bounds=bounds, options=opts,
                         constraints=so.NonlinearConstraint(p["c"], p["cl"], p["cu"]),
                         backend=backend, libipopt=libipopt)
    setup = time.perf_counter() - t

    def solve():
        _, info = prob.solve()
        return dict(status=info["status"], obj=info["obj_val"], iters=prob.nlp.iteration,
                    callbacks=prob.nlp.timing()["callbacks_s"], ipopt=ipopt_timing(path))

    def detail():  # one more solve, untimed, logging MUMPS' factor size
        dpath, dopts = options_for(tag, detail=True)
        for k in ("output_file", "file_print_level"):
            prob.add_option(k, dopts[k])
        try:
            prob.solve()
        finally:
            for k in ("output_file", "file_print_level"):
                prob.add_option(k, opts[k])
        return mumps_facts(dpath)

    return dict(solver=label, setup=setup, solve=solve, close=prob.close, detail=detail,
                options=dict(ipopt.DEFAULT_OPTIONS, **opts))


def run_casadi(p):
    import casadi as ca

    tag = f"casadi-{p['name']}-{p['size']}"
    path, topts = options_for(tag)
    ipopt_opts = dict(topts, print_level=0, sb="yes")
    opts = {f"ipopt.{k}": v for k, v in ipopt_opts.items()}
    opts["print_time"] = False
    t = time.perf_counter()
    nlp = p["casadi"]()
    S = ca.nlpsol("S", "ipopt", nlp, opts)
    setup = time.perf_counter() - t
    kw = dict(x0=p["x0"], lbg=p["cl"], ubg=p["cu"])
    if p["lb"] is not None:
        kw.update(lbx=p["lb"], ubx=p["ub"])

    def solve():
        r = S(**kw)
        st = S.stats()
        return dict(status=st["return_status"], obj=float(r["f"]), iters=st["iter_count"],
                    callbacks=np.nan, ipopt=ipopt_timing(path))

    def detail():  # an untimed solve of the same nlpsol options but the log level
        dpath, dopts = options_for(tag, detail=True)
        d = {f"ipopt.{k}": v for k, v in dict(dopts, print_level=0, sb="yes").items()}
        ca.nlpsol("D", "ipopt", nlp, dict(d, print_time=False))(**kw)
        return mumps_facts(dpath)

    return dict(solver="casadi", setup=setup, solve=solve, detail=detail, options=ipopt_opts)


def run_dense(p):
    from cyipopt import minimize_ipopt

    tag = f"dense-{p['name']}-{p['size']}"
    path, topts = timing_options(tag)
    f, c = p["f"], p["c"]
    fun = jax.jit(f)
    jac = jax.jit(jax.grad(f))
    hess = jax.jit(jax.hessian(f))
    cfun = jax.jit(c)
    cjac = jax.jit(jax.jacfwd(c))
    chess = jax.jit(lambda x, v: jax.hessian(lambda z: jnp.dot(v, c(z)))(x))
    x0 = p["x0"]
    t = time.perf_counter()
    m = int(np.asarray(cfun(x0)).size)
    for g, a in ((fun, (x0,)), (jac, (x0,)), (hess, (x0,)), (cfun, (x0,)), (cjac, (x0,)),
                 (chess, (x0, np.ones(m)))):
        jax.block_until_ready(g(*a))
    setup = time.perf_counter() - t
    np_ = lambda g: (lambda *a: np.asarray(g(*a)))  # noqa: E731
    cons = {"type": "eq" if p["cl"] == p["cu"] else "ineq", "fun": np_(cfun), "jac": np_(cjac),
            "hess": np_(chess)}
    bounds = None if p["lb"] is None else list(zip(p["lb"], p["ub"], strict=True))
    opts = dict(COMMON, **topts, print_level=0, sb="yes")

    def solve():
        res = minimize_ipopt(lambda x: float(fun(x)), x0, jac=np_(jac), hess=np_(hess),
                             constraints=[cons], bounds=bounds, options=dict(opts))
        return dict(status=res.status, obj=res.fun, iters=res.nit, callbacks=np.nan,
                    ipopt=ipopt_timing(path))

    return dict(solver="dense-jax", setup=setup, solve=solve)


def casadi_libipopt():
    """casadi's bundled libipopt (IPOPT 3.14.19, MUMPS 5.8.2 + METIS), for backend='libipopt'."""
    from sparseopt_adapters.ipopt import _libraries

    for source, path in _libraries.candidates():
        if source == "casadi":
            return path
    raise SystemExit("casadi's libipopt not found: pip install casadi (the bench extra)")


# ---------------------------------------------------------------------------------------
# --glue: where the time of one IPOPT callback goes (backend='libipopt')
# ---------------------------------------------------------------------------------------
def _median_us(fn, reps):
    ts = []
    for k in range(reps):
        t = time.perf_counter()
        fn(k)
        ts.append(time.perf_counter() - t)
    return 1e6 * float(np.median(ts))


def glue(p, reps=200):
    """Replay IPOPT's callback sequence of one iteration (f, c at a new point, then ∇f, J
    and the Hessian at it) through the C callbacks of a libipopt-backend Problem, and split
    its cost: the jitted calls (dispatch + run + wait), the memcpy into IPOPT's buffers,
    ctypes' C -> Python round trip, and our Python glue (the rest: the x-cache check, the
    x copy, bookkeeping, views). Returns one row per callback kind, per evaluation."""
    import ctypes

    from sparseopt_adapters.ipopt import _capi

    bounds = None if p["lb"] is None else so.Bounds(p["lb"], p["ub"])
    prob = ipopt.Problem(p["f"], p["x0"], bounds=bounds, options=dict(COMMON),
                         constraints=so.NonlinearConstraint(p["c"], p["cl"], p["cu"]),
                         backend="libipopt", libipopt=casadi_libipopt())
    nlp, b, s = prob.nlp, prob._capi, prob.nlp.setup
    n, m, nj, nh = nlp.n, nlp.m, b.nnz_jac, b.nnz_hess
    f_cb, g_cb, grad_cb, jac_cb, h_cb = b._callbacks[:5]
    x0 = np.array(p["x0"], dtype=np.float64)
    x = np.array(x0)  # IPOPT's full-space x: one buffer, rewritten in place
    obj, gbuf, grad = ctypes.c_double(), np.zeros(m), np.zeros(n)
    jv, hv, lam = np.zeros(nj), np.zeros(nh), np.full(m, 0.1)
    px, pg, pgrad, pj, ph, pl = (a.ctypes.data for a in (x, gbuf, grad, jv, hv, lam))
    po = ctypes.addressof(obj)
    calls = {
        "f (new x)": lambda: f_cb(n, px, True, po, None),
        "c": lambda: g_cb(n, px, False, m, pg, None),
        "grad f": lambda: grad_cb(n, px, False, pgrad, None),
        "J": lambda: jac_cb(n, px, False, m, nj, None, None, pj, None),
        "H": lambda: h_cb(n, px, False, 1.0, m, pl, True, nh, None, None, ph, None),
    }

    def per_call(reps_):  # a new point (a miss at f), then the four calls at it
        out = {name: [] for name in calls}
        for k in range(reps_):
            x[:] = x0
            x[0] += 1e-9 * (k + 1)
            for name, fn in calls.items():
                t = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t)
        return {k: 1e6 * float(np.median(v)) for k, v in out.items()}

    prob.solve()  # warm
    nlp.reset()
    per_call(3)
    real = per_call(reps)
    # the jitted calls alone (dispatch + run + wait), on the same arguments
    dyn, xb = nlp.dyn, _host_aligned(x0)
    lam_s = np.float64(1.0)
    exe = {"fc": _median_us(lambda k: np.asarray(s._fc(xb, dyn)), reps),
           "gj": _median_us(lambda k: np.asarray(s._gj(xb, dyn, s.jac_index)), reps),
           "h": _median_us(lambda k: np.asarray(s._h(xb, lam_s, lam, dyn, s.hess_index)),
                           reps)}
    # the same callbacks with the executables stubbed by their precomputed outputs
    outs = {"fc": s._fc(xb, dyn), "gj": s._gj(xb, dyn, s.jac_index),
            "h": s._h(xb, lam_s, lam, dyn, s.hess_index)}
    saved = nlp._fc.fn, nlp._gj.fn, nlp._h
    nlp._fc.fn, nlp._gj.fn = (lambda z: outs["fc"]), (lambda z: outs["gj"])
    nlp._h = lambda z, sg, lm: outs["h"]
    try:
        nlp.reset()
        stub = per_call(reps)
    finally:
        nlp._fc.fn, nlp._gj.fn, nlp._h = saved
    # memcpy into IPOPT's buffers (the one copy per value array) and ctypes' round trip
    src = {k: np.asarray(v) for k, v in outs.items()}
    copy = {"f (new x)": 0.0,
            "c": _median_us(lambda k: gbuf.__setitem__(Ellipsis, src["fc"][1:1 + m]), reps),
            "grad f": _median_us(lambda k: grad.__setitem__(Ellipsis, src["gj"][:n]), reps),
            "J": _median_us(lambda k: jv.__setitem__(Ellipsis, src["gj"][n:n + nj]), reps),
            "H": _median_us(lambda k: hv.__setitem__(Ellipsis, src["h"][:nh]), reps)}
    noop = {"f (new x)": _capi.EVAL_F(lambda *a: True), "c": _capi.EVAL_G(lambda *a: True),
            "grad f": _capi.EVAL_GRAD_F(lambda *a: True),
            "J": _capi.EVAL_JAC_G(lambda *a: True), "H": _capi.EVAL_H(lambda *a: True)}
    trip = {"f (new x)": _median_us(lambda k: noop["f (new x)"](n, px, True, po, None), reps),
            "c": _median_us(lambda k: noop["c"](n, px, False, m, pg, None), reps),
            "grad f": _median_us(lambda k: noop["grad f"](n, px, False, pgrad, None), reps),
            "J": _median_us(lambda k: noop["J"](n, px, False, m, nj, None, None, pj, None),
                            reps),
            "H": _median_us(lambda k: noop["H"](n, px, False, 1.0, m, pl, True, nh, None,
                                                None, ph, None), reps)}
    prob.close()
    rows = []
    for name in calls:
        g = stub[name] - copy[name] - trip[name]
        rows.append(dict(callback=name, real=real[name], exe=(
            exe["fc"] if name == "f (new x)" else exe["gj"] if name == "grad f" else
            exe["h"] if name == "H" else 0.0), copy=copy[name], trip=trip[name], glue=g))
    return rows


def _host_aligned(x):
    from sparseopt_adapters._host import aligned_empty

    buf = aligned_empty(x.size)
    buf[:] = x
    return buf


def run_glue(problems, reps):
    print(f"# --glue: one IPOPT iteration's callbacks replayed {reps} times through the C "
          "callbacks (backend='libipopt', casadi's libipopt); µs per call (median)")
    print(f"{'problem':<13} {'size':<8} {'callback':<10} {'total':>8} {'jitted':>8} "
          f"{'memcpy':>7} {'ctypes':>7} {'glue':>7}")
    json_rows = []
    for p in problems:
        rows = glue(p, reps)
        for r in rows:
            print(f"{p['name']:<13} {p['size']:<8} {r['callback']:<10} {r['real']:>8.1f} "
                  f"{r['exe']:>8.1f} {r['copy']:>7.1f} {r['trip']:>7.1f} {r['glue']:>7.1f}")
            json_rows.append((p["name"], p["size"], r["callback"], "ours (no peer)", r["real"],
                              r["exe"], r["copy"], r["trip"], r["glue"]))
        per_eval = sum(r["glue"] for r in rows) / 3
        print(f"{p['name']:<13} {p['size']:<8} {'glue / evaluation (3 per iteration)':<44} "
              f"{per_eval:>7.1f}")
    print("# jitted: the compiled call alone (C++ dispatch, run, wait), measured apart; "
          "memcpy: the value array into IPOPT's buffer; ctypes: C -> Python round trip of a "
          "no-op callback; glue = (callback with the executable stubbed) - memcpy - ctypes.")
    return table("IPOPT callback cost split (µs per call, backend='libipopt')",
                 ("problem", "size", "callback", "peer", "total [µs]", "jitted [µs]",
                  "memcpy [µs]", "ctypes [µs]", "glue [µs]"), json_rows)


# ---------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------
HEADER = (f"{'problem':<13} {'size':<8} {'solver':<14} {'iters':>5} {'status':>6} "
          f"{'setup s':>8} {'wall s':>8} {'cpu s':>8} {'×cas wall':>9} {'×cas cpu':>8} "
          f"{'f-eval cpu':>10} {'ipopt cpu':>9} {'cb share':>8} {'our cb':>8}")
DETAIL_HEADER = (f"{'problem':<13} {'size':<8} {'solver':<14} "
                 + " ".join(f"{label:>11}" for label in DETAIL.values())
                 + f" {'sys':>6} {'MUMPS factor':>13} {'order':>5}")
_STATUS = {"Solve_Succeeded": 0, "Solved_To_Acceptable_Level": 1}


def fmt_row(p, r, ref):
    fe, ov = r["ipopt"]["functions"], r["ipopt"]["overall"]
    status = _STATUS.get(r["status"], r["status"])
    cb = r["callbacks"]
    return (f"{p['name']:<13} {p['size']:<8} {r['solver']:<14} {r['iters']:>5} {status!s:>6} "
            f"{r['setup']:>8.2f} {r['wall']:>8.3f} {r['cpu']:>8.3f} "
            f"{r['pair_wall']:>9.2f} {r['pair_cpu']:>8.2f} {fe:>10.3f} "
            f"{ov - fe:>9.3f} {100 * cb_share(r):>7.1f}% "
            f"{('' if np.isnan(cb) else f'{cb:8.3f}'):>8}")


def fmt_detail(p, r, facts):
    t = r["ipopt"]["timers"]
    cells = " ".join(f"{t.get(n, (np.nan,))[0]:>11.3f}" for n in DETAIL)
    sys_s = t.get("OverallAlgorithm", (np.nan, np.nan))[1]
    fd, order = facts.get("factor_doubles"), facts.get("pivot_order")
    return (f"{p['name']:<13} {p['size']:<8} {r['solver']:<14} {cells} {sys_s:>6.3f} "
            f"{'' if fd is None else f'{fd:,}':>13} {'' if order is None else order:>5}")


def cb_share(r):
    """Share of IPOPT's solve spent in the NLP function evaluations (the callbacks).

    From IPOPT's CPU times: on a shared machine its wall times include waiting for a core.
    """
    t = r["ipopt"]
    return t["functions"] / t["overall"] if t["overall"] > 0 else np.nan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (< 2 min)")
    ap.add_argument("--reps", type=int, default=5, help="timed solves per case (median)")
    ap.add_argument("--pair", action="store_true",
                    help="only casadi and ours-libipopt (the same IPOPT build), nothing else")
    ap.add_argument("--only", default=None,
                    help="comma-separated problem sizes to run, e.g. 'n=1e+04,50x100'")
    ap.add_argument("--no-lbfgs", action="store_true")
    ap.add_argument("--no-wheel-lib", action="store_true",
                    help="skip the ours-lib@wheel row (backend='libipopt' on cyipopt's IPOPT)")
    ap.add_argument("--sync-dispatch", action="store_true",
                    help="jax_cpu_enable_async_dispatch=False: JAX runs each executable on the "
                         "calling thread (no hand-off to a worker thread and back)")
    ap.add_argument("--glue", action="store_true",
                    help="only the per-callback cost split of backend='libipopt'")
    add_json_argument(ap)
    a = ap.parse_args(argv)
    if a.sync_dispatch:  # before JAX creates its CPU client (the first array below)
        jax.config.update("jax_cpu_enable_async_dispatch", False)

    if a.quick:
        problems = [luksan_vlcek(1000), luksan_vlcek(10_000), control(20, 20)]
    else:
        problems = [luksan_vlcek(10_000), luksan_vlcek(100_000), control(50, 100),
                    control(250, 200)]
    if a.only:
        problems = [p for p in problems if p["size"] in a.only.split(",")]
    if a.sync_dispatch:
        print("# jax_cpu_enable_async_dispatch=False")
    if a.glue:
        t = run_glue(problems, 200 if a.quick else 100)
        write_json(a.json, "ipopt", [t], versions={"jax": jax.__version__})
        return
    import casadi
    import cyipopt

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; jax {jax.__version__}, "
          f"cyipopt {cyipopt.__version__} (IPOPT 3.14.11, MUMPS 5.5.1), casadi "
          f"{casadi.__version__} (its own IPOPT 3.14.19, MUMPS 5.8.2)")
    print(f"# solve = median of {a.reps} after a warm-up; the solvers of a problem take turns "
          "rep by rep (order reversed every other rep); ×cas = median of the per-rep ratios")
    print(f"# load average at start: {os.getloadavg()[0]:.1f} (a shared machine: see cpu s)")
    skipped = []
    from sparseopt_adapters.ipopt import _capi

    caslib, wheellib = casadi_libipopt(), _capi.cyipopt_library_path()
    peers = {"casadi": f"casadi {casadi.__version__} (IPOPT 3.14.19)",
             "ours": f"cyipopt {cyipopt.__version__} (IPOPT 3.14.11)",
             "ours-libipopt": f"casadi {casadi.__version__}'s libipopt (IPOPT 3.14.19)",
             "ours-lib@wheel": "cyipopt-wheels' libipopt (IPOPT 3.14.11)",
             "dense-jax": f"jax {jax.__version__}, cyipopt {cyipopt.__version__}",
             "ours-lbfgs": f"cyipopt {cyipopt.__version__} (IPOPT 3.14.11)"}
    json_rows, detail_rows, details = [], [], []
    printed_options = False
    for p in problems:
        main = [run_casadi(p)]
        if not a.pair:
            main.append(run_ours(p))
        main.append(run_ours(p, backend="libipopt", libipopt=caslib, label="ours-libipopt"))
        if not a.no_wheel_lib and not a.pair:
            main.append(run_ours(p, backend="libipopt", libipopt=wheellib,
                                 label="ours-lib@wheel"))
        if not printed_options:  # the same IPOPT options on both sides, as each one sets them
            for case in main:
                if case["solver"] in ("casadi", "ours-libipopt"):
                    print(f"# IPOPT options, {case['solver']}: {case['options']}")
            print(HEADER)
            printed_options = True
        slow = []  # long-running baselines
        if a.pair:
            pass
        elif p["n"] <= DENSE_LIMIT:
            slow.append(run_dense(p))
        else:
            skipped.append(f"dense-jax skipped for {p['name']} {p['size']}: the dense Hessian "
                           f"alone has {p['n'] * (p['n'] + 1) // 2:.2e} lower entries")
        if not a.no_lbfgs and not a.pair and p["n"] <= LBFGS_LIMIT:
            slow.append(run_ours(p, lbfgs=True))
        elif not a.no_lbfgs and not a.pair:
            skipped.append(f"ours-lbfgs skipped for {p['name']} {p['size']} (n > {LBFGS_LIMIT})")
        rows = measure(main, a.reps)
        # IPOPT's own split and MUMPS' factor size, casadi vs ours on the same library
        pair = [(c, r) for c, r in zip(main, rows, strict=True)
                if c["solver"] in ("casadi", "ours-libipopt")]
        facts = [c["detail"]() for c, _ in pair]
        close_all(main)
        if slow:
            rows += measure(slow, 1, warmup=False) if a.quick else measure(slow, a.reps)
            close_all(slow)
        ref = rows[0]
        for r in rows:
            print(fmt_row(p, r, ref), flush=True)
            fe, ov = r["ipopt"]["functions"], r["ipopt"]["overall"]
            json_rows.append((p["name"], p["size"], r["solver"], peers[r["solver"]],
                              int(r["iters"]), str(_STATUS.get(r["status"], r["status"])),
                              r["setup"], r["wall"], r["cpu"], r["pair_wall"],
                              r["pair_cpu"], fe, ov - fe, cb_share(r),
                              r["callbacks"]))
        for (_, r), f in zip(pair, facts, strict=True):
            details.append(fmt_detail(p, r, f))
            t = r["ipopt"]["timers"]
            detail_rows.append((p["name"], p["size"], r["solver"], peers[r["solver"]],
                                *(t.get(n, (np.nan,))[0] for n in DETAIL),
                                f.get("factor_doubles"), f.get("pivot_order")))
    for s in skipped:
        print("# " + s)
    print("# status: IPOPT's return status (0 = solved). wall s / cpu s: one solve (process CPU "
          "time counts every thread; on a shared machine it is the steadier number).")
    print("# f-eval cpu / ipopt cpu: IPOPT's print_timing_statistics split of the solve's CPU "
          "time: NLP function evaluations (incl. cyipopt's copies) / everything else (MUMPS, "
          "line search, ...). cb share: function evaluations / IPOPT's CPU time. our cb: wall "
          "seconds inside our Python callbacks.")
    if a.quick:
        print("# --quick: dense-jax and ours-lbfgs are single runs without warm-up.")
    print("\n# IPOPT's own timers (CPU s, the median solve above), the same library for both; "
          "MUMPS factor: doubles held by the last factorization (INFO(9)), order: MUMPS' "
          "pivot order (2 = AMF, 5 = METIS), from one more untimed solve at file_print_level 6")
    print(DETAIL_HEADER)
    for line in details:
        print(line)
    write_json(a.json, "ipopt", [
        table(f"IPOPT end to end (options {COMMON}; solve = median of {a.reps} after a warm-up)",
              ("problem", "size", "solver", "peer", "iters", "status", "setup [s]", "wall [s]",
               "cpu [s]", "wall / casadi", "cpu / casadi", "f-eval cpu [s]", "ipopt cpu [s]",
               "callback share", "our callbacks [s]"), json_rows,
              notes=skipped + (["--quick: dense-jax and ours-lbfgs are single runs without "
                                "warm-up"] if a.quick else [])),
        table("IPOPT's own timers, casadi vs ours on casadi's libipopt (CPU s)",
              ("problem", "size", "solver", "peer", *(f"{n} [s]" for n in DETAIL),
               "MUMPS factor doubles", "MUMPS pivot order"), detail_rows)],
        versions={"jax": jax.__version__, "casadi": casadi.__version__,
                  "cyipopt": cyipopt.__version__})


if __name__ == "__main__":
    main()
