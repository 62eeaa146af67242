//! Matrix and vector file readers.
//!
//! [`read_matrix`] dispatches on the file extension:
//! - `.npy`: a dense 2-D NumPy array (`<f8` or `<f4`, C or Fortran order), converted to CSR
//!   with exact zeros dropped ([`npy`]);
//! - `.npz`: a SciPy sparse matrix written by `scipy.sparse.save_npz` in CSR, CSC or COO form
//!   ([`npz`]); unsorted indices are sorted and COO duplicates summed, explicit zeros kept;
//! - `.mtx`: Matrix Market coordinate real, integer or pattern; general, symmetric or
//!   skew-symmetric ([`mtx`]).
//!
//! [`read_vector`] reads a right-hand side `.npy` of shape `(n,)` or `(n, 1)`.
//!
//! Every error names the file and says what is wrong and where. Sizes declared by headers are
//! checked against a [`Budget`] before anything proportional to them is allocated. No input
//! makes these readers panic.

pub mod mtx;
pub mod npy;
pub mod npz;

use std::fmt;
use std::io::Read;
use std::path::Path;

use sprs::CsMat;

/// Memory budget for reading: declared sizes (dense `n×n×8`, sparse `nnz×(8+8)`) and the file
/// itself must fit in `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Largest number of bytes a read may allocate.
    pub max_bytes: usize,
}

impl Default for Budget {
    /// 2 GiB.
    fn default() -> Self {
        Budget { max_bytes: 2 << 30 }
    }
}

/// A read failure. The `Display` form always starts with the file name.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is malformed, unsupported or holds an unusable matrix.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong and where.
        message: String,
    },
    /// A declared size exceeds the memory budget.
    #[error("{file}: {what} needs {declared} bytes, over the memory budget of {budget} bytes")]
    OverBudget {
        /// The file.
        file: String,
        /// What declared the size (a shape, an entry count, the file itself).
        what: String,
        /// Declared size in bytes (saturated at `u128::MAX` on overflow).
        declared: u128,
        /// The budget in bytes.
        budget: usize,
    },
    /// The extension is not one of `.npy`, `.npz`, `.mtx`.
    #[error("{file}: unsupported file extension (expected .npy, .npz or .mtx)")]
    UnsupportedExtension {
        /// The file.
        file: String,
    },
}

/// A failure inside a parser, before the file name is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    Msg(String),
    Budget {
        what: String,
        declared: u128,
        budget: usize,
    },
}

impl Fail {
    pub(crate) fn msg(s: String) -> Fail {
        Fail::Msg(s)
    }

    pub(crate) fn budget(what: String, declared: u128, budget: &Budget) -> Fail {
        Fail::Budget {
            what,
            declared,
            budget: budget.max_bytes,
        }
    }

    /// Prefix the message with a location such as `indices.npy: `.
    pub(crate) fn within(self, prefix: &str) -> Fail {
        match self {
            Fail::Msg(m) => Fail::Msg(format!("{prefix}{m}")),
            Fail::Budget {
                what,
                declared,
                budget,
            } => Fail::Budget {
                what: format!("{prefix}{what}"),
                declared,
                budget,
            },
        }
    }

    fn into_error(self, file: &str) -> ReadError {
        match self {
            Fail::Msg(message) => ReadError::Invalid {
                file: file.to_string(),
                message,
            },
            Fail::Budget {
                what,
                declared,
                budget,
            } => ReadError::OverBudget {
                file: file.to_string(),
                what,
                declared,
                budget,
            },
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Msg(m) => f.write_str(m),
            Fail::Budget {
                what,
                declared,
                budget,
            } => write!(
                f,
                "{what} needs {declared} bytes, over the memory budget of {budget} bytes"
            ),
        }
    }
}

/// Matrix file formats understood by [`read_matrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Dense NumPy `.npy`.
    Npy,
    /// SciPy sparse `.npz`.
    Npz,
    /// Matrix Market `.mtx`.
    Mtx,
}

impl Format {
    /// The format for a path's extension (case-insensitive), if known.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "npy" => Some(Format::Npy),
            "npz" => Some(Format::Npz),
            "mtx" => Some(Format::Mtx),
            _ => None,
        }
    }
}

/// Read a square matrix from `path`, choosing the format by extension.
pub fn read_matrix(path: &Path, budget: &Budget) -> Result<CsMat<f64>, ReadError> {
    let file = path.display().to_string();
    let format = Format::from_path(path)
        .ok_or_else(|| ReadError::UnsupportedExtension { file: file.clone() })?;
    let bytes = read_file(path, budget)?;
    parse_matrix(format, &bytes, budget).map_err(|e| e.into_error(&file))
}

/// Parse matrix file contents already in memory. `file` is only used in error messages.
pub fn parse_matrix_bytes(
    format: Format,
    bytes: &[u8],
    budget: &Budget,
    file: &str,
) -> Result<CsMat<f64>, ReadError> {
    parse_matrix(format, bytes, budget).map_err(|e| e.into_error(file))
}

fn parse_matrix(format: Format, bytes: &[u8], budget: &Budget) -> Result<CsMat<f64>, Fail> {
    match format {
        Format::Npy => npy::parse_matrix(bytes, budget),
        Format::Npz => npz::parse_matrix(bytes, budget),
        Format::Mtx => mtx::parse_matrix(bytes, budget),
    }
}

