"""Builds the 2D Poisson matrix, times SciPy on it, and prints the comparison table."""
import json
import resource
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


def timed(path, with_cond=True):
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
    xs, info = spla.cg(a, y, rtol=1e-8, maxiter=20000, callback=count)
    cg = time.perf_counter() - t
    true_residual = float(np.linalg.norm(y - a @ xs) / np.linalg.norm(y))
    rss_solve = peak_rss()
    kappa = {}
    for spec in ["MMD_AT_PLUS_A", "COLAMD"] if with_cond else []:
        t = time.perf_counter()
        k = kappa1(a.tocsc(), spec)
        kappa[spec] = {"kappa1": k, "seconds": time.perf_counter() - t, "peak_rss_bytes": peak_rss()}
    print(json.dumps({
        "scipy": scipy.__version__, "n": n, "nnz": int(a.nnz),
        "spmv_seconds_median": times[len(times) // 2],
        "cg_iterations": iters[0], "cg_seconds": cg, "cg_true_residual": true_residual,
        "cg_seconds_per_iteration": cg / max(iters[0], 1), "cg_info": info,
        "peak_rss_bytes_solve": rss_solve, "kappa": kappa,
    }))


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kappa1(a, spec):
    """κ₁ = ‖A‖₁ · onenormest(A⁻¹) on splu with the given column ordering."""
    lu = spla.splu(a, permc_spec=spec)
    inv = spla.LinearOperator(a.shape, matvec=lu.solve, rmatvec=lambda v: lu.solve(v, trans="T"))
    est = spla.onenormest(inv)
    return float(abs(a).sum(axis=0).max() * est)


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
    c = p.get("cond")
    if c:
        for spec, k in s["kappa"].items():
            print(f"{'kappa estimate vs ' + spec:<28}{k['seconds']:>11.2f} s {c['seconds']:>13.2f} s {k['seconds'] / c['seconds']:>9.2f}x")
        mmd = s["kappa"]["MMD_AT_PLUS_A"]
        print(f"{'kappa1 (probe) vs MMD':<28}{mmd['seconds']:>11.2f} s {c['kappa1_seconds']:>13.2f} s {mmd['seconds'] / c['kappa1_seconds']:>9.2f}x")
        print(f"  SciPy kappa1: " + ", ".join(f"{spec} {k['kappa1']:.4e}" for spec, k in s["kappa"].items()))
        print(f"  probe: kappa {c['kappa']:.4e} ({c['norm']} norm, {c['method']}); kappa1 {c['kappa1']:.4e}")
        print(f"  probe note: {c['note']}")
        print(f"  probe kappa1 note: {c['kappa1_note']}")
    gb = 1e-9
    print(f"{'peak RSS, SpMV + CG':<28}{s['peak_rss_bytes_solve'] * gb:>11.2f} GB{p['peak_rss_bytes_solve'] * gb:>13.2f} GB")
    if c:
        last = max(k["peak_rss_bytes"] for k in s["kappa"].values())
        print(f"{'peak RSS, whole run':<28}{last * gb:>11.2f} GB{p['peak_rss_bytes'] * gb:>13.2f} GB")


def pairs(directory, count):
    """The A/B table: SciPy and the probe were run in alternation (scipy-i, probe-i,
    probe1-i for i = 1..count); each step's ratio is taken pair by pair (SciPy time / probe
    time, so above 1 is the probe faster), and the median and min-max of the ratios printed."""
    import os
    load = lambda name: json.load(open(os.path.join(directory, name)))
    runs = [(load(f"scipy-{i}.json"), load(f"probe-{i}.json"), load(f"probe1-{i}.json")) for i in range(1, count + 1)]
    s0, p0, _ = runs[0]
    print(f"2D Poisson, {s0['n']} unknowns, {s0['nnz']} nonzeros; SciPy {s0['scipy']}; {count} pairs, "
          f"run in alternation after a warm-up; probe workers {p0['workers']} (and 1)")
    steps = [
        ("SpMV (median of 20)", lambda s: s["spmv_seconds_median"], lambda p: p["spmv_seconds_median"], 1e3),
        ("CG per iteration", lambda s: s["cg_seconds_per_iteration"], lambda p: p["cg_seconds_per_iteration"], 1e3),
        ("CG to rtol 1e-8", lambda s: s["cg_seconds"], lambda p: p["cg_seconds"], 1.0),
    ]
    if p0.get("cond"):
        steps += [
            ("kappa2 + bounds vs MMD", lambda s: s["kappa"]["MMD_AT_PLUS_A"]["seconds"], lambda p: p["cond"]["seconds"], 1.0),
            ("kappa2 + bounds vs COLAMD", lambda s: s["kappa"]["COLAMD"]["seconds"], lambda p: p["cond"]["seconds"], 1.0),
            ("kappa1 vs MMD", lambda s: s["kappa"]["MMD_AT_PLUS_A"]["seconds"], lambda p: p["cond"]["kappa1_seconds"], 1.0),
            ("kappa2+kappa1, 1 factor", lambda s: s["kappa"]["MMD_AT_PLUS_A"]["seconds"], lambda p: p["cond"].get("both_seconds", float("nan")), 1.0),
        ]
    med = lambda v: sorted(v)[len(v) // 2]
    print(f"{'step':<26}{'pairs: SciPy / probe = ratio':<60}{'median':>8}{'min-max':>14}{'1 worker':>10}")
    for label, sv, pv, unit in steps:
        u = "ms" if unit == 1e3 else "s"
        ratios = [sv(s) / pv(p) for s, p, _ in runs]
        single = [sv(s) / pv(p1) for s, _, p1 in runs]
        cells = " ".join(f"{sv(s) * unit:.2f}/{pv(p) * unit:.2f}={sv(s) / pv(p):.2f}" for s, p, _ in runs)
        print(f"{label:<26}{cells:<60}{med(ratios):>7.2f}x{min(ratios):>7.2f}-{max(ratios):.2f}{med(single):>9.2f}x")
    print(f"CG: SciPy {s0['cg_iterations']} iterations to true residual {s0['cg_true_residual']:.2e}; "
          f"probe {p0['cg_iterations']} ({p0['cg_reason']}) to {p0['cg_true_residual']:.2e}")
    c = p0.get("cond")
    if c:
        print("  SciPy kappa1: " + ", ".join(f"{spec} {k['kappa1']:.4e}" for spec, k in s0["kappa"].items()))
        print(f"  probe: kappa {c['kappa']:.4e} ({c['norm']} norm, {c['method']}); kappa1 {c['kappa1']:.4e}; "
              f"from one factor: kappa1 {c.get('both_kappa1', float('nan')):.4e}")
        print(f"  probe note: {c['note']}")
    gb = 1e-9
    peak_s = max(max(k["peak_rss_bytes"] for k in s["kappa"].values()) if s.get("kappa") else s["peak_rss_bytes_solve"] for s, _, _ in runs)
    peak_p = max(p["peak_rss_bytes"] for _, p, _ in runs)
    print(f"peak RSS (whole run): SciPy {peak_s * gb:.2f} GB, probe {peak_p * gb:.2f} GB")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "build":
        build(int(sys.argv[2]), sys.argv[3])
    elif cmd == "time":
        timed(sys.argv[2], "--cond" in sys.argv[3:])
    elif cmd == "pairs":
        pairs(sys.argv[2], int(sys.argv[3]))
    else:
        compare(sys.argv[2], sys.argv[3])
