"""Write reference matrices with real NumPy/SciPy for the solver-probe reader round-trip test.

Usage: write_matrices.py DIR

Writes the files below into DIR plus expected.json, mapping each file name to the dense values
(a list of rows for matrices, a flat list for vectors) the Rust readers must reproduce. Values
are written as Python repr strings, which round-trip exactly through Rust's f64 parser.
"""
import json
import os
import sys

import numpy as np
import scipy
import scipy.io
import scipy.sparse as sp


def reversed_within(m):
    """(data, indices, indptr) of a CSR or CSC matrix with the entries of every compressed row
    or column in reverse order, so the reader meets unsorted indices."""
    indices = m.indices.copy()
    data = m.data.copy()
    for k in range(len(m.indptr) - 1):
        lo, hi = m.indptr[k], m.indptr[k + 1]
        indices[lo:hi] = indices[lo:hi][::-1]
        data[lo:hi] = data[lo:hi][::-1]
    return data, indices, m.indptr.copy()


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261122)
    n = 9

    # A nonsymmetric random sparse matrix with a full nonzero diagonal.
    dense = rng.standard_normal((n, n)) * (rng.random((n, n)) < 0.35)
    dense += np.diag(4.0 + rng.random(n))
    dense[0, n - 1] = 2.5  # guarantee asymmetry
    dense[n - 1, 0] = 0.0

    # CSR with indices reversed (unsorted) inside every row.
    unsorted = sp.csr_matrix(reversed_within(sp.csr_matrix(dense)), shape=(n, n))
    unsorted.has_sorted_indices = False
    assert np.array_equal(unsorted.toarray(), dense)
    sp.save_npz(os.path.join(out, "m_csr.npz"), unsorted)

    # CSC with unsorted indices, stored uncompressed.
    csc_u = sp.csc_matrix(reversed_within(sp.csc_matrix(dense)), shape=(n, n))
    csc_u.has_sorted_indices = False
    sp.save_npz(os.path.join(out, "m_csc.npz"), csc_u, compressed=False)

    # COO with duplicates: every stored entry split into two halves, in shuffled order.
    coo = sp.coo_matrix(dense)
    rows = np.concatenate([coo.row, coo.row])
    cols = np.concatenate([coo.col, coo.col])
    vals = np.concatenate([coo.data * 0.25, coo.data * 0.75])
    perm = rng.permutation(len(rows))
    coo_d = sp.coo_matrix((vals[perm], (rows[perm], cols[perm])), shape=(n, n))
    sp.save_npz(os.path.join(out, "m_coo.npz"), coo_d)
    coo_dense = coo_d.toarray()

    np.save(os.path.join(out, "m_dense_c.npy"), np.ascontiguousarray(dense))
    np.save(os.path.join(out, "m_dense_f.npy"), np.asfortranarray(dense))
    np.save(os.path.join(out, "m_dense_f32.npy"), dense.astype(np.float32))

    scipy.io.mmwrite(os.path.join(out, "m.mtx"), sp.coo_matrix(dense), symmetry="general")

    sym = dense + dense.T
    scipy.io.mmwrite(os.path.join(out, "s.mtx"), sp.coo_matrix(sym), symmetry="symmetric")

    skew = np.tril(dense, -1) - np.tril(dense, -1).T
    scipy.io.mmwrite(os.path.join(out, "k.mtx"), sp.coo_matrix(skew), symmetry="skew-symmetric")

    pattern = (dense != 0).astype(np.float64)
    scipy.io.mmwrite(os.path.join(out, "p.mtx"), sp.coo_matrix(pattern), field="pattern")

    integer = np.round(dense * 3.0)
    scipy.io.mmwrite(os.path.join(out, "i.mtx"), sp.coo_matrix(integer).astype(np.int64), field="integer")
    integer_dense = sp.coo_matrix(integer).astype(np.int64).toarray().astype(np.float64)

    # Integer and boolean dense matrices (an integer stencil, a 0/1 adjacency), read as f64.
    np.save(os.path.join(out, "m_dense_i4.npy"), integer.astype(np.int32))
    np.save(os.path.join(out, "m_dense_i8.npy"), np.asfortranarray(integer.astype(np.int64)))
    np.save(os.path.join(out, "m_dense_b1.npy"), dense != 0)
    np.save(os.path.join(out, "m_dense_u1.npy"), np.abs(integer).astype(np.uint8))
    sp.save_npz(os.path.join(out, "m_int_csr.npz"), sp.csr_matrix(integer.astype(np.int64)))

    b = rng.standard_normal(n)
    np.save(os.path.join(out, "b.npy"), b)
    np.save(os.path.join(out, "b_col.npy"), b.reshape(n, 1))

    expected = {
        "m_csr.npz": dense.tolist(),
        "m_csc.npz": dense.tolist(),
        "m_coo.npz": coo_dense.tolist(),
        "m_dense_c.npy": dense.tolist(),
        "m_dense_f.npy": dense.tolist(),
        "m_dense_f32.npy": dense.tolist(),
        "m.mtx": dense.tolist(),
        "s.mtx": sym.tolist(),
        "k.mtx": skew.tolist(),
        "p.mtx": pattern.tolist(),
        "i.mtx": integer_dense.tolist(),
        "m_dense_i4.npy": integer.tolist(),
        "m_dense_i8.npy": integer.tolist(),
        "m_dense_b1.npy": pattern.tolist(),
        "m_dense_u1.npy": np.abs(integer).astype(np.uint8).astype(np.float64).tolist(),
        "m_int_csr.npz": integer.tolist(),
        "b.npy": b.tolist(),
        "b_col.npy": b.tolist(),
    }
    def exact(v):
        if isinstance(v, list):
            return [exact(x) for x in v]
        return repr(float(v))

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({k: exact(v) for k, v in expected.items()}, f)
    print(f"numpy {np.__version__} scipy {scipy.__version__} written to {out}")


if __name__ == "__main__":
    main()
