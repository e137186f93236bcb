"""Setup cost end to end: ``ipopt.minimize`` 1st and 2nd call vs CasADi build + solve.

The issue-14 table, regenerated in one run. Problems (COPS 3.0, Dolan–Moré–Munson 2004, and
CUTEst's BRYBND), each written once in JAX and once in CasADi MX symbols:

    brybnd     Broyden banded least squares, min Σ rᵢ(x)², n = 1e4 (unconstrained)
    steering   COPS particle steering: min t_f, trapezoidal dynamics, nh = 1000 intervals
               (5006 variables, 4007 equality constraints, bounds on u and t_f)
    torsion    COPS elastic-plastic torsion, 100×100 grid (1e4 variables, bounds only)
    camshape   COPS cam shape, n = 5000 radii (10 001 inequality constraints, bounds)

Columns: ``ipopt.minimize`` first call (detection + colouring + compilation + solve, in a
process where JAX and IPOPT are already initialised by a tiny warm-up problem); the second
call with the same function objects (the setup cache: no detection, colouring or
compilation) on cyipopt and on ``backend='libipopt'`` (IPOPT's C interface with CasADi's
libipopt: the same IPOPT/MUMPS build as CasADi); the first call's ``Problem.setup_time``
split and XLA compilation count. CasADi: model (symbolic expressions) + build (``nlpsol``)
+ first solve, and a repeated solve (median of ``--reps``). Both use the same IPOPT options
(tol 1e-8, mu_strategy monotone, MUMPS). Goals (issue 14): first call <= CasADi total,
repeat <= 1.5x CasADi's repeated solve.

The JAX floor: what any JAX program solving the problem pays before its first evaluation,
measured in the same process on fresh function objects: ``jax.jit(f).lower(x).compile()``
plus ``jax.jit(jax.grad(f))`` (plus ``jax.jit(c)`` for each constraint function), printed
next to our setup (detection + colouring + compilation) as ``setup / floor``.

``--profile``: where the first call's time goes, per problem: detection, colouring, tracing,
lowering, each XLA compilation (the executables by name, eager one-off ops summed), IPOPT up
to its first iteration, and the rest of the solve. ``--rerun-with-cache``: the first call in
two fresh processes sharing a new JAX persistent compilation cache (the second finds the
executables on disk), as docs/adapters/ipopt.md recommends for reruns of a script.

Run:  python benchmarks/bench_setup.py [--quick] [--reps R] [--only NAME ...] [--profile]
          [--rerun-with-cache]
(``--quick``: the same problems at ~1/10 of the size.)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize as so  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402
from sparseopt_adapters import ipopt  # noqa: E402

from _report import add_json_argument, table, version, write_json  # noqa: E402  isort: skip

OPTIONS = {"tol": 1e-8, "mu_strategy": "monotone", "linear_solver": "mumps", "max_iter": 3000}


# ---------------------------------------------------------------------------------------
# problems (JAX, then CasADi)
# ---------------------------------------------------------------------------------------
def brybnd(n):
    """CUTEst BRYBND: rᵢ = xᵢ(2 + 5xᵢ²) + 1 − Σ_{j ∈ Jᵢ} xⱼ(1 + xⱼ), Jᵢ = {i−5..i+1} \\ {i}."""
    lo, up = 5, 1

    def residual(x):
        q = x * (1.0 + x)
        qp = jnp.pad(q, (lo, up))  # q(0) = 0: out-of-range neighbours contribute nothing
        s = sum(qp[lo + k: lo + k + n] for k in range(-lo, up + 1) if k != 0)
        return x * (2.0 + 5.0 * x**2) + 1.0 - s

    def f(x):
        return jnp.sum(residual(x) ** 2)

    def casadi():
        import casadi as ca

        x = ca.MX.sym("x", n)
        q = x * (1 + x)
        qp = ca.vertcat(ca.MX.zeros(lo), q, ca.MX.zeros(up))
        s = 0
        for k in range(-lo, up + 1):
            if k != 0:
                s = s + qp[lo + k: lo + k + n]
        r = x * (2 + 5 * x**2) + 1 - s
        return {"x": x, "f": ca.sumsqr(r)}, {"x0": -np.ones(n)}

    return dict(name="brybnd", n=n, fun=f, x0=-np.ones(n), kw={}, casadi=casadi)


def steering(nh):
    """COPS particle steering: y'' = a (cos u, sin u), min t_f, y(0) = 0, y₂,₃,₄(t_f) fixed."""
    a = 100.0
    yf = np.array([5.0, 45.0, 0.0])  # final y2, y3 (= y1'), y4 (= y2'); y1(t_f) free
    n = (nh + 1) * 5 + 1

    def split(z):
        u = z[: nh + 1]
        y = z[nh + 1: 5 * (nh + 1)].reshape(4, nh + 1)
        return u, y, z[-1]

    def objective(z):
        return z[-1]

    def rhs(y, u):  # (not jnp.stack: its transpose, 'unstack', has no detection rule yet)
        return jnp.concatenate([y[2:4], (a * jnp.cos(u))[None], (a * jnp.sin(u))[None]])

    def constraints(z):
        u, y, tf = split(z)
        h = tf / nh
        F = rhs(y, u)
        dyn = y[:, 1:] - y[:, :-1] - 0.5 * h * (F[:, 1:] + F[:, :-1])
        return jnp.concatenate([dyn.reshape(-1), y[:, 0], y[1:, -1] - jnp.asarray(yf)])

    t = np.linspace(0.0, 1.0, nh + 1)
    x0 = np.concatenate([np.zeros(nh + 1), np.zeros(nh + 1), 5 * t, 45 * t, np.zeros(nh + 1),
                         [1.0]])
    lb = np.full(n, -np.inf)
    ub = np.full(n, np.inf)
    lb[: nh + 1], ub[: nh + 1] = -np.pi / 2, np.pi / 2
    lb[-1] = 0.0
    con = so.NonlinearConstraint(constraints, 0.0, 0.0)

    def casadi():
        import casadi as ca

        z = ca.MX.sym("z", n)
        u = z[: nh + 1]
        Y = ca.reshape(z[nh + 1: 5 * (nh + 1)], nh + 1, 4)  # column-major: column k = y_k
        tf = z[n - 1]
        h = tf / nh
        F = ca.horzcat(Y[:, 2], Y[:, 3], a * ca.cos(u), a * ca.sin(u))
        dyn = Y[1:, :] - Y[:-1, :] - 0.5 * h * (F[1:, :] + F[:-1, :])
        g = ca.vertcat(ca.vec(dyn), Y[0, :].T, Y[nh, 1:].T - ca.DM(yf))
        return ({"x": z, "f": tf, "g": g},
                {"x0": x0, "lbx": lb, "ubx": ub, "lbg": 0.0, "ubg": 0.0})

    return dict(name="steering", n=n, fun=objective, x0=x0,
                kw=dict(bounds=so.Bounds(lb, ub), constraints=con), casadi=casadi)


def torsion(nx):
    """COPS elastic-plastic torsion on the unit square, |v| ≤ dist(x, ∂D), c = 5."""
    ny, c = nx, 5.0
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    ii, jj = np.meshgrid(np.arange(1, nx + 1), np.arange(1, ny + 1), indexing="ij")
    d = np.minimum(np.minimum(ii, nx + 1 - ii) * hx, np.minimum(jj, ny + 1 - jj) * hy).ravel()
    area = 0.5 * hx * hy

    def energy(V, pad, total):
        P = pad(V)
        dxf = (P[1:, 1:-1] - P[:-1, 1:-1]) / hx  # (nx+1, ny) forward differences
        dyf = (P[1:-1, 1:] - P[1:-1, :-1]) / hy
        lower = sq(dxf[1:, :]) + sq(dyf[:, 1:])  # the two triangle families (COPS)
        upper = sq(dxf[:-1, :]) + sq(dyf[:, :-1])
        return 0.25 * area * (total(lower) + total(upper)) - c * hx * hy * total(V)

    def sq(a):
        return a * a

    def f(v):
        return energy(v.reshape(nx, ny), lambda V: jnp.pad(V, 1), jnp.sum)

    def casadi():
        import casadi as ca

        v = ca.MX.sym("v", nx * ny)
        V = ca.reshape(v, ny, nx).T  # row-major, as in JAX

        def pad(M):
            zc = ca.MX.zeros(nx, 1)
            M = ca.horzcat(zc, M, zc)
            zr = ca.MX.zeros(1, ny + 2)
            return ca.vertcat(zr, M, zr)

        def total(M):
            return ca.sum1(ca.sum2(M))

        return ({"x": v, "f": energy(V, pad, total)},
                {"x0": np.zeros(nx * ny), "lbx": -d, "ubx": d})

    return dict(name="torsion", n=nx * ny, fun=f, x0=np.zeros(nx * ny),
                kw=dict(bounds=so.Bounds(-d, d)), casadi=casadi)


def camshape(n):
    """COPS cam shape: max area π R_v/n Σ rᵢ, convexity and curvature limits, R_min ≤ r ≤ R_max."""
    r_v, r_max, r_min, alpha = 1.0, 2.0, 1.0, 1.5
    dth = 2 * np.pi / (5 * (n + 1))
    cth = np.cos(dth)

    def objective(r):
        return -(np.pi * r_v / n) * jnp.sum(r)

    def convexity(r):  # <= 0, one per radius (neighbours R_min / R_max at the ends)
        rp = jnp.concatenate([jnp.array([r_min]), r, jnp.array([r_max])])
        return -rp[:-2] * rp[1:-1] - rp[1:-1] * rp[2:] + 2 * rp[:-2] * rp[2:] * cth

    def curvature(r):  # in [-α dθ, α dθ], n + 1 differences
        rp = jnp.concatenate([jnp.array([r_min]), r, jnp.array([r_max])])
        return rp[1:] - rp[:-1]

    x0 = np.full(n, 0.5 * (r_min + r_max))
    cons = [so.NonlinearConstraint(convexity, -np.inf, 0.0),
            so.NonlinearConstraint(curvature, -alpha * dth, alpha * dth)]

    def casadi():
        import casadi as ca

        r = ca.MX.sym("r", n)
        rp = ca.vertcat(ca.DM([r_min]), r, ca.DM([r_max]))
        conv = -rp[:-2] * rp[1:-1] - rp[1:-1] * rp[2:] + 2 * rp[:-2] * rp[2:] * cth
        curv = rp[1:] - rp[:-1]
        lbg = np.concatenate([np.full(n, -np.inf), np.full(n + 1, -alpha * dth)])
        ubg = np.concatenate([np.zeros(n), np.full(n + 1, alpha * dth)])
        return ({"x": r, "f": -(np.pi * r_v / n) * ca.sum1(r), "g": ca.vertcat(conv, curv)},
                {"x0": x0, "lbx": r_min, "ubx": r_max, "lbg": lbg, "ubg": ubg})

    return dict(name="camshape", n=n, fun=objective, x0=x0,
                kw=dict(bounds=[(r_min, r_max)] * n, constraints=cons), casadi=casadi)


PROBLEMS = {"brybnd": (brybnd, 10_000, 1_000), "steering": (steering, 1000, 100),
            "torsion": (torsion, 100, 32), "camshape": (camshape, 5000, 500)}


# ---------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------
def run_ours(p, reps):
    t = time.perf_counter()
    first = ipopt.minimize(p["fun"], p["x0"], options=OPTIONS, **p["kw"])
    t_first = time.perf_counter() - t
    again = []
    for _ in range(reps):
        t = time.perf_counter()
        res = ipopt.minimize(p["fun"], p["x0"], options=OPTIONS, **p["kw"])
        again.append(time.perf_counter() - t)
    assert res.compilations["count"] == 0, "the second call compiled again"
    lib = []
    try:  # the same cached setup on IPOPT's C interface (issue 16), CasADi's libipopt
        for _ in range(reps):
            t = time.perf_counter()
            ipopt.minimize(p["fun"], p["x0"], options=OPTIONS, backend="libipopt", **p["kw"])
            lib.append(time.perf_counter() - t)
    except (TypeError, ImportError, OSError, RuntimeError) as e:
        print(f"  backend='libipopt' unavailable: {e}")
    return dict(first=t_first, again=statistics.median(again), nit=first.nit,
                fun=first.fun, ok=first.success, setup=first.setup_time,
                compiles=first.compilations, solve=res.timing["solve_s"],
                again_lib=statistics.median(lib) if lib else None)


def run_casadi(p, reps):
    import casadi as ca

    t0 = time.perf_counter()
    nlp, call = p["casadi"]()
    t1 = time.perf_counter()
    opts = {"ipopt." + k: v for k, v in OPTIONS.items()}
    opts.update({"ipopt.print_level": 0, "ipopt.sb": "yes", "print_time": 0})
    solver = ca.nlpsol("s", "ipopt", nlp, opts)
    t2 = time.perf_counter()
    sol = solver(**call)
    t3 = time.perf_counter()
    again = []
    for _ in range(reps):
        t = time.perf_counter()
        solver(**call)
        again.append(time.perf_counter() - t)
    st = solver.stats()
    return dict(model=t1 - t0, build=t2 - t1, solve1=t3 - t2, total=t3 - t0,
                again=statistics.median(again), nit=st.get("iter_count"),
                fun=float(sol["f"]), ok=bool(st.get("success")))


def constraint_functions(p):
    cons = p["kw"].get("constraints", ())
    cons = cons if isinstance(cons, list | tuple) else [cons]
    return [c["fun"] if isinstance(c, dict) else c.fun for c in cons]


def jax_floor(p):
    """Seconds any JAX program pays before evaluating: ``jax.jit(f)``, ``jax.jit(jax.grad(f))``
    and ``jax.jit(c)`` for each constraint function, lowered and compiled (fresh function
    objects, so no trace or executable is reused from our run)."""
    import jax

    x = jax.ShapeDtypeStruct(np.shape(p["x0"]), jnp.float64)

    def fresh(g):
        return lambda z: g(z)

    t = time.perf_counter()
    jax.jit(fresh(p["fun"])).lower(x).compile()
    jax.jit(jax.grad(fresh(p["fun"]))).lower(x).compile()
    for c in constraint_functions(p):
        jax.jit(fresh(c)).lower(x).compile()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------
# --profile: where the first call's time goes
# ---------------------------------------------------------------------------------------
class _Timed:
    """Seconds spent in the wrapped functions (outermost calls only)."""

    def __init__(self):
        self.seconds = {}
        self._depth = 0
        self._saved = []

    def restore(self):
        for module, name, fn in reversed(self._saved):
            setattr(module, name, fn)
        self._saved.clear()

    def wrap(self, module, name, label):
        fn = getattr(module, name, None)
        if fn is None:
            return
        self._saved.append((module, name, fn))
        timed = self

        def wrapper(*a, **k):
            if timed._depth:
                return fn(*a, **k)
            timed._depth += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timed._depth -= 1
                timed.seconds[label] = timed.seconds.get(label, 0.0) + time.perf_counter() - t

        setattr(module, name, wrapper)


class _CompileLog(logging.Handler):
    """XLA compilations by executable name, from JAX's ``jax_log_compiles`` messages."""

    def __init__(self):
        super().__init__()
        self.items = []

    def emit(self, record):
        m = re.match(r"Finished XLA compilation of (\S+) in ([0-9.e-]+) sec", record.getMessage())
        if m:
            self.items.append((m.group(1), float(m.group(2))))


