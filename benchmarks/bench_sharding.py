"""Sharded and chunked compressed derivatives at 1e6 variables (issue 9).

Every measurement runs in its own subprocess, so its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that configuration's alone; the ``mesh``
rows start JAX with ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (D simulated CPU
devices sharing this machine's cores and memory, so the RSS is the sum over devices).

Rows:

* ``hessian``: chained Rosenbrock, n variables (tridiagonal Hessian, 3 colors, star).
* ``jacobian``: 2-D Bratu residual on an N×N grid (n = N², 5-point stencil, forward).
* ``primal``: the function and its gradient only (the baseline RSS of JAX + the data).

Columns: ``max RSS MB`` is the whole process (all simulated devices, XLA's compiler, the
pattern and index arrays); ``XLA temp MB`` is the temporary buffer size of the compiled
call per device (``compiled.memory_analysis().temp_size_in_bytes``): the products in
flight, which is what ``chunk_size`` bounds.
* ``solve``: `sparseopt_adapters.ipopt.minimize` from zero on a convex 1-D Bratu-type
  energy ``sum(diff(x)²)/2h + h·sum(exp(x) - 2x + x⁴/4)`` (tridiagonal Hessian; single
  device: the adapters take no ``mesh`` yet). Chained Rosenbrock is not used here: from
  ``(-1.2, 1, ...)`` or from zero IPOPT does not converge within its 3000 iterations even
  at n = 1e4 (117 s here), and optimistix ``Newton`` not within 200 steps.

Usage::

    python benchmarks/bench_sharding.py            # n = 1e6 (about 3 minutes here)
    python benchmarks/bench_sharding.py --quick    # n = 1e4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _worker(kind: str, n: int, chunk: int | None, devices: int, repeat: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from _problems import bratu_residual, rosenbrock

    import sparseopt_adapters as sa
    from sparseopt_adapters._sharding import color_mesh

    mesh = color_mesh() if devices > 1 else None
    out: dict = {"devices": len(jax.devices())}
    t0 = time.perf_counter()
    if kind == "solve":
        from sparseopt_adapters import ipopt

        h = 1.0 / (n + 1)

        def energy(v):  # convex 1-D Bratu-type energy (tridiagonal Hessian)
            vp = jnp.pad(v, 1)
            return (jnp.sum(jnp.diff(vp) ** 2) / (2 * h)
                    + h * jnp.sum(jnp.exp(v) - 2.0 * v + 0.25 * v ** 4))

        res = ipopt.minimize(energy, np.zeros(n))
        out.update(
            total_s=time.perf_counter() - t0, success=bool(res.success), nit=int(res.nit),
            fun=float(res.fun), grad_inf=float(jnp.max(jnp.abs(jax.grad(energy)(res.x)))),
        )
    else:
        if kind in ("hessian", "primal_h"):
            x = jnp.asarray(np.where(np.arange(n) % 2 == 0, -1.2, 1.0))
            if kind == "hessian":
                obj = sa.sparse_hessian(rosenbrock, x, chunk_size=chunk, mesh=mesh)
                call = obj.values
            else:
                call = jax.jit(jax.value_and_grad(rosenbrock))
        else:
            N = int(round(n ** 0.5))
            r = bratu_residual(N)
            x = jnp.full(N * N, 0.1)
            if kind == "jacobian":
                obj = sa.sparse_jacobian(r, x, mode="forward", chunk_size=chunk, mesh=mesh)
                call = obj.values
            else:
                call = jax.jit(lambda u: jax.vjp(r, u)[1](r(u)))
        out["build_s"] = time.perf_counter() - t0
        if kind in ("hessian", "jacobian"):
            out["colors"] = obj.n_colors
        t = time.perf_counter()
        jax.block_until_ready(call(x))
        out["first_s"] = time.perf_counter() - t
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            jax.block_until_ready(call(x))
            times.append(time.perf_counter() - t)
        out["median_s"] = statistics.median(times)
        if kind in ("hessian", "jacobian"):
            # XLA's temporary buffers of the compiled call, per device (an SPMD program)
            ma = obj._values_jit.lower(obj._static.get(), x).compile().memory_analysis()
            out["temp_mb"] = ma.temp_size_in_bytes / 2**20 if ma is not None else float("nan")
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _run(kind, n, chunk, devices, repeat, timeout=600):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--devices",
           str(devices), "--repeat", str(repeat)]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1e4 instead of 1e6")
    ap.add_argument("--devices", type=int, default=2, help="simulated devices of the mesh rows")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls after the warm-up")
    ap.add_argument("--no-solve", action="store_true", help="skip the IPOPT solve")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(a.worker, a.n, a.chunk, a.devices, a.repeat)))
        return
    n = 10_000 if a.quick else 1_000_000
    D = a.devices
    configs = [
        ("primal_h", None, 1), ("hessian", None, 1), ("hessian", 1, 1),
        ("hessian", None, D), ("hessian", 2, D),
        ("primal_j", None, 1), ("jacobian", None, 1), ("jacobian", 1, 1),
        ("jacobian", None, D), ("jacobian", 2, D),
    ]
    rows = []
    print(f"n = {n:.0e} variables; {os.cpu_count()} CPU cores; load average "
          f"{os.getloadavg()[0]:.1f}; median of {a.repeat} calls after one warm-up\n")
    head = (f"{'what':<10}{'devices':>8}{'chunk':>7}{'colors':>7}{'build s':>9}"
            f"{'1st call s':>11}{'call ms':>9}{'max RSS MB':>11}{'XLA temp MB':>12}")
    print(head)
    print("-" * len(head))
    for kind, chunk, dev in configs:
        r = _run(kind, n, chunk, dev, a.repeat)
        rows.append({"kind": kind, "chunk": chunk, "devices": dev, "n": n, **r})
        if "error" in r:
            print(f"{kind:<10}{dev:>8}{chunk or '-':>7}  error: {r['error']}")
            continue
        print(f"{kind:<10}{dev:>8}{chunk or '-':>7}{r.get('colors', '-'):>7}"
              f"{r['build_s']:>9.2f}{r['first_s']:>11.2f}{1e3 * r['median_s']:>9.1f}"
              f"{r['maxrss_mb']:>11.0f}{r.get('temp_mb', float('nan')):>12.1f}", flush=True)
    if not a.no_solve:
        r = _run("solve", n, None, 1, 1)
        rows.append({"kind": "solve", "devices": 1, "n": n, **r})
        print()
        if "error" in r:
            print(f"ipopt.minimize(Bratu-type energy, n={n:.0e}): error: {r['error']}")
        else:
            print(f"ipopt.minimize(Bratu-type energy, n={n:.0e}): {r['total_s']:.1f} s total "
                  f"(detection, coloring, compile, solve), {r['nit']} iterations, "
                  f"success={r['success']}, f={r['fun']:.6g}, |grad|_inf={r['grad_inf']:.1e}, "
                  f"max RSS {r['maxrss_mb']:.0f} MB")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
