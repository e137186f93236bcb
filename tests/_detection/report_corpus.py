"""Corpus report: per case, sound? exact? (against the union of dense-AD nonzeros).

    PYTHONPATH=. python tests/_detection/report_corpus.py [--all]

Prints the share of cases whose detected pattern *equals* the dense truth (the "exact on
≥ 97 % of the corpus" figure of issue 15) for the installed JAX, and every case that is not.
"""

from __future__ import annotations

import pathlib
import sys
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from corpus import HESSIAN_CASES, JACOBIAN_CASES  # noqa: E402
from test_detection import _dense_hessian, _dense_jacobian, _dense_union  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402


def evaluate(case, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detect = sa.hessian_sparsity if kind == "hess" else sa.jacobian_sparsity
        p = detect(case.f, *case.args, argnums=case.argnums)
    dense = _dense_hessian(case) if kind == "hess" else _dense_jacobian(case)
    truth = _dense_union(dense, case).reshape(p.shape)
    d = p.todense()
    return int((truth & ~d).sum()), int((d & ~truth).sum())


def main():
    rows, t0 = [], time.perf_counter()
    for kind, cases in (("jac", JACOBIAN_CASES), ("hess", HESSIAN_CASES)):
        for c in cases:
            try:
                missing, extra = evaluate(c, kind)
                rows.append((kind, c.name, missing, extra, "", c.exact))
            except Exception as e:  # reported, never hidden
                rows.append((kind, c.name, -1, -1, f"{type(e).__name__}: {e}"[:120], c.exact))
    n = len(rows)
    exact = sum(r[2] == 0 and r[3] == 0 and not r[4] for r in rows)
    errors = [r for r in rows if r[4]]
    missing = [r for r in rows if r[2] > 0]
    print(f"JAX {jax.__version__}: {n} cases, exact {exact}/{n} = {100 * exact / n:.1f} %, "
          f"missing nonzeros in {len(missing)}, exceptions {len(errors)} "
          f"({time.perf_counter() - t0:.0f} s)")
    for r in rows:
        if r[2] or r[3] or r[4] or "--all" in sys.argv:
            print(f"  {r[0]:4s} {r[1]:40s} missing={r[2]} extra={r[3]} claimed_exact={r[5]} {r[4]}")
    return 1 if errors or missing else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
