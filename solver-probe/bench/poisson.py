"""Builds the 2D Poisson matrix, times SciPy on it, and prints the comparison table."""
import json
import sys
import time

import numpy as np
import scipy
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def build(n, path):
    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    eye = sp.identity(n, format="csr")
    a = (sp.kron(eye, t) + sp.kron(t, eye)).tocsr()
    sp.save_npz(path, a)


def timed(path):
    a = sp.load_npz(path).tocsr()
    n = a.shape[0]
    x = 1.0 + (np.arange(n) % 7) * 0.01
    times = []
    for _ in range(20):
        t = time.perf_counter()
        y = a @ x
        times.append(time.perf_counter() - t)
    times.sort()
    iters = [0]

    def count(_):
        iters[0] += 1

    t = time.perf_counter()
    _, info = spla.cg(a, y, rtol=1e-8, maxiter=20000, callback=count)
    cg = time.perf_counter() - t
    print(json.dumps({
        "scipy": scipy.__version__, "n": n, "nnz": int(a.nnz),
        "spmv_seconds_median": times[len(times) // 2],
        "cg_iterations": iters[0], "cg_seconds": cg,
        "cg_seconds_per_iteration": cg / max(iters[0], 1), "cg_info": info,
    }))


def compare(scipy_json, probe_json):
    s = json.load(open(scipy_json))
    p = json.load(open(probe_json))
    print(f"2D Poisson, {s['n']} unknowns, {s['nnz']} nonzeros; SciPy {s['scipy']}")
    print(f"{'step':<28}{'SciPy':>14}{'solver-probe':>16}{'speed-up':>10}")
    for label, key, unit in [
        ("SpMV (median of 20)", "spmv_seconds_median", 1e3),
        ("CG per iteration", "cg_seconds_per_iteration", 1e3),
        ("CG to rtol 1e-8 (total)", "cg_seconds", 1.0),
    ]:
        u = "ms" if unit == 1e3 else "s"
        print(f"{label:<28}{s[key] * unit:>11.2f} {u:<2}{p[key] * unit:>13.2f} {u:<2}{s[key] / p[key]:>9.2f}x")
    print(f"{'CG iterations':<28}{s['cg_iterations']:>14}{p['cg_iterations']:>16}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "build":
        build(int(sys.argv[2]), sys.argv[3])
    elif cmd == "time":
        timed(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