def profile_first_call(p):
    """The first ``ipopt.minimize`` call split into its phases (one dict)."""
    import jax
    from jax import monitoring

    import sparseopt_adapters._compressed as compressed
    import sparseopt_adapters._detection as detection
    from sparseopt_adapters.ipopt import _nlp

    timed = _Timed()
    for mod in (detection, _nlp):
        timed.wrap(mod, "hessian_sparsity", "detection")
        timed.wrap(mod, "jacobian_sparsity", "detection")
    for mod in (compressed, _nlp):
        timed.wrap(mod, "color_hessian", "colouring")
        timed.wrap(mod, "color_jacobian", "colouring")
    events = {}

    def on_event(event, duration, **kw):
        e = events.setdefault(event.rsplit("/", 1)[-1], [0, 0.0])
        e[0] += 1
        e[1] += duration

    monitoring.register_event_duration_secs_listener(on_event)
    log = _CompileLog()
    logger = logging.getLogger("jax")
    old = (logger.level, logger.propagate)
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    jax.config.update("jax_log_compiles", True)
    marks = {}

    def first_iteration(state):
        marks.setdefault("iter0", time.perf_counter())

    try:
        t0 = time.perf_counter()
        res = ipopt.minimize(p["fun"], p["x0"], options=OPTIONS, callback=first_iteration,
                             **p["kw"])
        total = time.perf_counter() - t0
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(log)
        logger.setLevel(old[0])
        logger.propagate = old[1]
        try:
            monitoring.unregister_event_duration_listener(on_event)
        except (AttributeError, AssertionError, ValueError):  # pragma: no cover - old JAX
            pass
        timed.restore()
    st = res.setup_time
    setup = st["total"]
    execs = {n[4:-1]: d for n, d in log.items if n in ("jit(fc)", "jit(gj)", "jit(h)")}
    eager = [(n, d) for n, d in log.items if n not in ("jit(fc)", "jit(gj)", "jit(h)")]
    to_iter0 = marks.get("iter0", t0 + total) - t0 - setup
    trace = events.get("jaxpr_trace_duration", [0, 0.0])
    return dict(
        total=total, setup=setup, detection=timed.seconds.get("detection", 0.0),
        colouring=timed.seconds.get("colouring", 0.0), compile_phase=st["compile"],
        lower=st.get("lower", 0.0), traces=trace[0], trace_s=trace[1],
        xla_fc=execs.get("fc"), xla_gj=execs.get("gj"), xla_h=execs.get("h"),
        eager=len(eager), eager_s=sum(d for _, d in eager),
        eager_names=", ".join(sorted({n for n, _ in eager})),
        ipopt_to_iter0=to_iter0, rest=total - setup - to_iter0, nit=res.nit)


