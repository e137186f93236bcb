"""Every example runs at its small size in some test, and the main example's trace option works.

The examples' owners test them next to their modules (``tests/test_gauss_newton.py`` and
``tests/adapters/test_*.py``); this file checks that none is left out and covers what the
benchmark suite needs from the main example (``--trace-json``).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_run_small_by_a_test(example):
    runners = [p for p in (ROOT / "tests").rglob("test_*.py")
               if p.name != "test_examples.py" and example.name in p.read_text()
               and "--small" in p.read_text()]
    assert runners, (
        f"examples/{example.name} is run by no test: add one that runs it with --small "
        "(in a subprocess, asserting exit 0 and its key output lines)."
    )
    assert "--small" in example.read_text(), f"examples/{example.name} has no --small option"


def test_main_example_writes_its_energy_trace(tmp_path):
    path = tmp_path / "trace.json"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sparse_operator_fit.py"), "--small",
         "--lbfgs-budget", "1", "--trace-json", str(path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Gauss–Newton:" in out.stdout and "L-BFGS" in out.stdout
    assert "faster" in out.stdout
    d = json.loads(path.read_text())
    gn, lb = d["gauss_newton"], d["lbfgs"]
    # one point per iterate, the start included; times and energies as the solver reports them
    assert len(gn["t"]) == len(gn["energy"]) >= 2
    assert gn["energy"][-1] <= 1e-10 * gn["energy"][0]
    assert all(b >= a for a, b in zip(gn["t"], gn["t"][1:], strict=False))
    assert len(lb["t"]) == len(lb["energy"]) > 0
    assert all(b <= a for a, b in zip(lb["energy"], lb["energy"][1:], strict=False))  # best so far
    assert set(d["versions"]) >= {"jax", "scipy"}
