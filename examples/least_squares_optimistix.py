"""Nonlinear least squares with optimistix on a sparse Jacobian: swap one object.

Recover a smooth field ``u`` on an N×N grid, and an unknown sensor gain ``a``, from noisy,
nonlinear observations at scattered cells::

    d_k = a · exp(u[i_k, j_k]) + noise,            k = 1 … n_obs

by minimising ‖r‖² with the residual (a pytree, like the parameters)::

    r = { "data":   (a · exp(u[idx]) − d) / σ,       # fancy indexing: a gather
          "smooth": α · (∇ₓu, ∇ᵧu),                   # finite differences
          "prior":  γ · u }                           # fixes the a ↔ exp(u) scale ambiguity

The Jacobian has N² + 1 columns and about 5 nonzeros per row (the gain column is dense), so
optimistix's default dense QR is hopeless beyond a few thousand unknowns, while
``sa_optx.LevenbergMarquardt`` detects the pattern once, colors it and factorises ``JᵀJ + λI``
sparse. The script also times optimistix with a hand-picked matrix-free solver (LSMR) and, at
small sizes, with its dense default.

Run::

    python examples/least_squares_optimistix.py            # N = 100: 10 001 unknowns
    python examples/least_squares_optimistix.py --small    # N = 16, includes the dense run
"""

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
import optimistix as optx  # noqa: E402

import sparseopt_adapters  # noqa: E402, F401  (float64)
from sparseopt_adapters import optimistix as sa_optx  # noqa: E402

DENSE_LIMIT = 1600  # unknowns: beyond this the dense QR run is skipped (n² memory, n³ time)


def make_problem(N, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, N)
    X, Y = np.meshgrid(x, x, indexing="ij")
    u_true = 0.6 * np.sin(2.5 * X) * np.cos(1.5 * Y) + 0.3 * X * Y
    u_true -= u_true.mean()  # the prior below pulls the mean of u to 0
    gain_true = 1.7
    idx = np.sort(rng.choice(N * N, size=N * N // 3, replace=False))  # observed cells
    sigma = 0.01
    d = gain_true * np.exp(u_true.ravel()[idx]) + sigma * rng.standard_normal(idx.size)
    alpha, gamma = 2.0, 0.5

    def residual(y, data):
        u, a = y["u"], y["gain"]
        return {
            "data": (a * jnp.exp(u.ravel()[idx]) - data) / sigma,
            "smooth": alpha * N * jnp.concatenate(
                [(u[1:, :] - u[:-1, :]).ravel(), (u[:, 1:] - u[:, :-1]).ravel()]
            ),
            "prior": gamma * u.ravel(),
        }

    y0 = {"u": jnp.zeros((N, N)), "gain": jnp.array(1.0)}
    return residual, y0, jnp.asarray(d), {"u": u_true, "gain": gain_true}


def timed_solve(residual, solver, y0, data, max_steps=200, repeats=2):
    """First call (trace, detection, compile, solve), then the median of warm calls."""

    @jax.jit
    def solve(y0, data):
        sol = optx.least_squares(residual, solver, y0, data, max_steps=max_steps, throw=False)
        return sol.value, sol.result, sol.stats["num_steps"]

    t = time.perf_counter()
    out = jax.block_until_ready(solve(y0, data))
    first = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(solve(y0, data))
        warm.append(time.perf_counter() - t)
    return out, first, float(np.median(warm))


def cost(residual, y, data):
    r = jax.flatten_util.ravel_pytree(residual(y, data))[0]
    return float(0.5 * jnp.sum(r**2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="N = 16 (a few seconds)")
    parser.add_argument("--N", type=int, default=None, help="grid size (default 100)")
    opts = parser.parse_args(argv)
    N = opts.N or (16 if opts.small else 100)
    residual, y0, data, truth = make_problem(N)
    n = N * N + 1
    tol = 1e-8

    ours = sa_optx.LevenbergMarquardt(rtol=tol, atol=tol)
    plan = ours.plan(residual, y0, data)
    print(f"N = {N}: {n} unknowns, {plan.pattern.shape[0]} residuals, nnz(J) = "
          f"{plan.pattern.nnz}, route {plan.route!r} with {plan.n_colors} colors")

    runs = {
        "sa_optx.LevenbergMarquardt": ours,
        "optx.LevenbergMarquardt + lx.LSMR": optx.LevenbergMarquardt(
            tol, tol, linear_solver=lx.LSMR(rtol=1e-10, atol=1e-10, conlim=1e14)
        ),
    }
    if n <= DENSE_LIMIT:
        runs["optx.LevenbergMarquardt (dense QR)"] = optx.LevenbergMarquardt(tol, tol)
    else:
        print(f"optx.LevenbergMarquardt (dense QR): skipped, n = {n} > {DENSE_LIMIT} "
              f"(the dense Jacobian alone is {n * plan.pattern.shape[0] * 8 / 1e9:.1f} GB)")

    results, success = {}, {}
    print(f"{'solver':38s} {'steps':>5s} {'first call':>11s} {'warm':>9s} {'cost':>12s}")
    for name, solver in runs.items():
        (value, result, steps), first, warm = timed_solve(residual, solver, y0, data)
        ok = bool(result == optx.RESULTS.successful)
        results[name], success[name] = value, ok
        print(f"{name:38s} {int(steps):5d} {first:10.2f}s {warm:8.3f}s "
              f"{cost(residual, value, data):12.6e}{'' if ok else '  FAILED: ' + str(result)}")

    if not success["sa_optx.LevenbergMarquardt"]:
        raise SystemExit("sa_optx.LevenbergMarquardt did not converge")
    best = results["sa_optx.LevenbergMarquardt"]
    for name, value in results.items():
        diff = float(jnp.max(jnp.abs(jax.flatten_util.ravel_pytree(value)[0]
                                     - jax.flatten_util.ravel_pytree(best)[0])))
        print(f"max |difference| to ours, {name}: {diff:.2e}")
    err_u = float(np.max(np.abs(np.asarray(best["u"]) - truth["u"])))
    print(f"converged: gain = {float(best['gain']):.4f} (true {truth['gain']}), "
          f"max |u - u_true| = {err_u:.3f}")


if __name__ == "__main__":
    main()