def rerun_with_cache(name, quick):
    """First-call numbers of two fresh processes sharing a new persistent compilation cache."""
    out = []
    with tempfile.TemporaryDirectory(prefix="jax_cache_") as d:
        for _ in range(2):
            cmd = [sys.executable, __file__, "--child-first-call", name, "--cache-dir", d]
            if quick:
                cmd.append("--quick")
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode or not line:
                raise RuntimeError(f"child failed: {r.stderr[-2000:]}")
            out.append(json.loads(line[-1]))
    return out


def child_first_call(name, quick, cache_dir):
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    t = time.perf_counter()
    warm_up()
    t_warm = time.perf_counter() - t
    make, full, small = PROBLEMS[name]
    p = make(small if quick else full)
    t = time.perf_counter()
    res = ipopt.minimize(p["fun"], p["x0"], options=OPTIONS, **p["kw"])
    first = time.perf_counter() - t
    print(json.dumps(dict(warm_up=t_warm, first=first, setup=res.setup_time["total"],
                          compile=res.setup_time["compile"],
                          xla_s=res.compilations["seconds"], ok=bool(res.success))))


def warm_up():
    """Initialise JAX's CPU backend and IPOPT once, outside every timed call."""
    ipopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2), np.zeros(2), options=OPTIONS)
    sa.clear_cache()


