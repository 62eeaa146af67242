//! Matrices the unit tests share: the 2D five-point stencils whose eigenvalues are known, so
//! that each test module does not carry its own copy of the same loops.

use sprs::{CsMat, TriMat};

/// `T_m ⊗ I·ε + I ⊗ T_m` on an m × m grid (row-major unknowns): eigenvalues ε·λ_i + λ_j of
/// the 1D Laplacians T_m. With ε = 1 it is the 2D Poisson matrix.
pub(crate) fn anisotropic_2d(m: usize, eps: f64) -> CsMat<f64> {
    let n = m * m;
    let mut t = TriMat::new((n, n));
    for i in 0..m {
        for j in 0..m {
            let k = i * m + j;
            t.add_triplet(k, k, 2.0 + 2.0 * eps);
            if j > 0 {
                t.add_triplet(k, k - 1, -1.0);
            }
            if j + 1 < m {
                t.add_triplet(k, k + 1, -1.0);
            }
            if i > 0 {
                t.add_triplet(k, k - m, -eps);
            }
            if i + 1 < m {
                t.add_triplet(k, k + m, -eps);
            }
        }
    }
    t.to_csr()
}

/// The 5-point Laplacian on an m × m grid (4 on the diagonal, −1 to each neighbour).
pub(crate) fn poisson_2d(m: usize) -> CsMat<f64> {
    anisotropic_2d(m, 1.0)
}
