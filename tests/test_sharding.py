"""Sharded compressed derivatives on 4 simulated CPU devices (issue 9).

The device count of the host platform is fixed when JAX starts, so the checks run in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; it prints one JSON
object that the tests below read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import sparseopt_adapters as sa
    from sparseopt_adapters._sharding import color_mesh, seed_sharding, sharded_products

    def bratu(N, lam=6.0):
        h2 = 1.0 / (N + 1) ** 2

        def r(u_flat):
            u = u_flat.reshape(N, N)
            up = jnp.pad(u, 1)
            lap = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4.0 * u
            return (lap / h2 + lam * jnp.exp(u)).reshape(-1)

        return r

    def banded(x):  # pentadiagonal Hessian
        return jnp.sum((x[2:] - x[:-2] ** 2) ** 2) + jnp.sum(jnp.sin(x[1:] * x[:-1]) + x[1:] ** 4)

    def rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

    out = {"devices": len(jax.devices())}
    mesh = color_mesh()
    N = 10
    r = bratu(N)
    u = jnp.linspace(0.0, 1.0, N * N)
    x = jnp.cos(jnp.arange(40.0))
    cases = [
        ("jac_forward", lambda **k: sa.sparse_jacobian(r, u, mode="forward", **k), u),
        ("jac_reverse", lambda **k: sa.sparse_jacobian(r, u, mode="reverse", **k), u),
        ("hess", lambda **k: sa.sparse_hessian(banded, x, **k), x),
    ]
    for name, make, arg in cases:
        for chunk in (None, 2):
            ref = make(chunk_size=chunk)
            shd = make(chunk_size=chunk, mesh=mesh)
            products = sharded_products(shd, arg)
            c = ref.n_colors
            out[f"{name}/{chunk}"] = {
                "n_colors": c,
                "same_pattern": bool(
                    np.array_equal(ref.pattern.rows, shd.pattern.rows)
                    and np.array_equal(ref.pattern.cols, shd.pattern.cols)
                ),
                "values_rel": rel(shd.values(arg), ref.values(arg)),
                "dense_rel": rel(shd.todense(arg), jax.jacfwd(r)(u) if name != "hess"
                                 else jax.hessian(banded)(x)),
                "compressed_rel": rel(shd.compressed(arg), ref.compressed(arg)),
                "batch_shape": list(products.shape),
                "batch_devices": len(products.sharding.device_set),
                "batch_spec_ok": products.sharding.is_equivalent_to(
                    seed_sharding(mesh), products.ndim),
                "shards": sorted(s.data.shape[0] for s in products.addressable_shards),
                "pad_zero": bool(np.all(np.asarray(products)[c:] == 0)),
                "jit_rel": rel(jax.jit(shd.values)(arg), ref.values(arg)),
            }
    # a list of devices is accepted as well as a Mesh
    j = sa.sparse_jacobian(r, u, mesh=jax.devices()[:2])
    out["device_list_rel"] = rel(j.values(u), sa.sparse_jacobian(r, u).values(u))
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


CASES = [f"{n}/{c}" for n in ("jac_forward", "jac_reverse", "hess") for c in (None, 2)]


def test_four_devices(sharded):
    assert sharded["devices"] == 4


@pytest.mark.parametrize("case", CASES)
def test_same_values_same_order(sharded, case):
    r = sharded[case]
    assert r["same_pattern"]
    # same products up to the last bit XLA may change when it fuses a batch of another size
    # (the single-device path itself differs by 1 ulp between chunk sizes)
    assert r["values_rel"] <= 1e-14
    assert r["compressed_rel"] <= 1e-14
    assert r["jit_rel"] <= 1e-14
    assert r["dense_rel"] <= 1e-12


@pytest.mark.parametrize("case", CASES)
def test_batch_is_sharded(sharded, case):
    r = sharded[case]
    c = r["n_colors"]
    c_pad = -(-c // 4) * 4
    assert r["batch_shape"][0] == c_pad
    assert r["batch_devices"] == 4
    assert r["batch_spec_ok"]
    assert r["shards"] == [c_pad // 4] * 4
    assert r["pad_zero"]


def test_device_list(sharded):
    assert sharded["device_list_rel"] <= 1e-14


def test_mesh_type_error():
    import jax.numpy as jnp

    import sparseopt_adapters as sa

    with pytest.raises(TypeError, match="mesh must be"):
        sa.sparse_jacobian(lambda x: x ** 2, jnp.ones(3), mesh="gpu")
