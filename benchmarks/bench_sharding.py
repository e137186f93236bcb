"""Memory per device and time per call of sharded compressed derivatives (issue 17).

Each configuration runs in its own subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (D simulated CPU devices sharing this
machine's cores and memory), builds the derivative with ``mesh=`` over those devices, and
reports:

* ``per-device MB``: the largest, over devices, of the bytes resident on that device before
  the call (``jax.live_arrays()``: ``x``, the index data, anything else the object keeps on a
  device) plus the compiled call's temporary and output buffers
  (``compiled.memory_analysis()``; an SPMD program reports one device's share). This is what
  must fit on one device.
* ``vs 1 device``: that figure over the single-device one (goal on 4 devices: <= 0.35 for
  ``banded`` and ``stencil`` at n = 1e6).
* ``call ms``: median of ``--repeat`` calls after a warm-up (the devices share 2 cores here,
  so this shows overheads, not speed-up).
* ``max ulp``: largest difference in units in the last place to the single-device values.

Cases (``n`` variables):

* ``banded``: ``benchmarks/_problems.banded_residual`` (pentadiagonal Jacobian, 5 colours).
* ``stencil``: 2-D Bratu residual on an N×N grid (5-point stencil, 5 colours).
* ``seed``: the seed fit on a fine mesh (``examples/sparse_operator_fit.py``): the nonzeros
  of a bilinear prolongation G (``--seed-n``, default 1e5: at 1e6 the single-device call
  alone needs about 4 GB, over this shared machine's budget), residual
  ``vec(GᵀLₖG) - Xₖ``; its sparse products gather across the mesh, so XLA moves data.

End-to-end Gauss–Newton (``--gn-routes``, default ``direct``): ``sa.gauss_newton(r, x0,
route=..., mesh=variable_mesh())`` on the 2-D Bratu residual (``--gn-n`` variables, default
2^16 on a 256×256 grid) on 1, 2 and 4 devices: ``cold s`` is the first solve in a fresh
process (detection, colouring, compiles included), ``solve s`` the median of the warm solves,
``per-device MB`` the fullest device's resident bytes plus the compiled step's temporaries
and outputs (one device's share of the SPMD program), and ``x rel`` the max difference of
the solution to the 1-device one relative to its max.

Rows ``axis = colors`` use `color_mesh` (the colour batch split, issue 9) for comparison;
``auto`` rows use a plain device list (the rule of `_sharding.choose_sharding` decides).

Usage::

    python benchmarks/bench_sharding.py            # n = 1e6 (a few minutes)
    python benchmarks/bench_sharding.py --quick    # n = 1e4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _seed_case(n):
    import importlib.util

    import sparseopt_adapters as sa

    spec = importlib.util.spec_from_file_location(
        "sparse_operator_fit", HERE.parent / "examples" / "sparse_operator_fit.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    nc = max(3, int(round((n / 9) ** 0.5)))  # G has about 9 nc² nonzeros
    while (3 * nc - 2) ** 2 % 4:  # the nearest grid whose nnz 1, 2 and 4 devices divide
        nc += 1
    residual, G0, targets, _ = ex.make_problem(nc)
    pattern = G0.pattern
    k = G0.nnz

    def r(g):
        return residual(sa.PatternMatrix(g, pattern), targets)

    return r, G0.values, k


def _problem(case, n):
    import numpy as np
    from _problems import banded_residual, bratu_residual

    if case == "banded":
        return banded_residual, np.cos(np.arange(n)), n
    if case == "stencil":
        N = int(round(n ** 0.5))
        return bratu_residual(N), 0.1 + 0.01 * np.sin(np.arange(N * N)), N * N
    if case == "seed":
        return _seed_case(n)
    raise ValueError(case)


def _device_bytes():
    import jax

    per = {}
    for a in jax.live_arrays():
        for s in a.addressable_shards:
            per[s.device] = per.get(s.device, 0) + s.data.nbytes
    return per


def _worker(case, n, axis, repeat, out_path):
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import sparseopt_adapters as sa
    from sparseopt_adapters._sharding import color_mesh, shard_variables, variable_mesh

    f, x, n = _problem(case, n)
    D = len(jax.devices())
    mesh = (None if D == 1 else color_mesh() if axis == "colors"
            else variable_mesh() if axis == "variables" else jax.devices())
    t0 = time.perf_counter()
    obj = sa.sparse_jacobian(f, x, mesh=mesh)
    build = time.perf_counter() - t0
    how = getattr(obj, "sharding", "none")
    if how == "variables":
        x = shard_variables(np.asarray(x), obj.mesh)
        call, index = obj.plan.values_jit, obj.plan.arrays()
    else:
        call, index = obj._values_jit, obj._static.get()
    jax.block_until_ready(x)
    before = _device_bytes()
    t = time.perf_counter()
    ma = call.lower(index, x).compile().memory_analysis()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    v = jax.block_until_ready(obj.values(x))
    first = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(obj.values(x))
        times.append(time.perf_counter() - t)
    resident = max(before.values()) if before else 0
    temp = ma.temp_size_in_bytes + ma.output_size_in_bytes if ma is not None else float("nan")
    np.save(out_path, np.asarray(v))
    shards = sorted({s.data.shape[0] for s in v.addressable_shards})
    return {"devices": D, "sharding": how, "colors": obj.n_colors, "n": n, "nnz": obj.nnz,
            "build_s": build, "compile_s": compile_s, "first_s": first,
            "median_s": statistics.median(times), "resident_mb": resident / 2**20,
            "temp_mb": temp / 2**20, "per_device_mb": (resident + temp) / 2**20,
            "value_shard": shards[-1], "plan": repr(obj.plan) if obj.plan else None}


def _gn_worker(route, n, repeat, out_path):
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from _problems import bratu_residual

    import sparseopt_adapters as sa
    from sparseopt_adapters._gauss_newton import _cached_gauss_newton
    from sparseopt_adapters._sharding import shard_variables, variable_mesh

    N = int(round(n ** 0.5))
    r, x0 = bratu_residual(N), np.zeros(N * N)
    D = len(jax.devices())
    kw = {} if D == 1 else {"mesh": variable_mesh()}
    t = time.perf_counter()
    res = sa.gauss_newton(r, x0, route=route, **kw)
    cold = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        res = sa.gauss_newton(r, x0, route=route, **kw)
        times.append(time.perf_counter() - t)
    gn = _cached_gauss_newton(r, x0, (), route, kw)
    xs = x0 if D == 1 else shard_variables(x0, gn.mesh)
    jax.block_until_ready(xs)
    before = _device_bytes()
    step_args = (xs, (), jnp.asarray(0.0), jnp.ones(N * N))
    if gn._mesh_jits is not None:  # mesh=, direct: the compiled halves around the host solve
        lows = [gn._mesh_jits[0].lower(*step_args, gn._mesh_index()[1], damped=False),
                gn._mesh_jits[1].lower(xs, (), xs)]
    else:
        lows = [gn._step_jit.lower(*step_args, damped=False, route=route)]
    temps = []
    for low in lows:
        ma = low.compile().memory_analysis()
        temps.append(ma.temp_size_in_bytes + ma.output_size_in_bytes if ma is not None
                     else float("nan"))
    resident = max(before.values()) if before else 0
    temp = max(temps)
    x = np.asarray(res.x)
    np.save(out_path, x)
    split = (len(res.x.sharding.device_set) if isinstance(res.x, jax.Array) else 1)
    return {"devices": D, "n": N * N, "route": res.route, "steps": res.n_steps,
            "success": bool(res.success), "cold_s": cold, "median_s": statistics.median(times),
            "per_device_mb": (resident + temp) / 2**20, "resident_mb": resident / 2**20,
            "temp_mb": temp / 2**20, "x_devices": split}


def _run(case, n, axis, devices, repeat, out_path, timeout=900):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, __file__, "--worker", case, "--n", str(n), "--axis", axis,
           "--repeat", str(repeat), "--out", str(out_path)]
    if case.startswith("gn-"):
        cmd[2:4] = ["--gn-worker", case[3:]]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _max_ulp(a, b):
    import numpy as np

    if a.shape != b.shape:
        return None
    if a.size == 0:
        return 0
    return int(np.max(np.abs(a.view(np.int64) - b.view(np.int64))))


def main(argv=None):
    import numpy as np
    from _report import add_json_argument, table, version, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1e4 instead of 1e6")
    ap.add_argument("--n", type=int, default=None, help="variables (default 1e6; 1e4 quick)")
    ap.add_argument("--cases", default="banded,stencil,seed")
    ap.add_argument("--seed-n", type=int, default=100_000,
                    help="nonzeros of G in the seed case (default 1e5: at 1e6 the "
                         "single-device call alone needs about 4 GB)")
    ap.add_argument("--devices", default="1,2,4", help="device counts")
    ap.add_argument("--axes", default=None,
                    help="mesh kinds besides the 1-device row: auto (a device list: the rule "
                         "decides), colors (color_mesh), variables (variable_mesh); default "
                         "auto,colors (quick: auto,colors,variables)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls after the warm-up")
    ap.add_argument("--no-solve", action="store_true",
                    help="skip the end-to-end Gauss–Newton solves")
    ap.add_argument("--gn-n", type=int, default=None,
                    help="variables of the GN solve (default 2^16; quick 2^12)")
    ap.add_argument("--gn-routes", default="direct",
                    help="GN routes to time (e.g. direct,cg: Bratu needs ~10^4 CG iterations "
                         "per step at n = 2^16, so cg is only practical with --quick)")
    ap.add_argument("--gn-repeat", type=int, default=3, help="warm GN solves timed")
    ap.add_argument("--gn-worker", help=argparse.SUPPRESS)
    add_json_argument(ap)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--axis", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.gn_worker:
        print(json.dumps(_gn_worker(a.gn_worker, a.n, a.repeat, a.out)))
        return
    if a.worker:
        print(json.dumps(_worker(a.worker, a.n, a.axis, a.repeat, a.out)))
        return
    n = a.n or (10_000 if a.quick else 1_000_000)
    counts = [int(d) for d in a.devices.split(",")]
    axes = (a.axes or ("auto,colors,variables" if a.quick else "auto,colors")).split(",")
    print(f"n = {n:.0e} variables; {os.cpu_count()} CPU cores; load average "
          f"{os.getloadavg()[0]:.1f}; median of {a.repeat} calls after one warm-up\n")
    head = (f"{'case':<9}{'axis':<7}{'dev':>4}{'split':>10}{'colors':>7}{'nnz':>10}"
            f"{'per-dev MB':>11}{'vs 1 dev':>9}{'resident':>9}{'XLA tmp+out':>12}"
            f"{'call ms':>9}{'max ulp':>8}")
    print(head)
    print("-" * len(head))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in [c for c in a.cases.split(",") if c]:  # --cases "": GN solves only
            ref = base = None
            configs = [("auto", 1)] + [(ax, d) for ax in axes for d in counts if d > 1]
            for axis, dev in configs:
                out = Path(tmp) / f"{case}-{axis}-{dev}.npy"
                size = min(n, a.seed_n) if case == "seed" else n
                r = _run(case, size, axis, dev, a.repeat, out)
                if "error" in r:
                    print(f"{case:<9}{axis:<7}{dev:>4}  error: {r['error']}", flush=True)
                    rows.append([case, axis, dev] + [None] * 8 + [r["error"]])
                    continue
                vals = np.load(out)
                if ref is None:
                    ref, base = vals, r["per_device_mb"]
                ulp = _max_ulp(vals, ref)
                ratio = r["per_device_mb"] / base
                print(f"{case:<9}{axis:<7}{dev:>4}{r['sharding']:>10}{r['colors']:>7}"
                      f"{r['nnz']:>10}{r['per_device_mb']:>11.1f}{ratio:>9.3f}"
                      f"{r['resident_mb']:>9.1f}{r['temp_mb']:>12.1f}"
                      f"{1e3 * r['median_s']:>9.1f}{ulp if ulp is not None else '-':>8}",
                      flush=True)
                rows.append([case, axis, dev, r["sharding"], r["colors"], r["n"], r["nnz"],
                             r["per_device_mb"], ratio, 1e3 * r["median_s"], ulp, r["plan"]])
    notes = ["per-device MB = bytes resident on the fullest device before the call + the "
             "compiled call's temp and output buffers (memory_analysis); goal: <= 0.35x the "
             "1-device figure on 4 devices for banded and stencil at n = 1e6",
             f"simulated CPU devices sharing {os.cpu_count()} cores (load average "
             f"{os.getloadavg()[0]:.1f}): times show overheads, not speed-up"]
    tab = table(f"Sharded compressed Jacobians, n = {n:.0e} (seed: {min(n, a.seed_n):.0e}): "
                "memory per device and time",
                ["case", "axis", "devices", "split", "colors", "n", "nnz", "per-device MB",
                 "vs 1 device", "call ms", "max ulp vs 1 device", "plan"], rows, notes)
    tab["columns"].insert(1, "peer")
    for row in tab["rows"]:
        row.insert(1, f"{version('jax')} (1 device)")
    tables = [tab]
    if not a.no_solve:
        tables.append(_gn_table(a, counts, table))
    write_json(a.json, "sharding", tables, {"jax": version("jax").split()[-1]})


def _gn_table(a, counts, table):
    """End-to-end sharded GN solves: 1 vs 2 vs 4 devices, time and memory per device."""
    import numpy as np

    n = a.gn_n or ((1 << 12) if a.quick else (1 << 16))
    print(f"\nGauss–Newton on 2-D Bratu, n = {n}: sa.gauss_newton(..., mesh=variable_mesh())")
    head = (f"{'route':<8}{'dev':>4}{'steps':>6}{'cold s':>8}{'solve s':>9}{'vs 1 dev':>9}"
            f"{'per-dev MB':>11}{'vs 1 dev':>9}{'resident':>9}{'XLA tmp+out':>12}{'x rel':>10}")
    print(head)
    print("-" * len(head))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for route in a.gn_routes.split(","):
            ref = base = None
            for dev in counts:
                out = Path(tmp) / f"gn-{route}-{dev}.npy"
                r = _run(f"gn-{route}", n, "variables", dev, a.gn_repeat, out)
                if "error" in r:
                    print(f"{route:<8}{dev:>4}  error: {r['error']}", flush=True)
                    rows.append([route, dev] + [None] * 7 + [r["error"]])
                    continue
                x = np.load(out)
                if ref is None:
                    ref, base = x, r
                xrel = float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-300))
                t_ratio = r["median_s"] / base["median_s"]
                m_ratio = r["per_device_mb"] / base["per_device_mb"]
                print(f"{route:<8}{dev:>4}{r['steps']:>6}{r['cold_s']:>8.2f}"
                      f"{r['median_s']:>9.3f}{t_ratio:>9.2f}{r['per_device_mb']:>11.1f}"
                      f"{m_ratio:>9.3f}{r['resident_mb']:>9.1f}{r['temp_mb']:>12.1f}"
                      f"{xrel:>10.1e}", flush=True)
                rows.append([route, dev, r["steps"], r["cold_s"], r["median_s"], t_ratio,
                             r["per_device_mb"], m_ratio, xrel,
                             "ok" if r["success"] else "not converged"])
    notes = ["cold s: first solve in a fresh process (setup and compiles included); solve s: "
             f"median of {a.gn_repeat} warm solves; per-device MB: the fullest device's "
             "resident bytes + the compiled step's temp and output buffers",
             f"simulated CPU devices sharing {os.cpu_count()} cores: times show overheads, "
             "not speed-up"]
    return table(f"Sharded Gauss–Newton solve, 2-D Bratu n = {n}: 1 vs 2 vs 4 devices",
                 ["route", "devices", "steps", "cold s", "solve s", "solve vs 1 device",
                  "per-device MB", "memory vs 1 device", "x rel vs 1 device", "status"],
                 rows, notes)


if __name__ == "__main__":
    main()