def print_markdown(tab):
    print()
    print("| " + " | ".join(tab["columns"]) + " |")
    print("|" + "---|" * len(tab["columns"]))
    for r in tab["rows"]:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r)
              + " |")
    for n in tab["notes"]:
        print(f"- {n}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~1/10 sizes")
    ap.add_argument("--reps", type=int, default=3, help="repeated solves (median)")
    ap.add_argument("--only", nargs="*", choices=list(PROBLEMS), default=None)
    ap.add_argument("--no-casadi", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="also split each first call into its phases (own table)")
    ap.add_argument("--rerun-with-cache", action="store_true",
                    help="also time the first call in two fresh processes sharing a new JAX "
                         "persistent compilation cache")
    ap.add_argument("--child-first-call", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    add_json_argument(ap)
    args = ap.parse_args(argv)
    if args.child_first_call:
        child_first_call(args.child_first_call, args.quick, args.cache_dir)
        return
    try:
        import casadi  # noqa: F401
        have_casadi = not args.no_casadi
    except ImportError:
        have_casadi = False
    warm_up()
    rows, notes, prof_rows, cache_rows = [], [], [], []
    for name in args.only or PROBLEMS:
        make, full, quick = PROBLEMS[name]
        p = make(quick if args.quick else full)
        ours = run_ours(p, args.reps)
        floor = jax_floor(p)
        cas = run_casadi(p, args.reps) if have_casadi else None
        s, c = ours["setup"], ours["compiles"]
        row = [f"{name} (n={p['n']})", version("casadi") if cas else "-",
               ours["first"], ours["again"], ours["again_lib"], s["sparsity_and_coloring"],
               s["compile"], c["count"], c["evaluators"], ours["nit"], s["total"], floor,
               s["total"] / floor]
        if cas:
            best = min(ours["again"], ours["again_lib"] or np.inf)
            row += [cas["model"] + cas["build"], cas["total"], cas["again"], cas["nit"],
                    ours["first"] / cas["total"], ours["again"] / cas["again"],
                    best / cas["again"], (floor + ours["solve"]) / cas["total"]]
            if abs(cas["fun"] - ours["fun"]) > 1e-6 * max(1.0, abs(cas["fun"])):
                notes.append(f"{name}: objectives differ: ours {ours['fun']:.10g}, "
                             f"casadi {cas['fun']:.10g}")
        else:
            row += [None] * 8
        if not ours["ok"] or (cas and not cas["ok"]):
            notes.append(f"{name}: success ours={ours['ok']} casadi={cas and cas['ok']}")
        rows.append(row)
        print(f"{name}: first {ours['first']:.2f} s (setup {s['total']:.2f} s, JAX floor "
              f"{floor:.2f} s), again {ours['again']:.3f} s"
              + (f"; casadi total {cas['total']:.2f} s, again {cas['again']:.3f} s"
                 if cas else ""), flush=True)
        if args.profile:
            sa.clear_cache()
            q = profile_first_call(make(quick if args.quick else full))
            prof_rows.append([name, "-", q["total"], q["setup"], q["detection"], q["colouring"],
                              q["compile_phase"], q["lower"], q["xla_fc"], q["xla_gj"],
                              q["xla_h"], q["traces"], q["trace_s"], q["eager"], q["eager_s"],
                              q["eager_names"], q["ipopt_to_iter0"], q["rest"], q["nit"]])
        if args.rerun_with_cache:
            a, b = rerun_with_cache(name, args.quick)
            cache_rows.append([name, "-", a["first"], a["setup"], a["compile"], b["first"],
                               b["setup"], b["compile"], b["first"] / a["first"]])
    cols = ["problem", "peer", "1st call [s]", "2nd call [s]", "2nd, libipopt [s]",
            "detect+colour [s]", "compile [s]", "XLA compiles", "evaluators", "iters",
            "setup [s]", "JAX floor [s]", "setup / floor",
            "casadi model+build [s]", "casadi total 1st [s]", "casadi repeat [s]",
            "casadi iters", "1st / casadi", "2nd / casadi repeat",
            "best 2nd / casadi repeat", "(floor + our solve) / casadi"]
    notes += ["1st call in a process where JAX and IPOPT were initialised by a 2-variable "
              "warm-up solve; 2nd call: same function objects (setup cache hit), median of "
              f"{args.reps}.",
              "Goals: 1st / casadi <= 1 and 2nd / casadi repeat <= 1.5. '2nd, libipopt': the "
              "same cached setup driving CasADi's libipopt through IPOPT's C interface "
              "(backend='libipopt'), i.e. the same IPOPT/MUMPS build as CasADi.",
              "JAX floor: jit(f) + jit(grad f) + jit(c) per constraint, lowered and compiled "
              "on fresh function objects in this process: what any JAX program pays before "
              "its first evaluation. '(floor + our solve) / casadi' > 1 means no JAX program "
              "using this IPOPT can reach CasADi's first-call total.",
              "Single-threaded BLAS; numbers from a shared, loaded machine vary by ±30 %."]
    tab = table("ipopt.minimize setup paid once vs CasADi", cols, rows, notes)
    tables = [tab]
    print_markdown(tab)
    if prof_rows:
        pcols = ["problem", "peer", "1st call [s]", "setup [s]", "detection [s]",
                 "colouring [s]", "compile phase [s]", "trace+lower [s]", "XLA fc [s]",
                 "XLA gj [s]", "XLA h [s]", "traces (all)", "trace [s]", "eager compiles",
                 "eager [s]", "eager ops", "IPOPT to 1st iter [s]", "rest of solve [s]",
                 "iters"]
        pnotes = ["A separate first call (setup cache cleared) with jax_log_compiles and "
                  "JAX's monitoring events on. 'compile phase' = trace + lower of the three "
                  "executables + their XLA compilations; detection includes its own tracing "
                  "and the eager ops it folds ('eager': XLA compilations outside fc/gj/h)."]
        tables.append(table("first call, phase by phase", pcols, prof_rows, pnotes))
        print_markdown(tables[-1])
    if cache_rows:
        ccols = ["problem", "peer", "cold 1st call [s]", "cold setup [s]", "cold compile [s]",
                 "rerun 1st call [s]", "rerun setup [s]", "rerun compile [s]",
                 "rerun / cold"]
        cnotes = ["Two fresh processes, each after the 2-variable warm-up, sharing a new "
                  "jax_compilation_cache_dir (jax_persistent_cache_min_compile_time_secs=0); "
                  "the second reads the executables from disk."]
        tables.append(table("reruns with JAX's persistent compilation cache", ccols,
                            cache_rows, cnotes))
        print_markdown(tables[-1])
    write_json(args.json, "setup", tables,
               {"jax": version("jax").split()[1], "casadi": version("casadi").split()[1]})


if __name__ == "__main__":
    main()