/// Read a vector (a right-hand side) from an `.npy` of shape `(n,)` or `(n, 1)`.
pub fn read_vector(path: &Path, budget: &Budget) -> Result<Vec<f64>, ReadError> {
    let file = path.display().to_string();
    if Format::from_path(path) != Some(Format::Npy) {
        return Err(ReadError::Invalid {
            file,
            message: "a vector must be an .npy file".into(),
        });
    }
    let bytes = read_file(path, budget)?;
    npy::parse_vector(&bytes, budget).map_err(|e| e.into_error(&file))
}

/// Parse `.npy` vector contents already in memory. `file` is only used in error messages.
pub fn parse_vector_bytes(
    bytes: &[u8],
    budget: &Budget,
    file: &str,
) -> Result<Vec<f64>, ReadError> {
    npy::parse_vector(bytes, budget).map_err(|e| e.into_error(file))
}

/// Read a whole file, refusing files larger than the budget before reading them.
fn read_file(path: &Path, budget: &Budget) -> Result<Vec<u8>, ReadError> {
    let file = path.display().to_string();
    let io = |source| ReadError::Io {
        file: file.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if u128::from(len) > budget.max_bytes as u128 {
        return Err(ReadError::OverBudget {
            file: file.clone(),
            what: "the file itself".into(),
            declared: u128::from(len),
            budget: budget.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // Guard against a file growing while it is read.
    f.take(budget.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > budget.max_bytes {
        return Err(ReadError::OverBudget {
            file: file.clone(),
            what: "the file itself".into(),
            declared: bytes.len() as u128,
            budget: budget.max_bytes,
        });
    }
    Ok(bytes)
}

/// Reject non-square and empty shapes.
pub(crate) fn check_shape(rows: usize, cols: usize) -> Result<(), Fail> {
    if rows != cols {
        return Err(Fail::msg(format!("non-square shape ({rows} x {cols})")));
    }
    if rows == 0 {
        return Err(Fail::msg("empty matrix (0 x 0)".into()));
    }
    Ok(())
}

/// "NaN", "+Inf" or "-Inf".
pub(crate) fn nonfinite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// Peak bytes [`csr_from_triplets`] allocates for an `n×n` matrix from `entries` triplets,
/// with the triplet arrays themselves: three (n + 1)-long row arrays (counts, cursors,
/// indptr) and per entry the row, column and value (24), the sort buffer (16) and the CSR
/// column and value (16). Budget checks use this, not the CSR's final size: a 70-byte
/// `.mtx` declaring 2·10⁸ rows and no entries otherwise passed a 2 GiB budget and took 6 GB
/// (found by fuzzing).
pub(crate) fn triplets_peak_bytes(n: usize, entries: u128) -> u128 {
    (n as u128 + 1) * 8 * 3 + entries * (24 + 16 + 16)
}

/// Build an `n×n` CSR matrix from validated triplets (`rows[k] < n`, `cols[k] < n`), sorting
/// each row by column and summing duplicates. Explicit zeros are kept.
pub(crate) fn csr_from_triplets(
    n: usize,
    rows: &[usize],
    cols: &[usize],
    vals: &[f64],
) -> Result<CsMat<f64>, Fail> {
    let nnz = vals.len();
    if rows.len() != nnz || cols.len() != nnz {
        return Err(Fail::msg(format!(
            "array lengths differ: {} rows, {} cols, {} values",
            rows.len(),
            cols.len(),
            nnz
        )));
    }
    let mut counts = vec![0usize; n + 1];
    for &r in rows {
        if r >= n {
            return Err(Fail::msg(format!("row index {r} outside 0..{n}")));
        }
        counts[r + 1] += 1;
    }
    for i in 0..n {
        counts[i + 1] += counts[i];
    }
    let mut next = counts.clone();
    let mut ent: Vec<(usize, f64)> = vec![(0, 0.0); nnz];
    for k in 0..nnz {
        let r = rows[k];
        if cols[k] >= n {
            return Err(Fail::msg(format!(
                "column index {} outside 0..{n}",
                cols[k]
            )));
        }
        ent[next[r]] = (cols[k], vals[k]);
        next[r] += 1;
    }
    let mut indptr = Vec::with_capacity(n + 1);
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    indptr.push(0);
    for i in 0..n {
        let row = &mut ent[counts[i]..counts[i + 1]];
        row.sort_unstable_by_key(|e| e.0);
        let row_start = indices.len();
        for &(c, v) in row.iter() {
            if indices.len() > row_start && indices.last() == Some(&c) {
                if let Some(last) = data.last_mut() {
                    *last += v;
                }
            } else {
                indices.push(c);
                data.push(v);
            }
        }
        indptr.push(indices.len());
    }
    check_finite_csr(&indptr, &indices, &data)?;
    CsMat::try_new((n, n), indptr, indices, data)
        .map_err(|e| Fail::msg(format!("internal CSR construction failed: {}", e.3)))
}

/// Report the first NaN or Inf as `NaN at (i, j)` (0-based).
fn check_finite_csr(indptr: &[usize], indices: &[usize], data: &[f64]) -> Result<(), Fail> {
    for i in 0..indptr.len().saturating_sub(1) {
        for k in indptr[i]..indptr[i + 1] {
            if !data[k].is_finite() {
                return Err(Fail::msg(format!(
                    "{} at ({i}, {}) (0-based)",
                    nonfinite(data[k]),
                    indices[k]
                )));
            }
        }
    }
    Ok(())
}
