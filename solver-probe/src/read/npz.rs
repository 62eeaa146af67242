//! SciPy sparse `.npz` reader (the output of `scipy.sparse.save_npz`).
//!
//! The archive holds `format.npy` (a 0-d `|S3` or `<U3` string: `csr`, `csc` or `coo`),
//! `shape.npy`, `data.npy`, and either `indices.npy` + `indptr.npy` (CSR/CSC) or `row.npy` +
//! `col.npy` (COO; a `(2, nnz)` `coords.npy` is accepted too). Index arrays are `<i4` or `<i8`;
//! data is `<f8` or `<f4`. Every index is validated against the shape, `indptr` must start at 0,
//! be monotone and end at nnz, and lengths must agree. Unsorted indices are sorted and
//! duplicates summed; explicit zeros are kept.
//!
//! Each member's declared uncompressed size and each array's declared element count are checked
//! against the [`Budget`] before they are read or converted.

use std::io::{Cursor, Read};

use sprs::CsMat;

use super::npy::{self, NpyArray};
use super::{check_shape, csr_from_triplets, Budget, Fail};

/// Parse `.npz` bytes into a CSR matrix.
pub(crate) fn parse_matrix(bytes: &[u8], budget: &Budget) -> Result<CsMat<f64>, Fail> {
    let mut members = Members::open(bytes, budget)?;
    let format_raw = members.raw("format.npy")?;
    let format = parse_npy(&format_raw, "format.npy", budget, 1)?
        .string("")
        .map_err(|e| e.within("format.npy: "))?;
    let shape_raw = members.raw("shape.npy")?;
    let shape = parse_npy(&shape_raw, "shape.npy", budget, 8)?
        .ints("")
        .map_err(|e| e.within("shape.npy: "))?;
    let (r, c) = match shape.as_slice() {
        [r, c] if *r >= 0 && *c >= 0 => (*r as u64, *c as u64),
        s => {
            return Err(Fail::msg(format!(
                "shape.npy: expected two non-negative dimensions, found {s:?}"
            )))
        }
    };
    let (r, c) = (
        usize::try_from(r).unwrap_or(usize::MAX),
        usize::try_from(c).unwrap_or(usize::MAX),
    );
    check_shape(r, c)?;
    let n = r;
    // Building the CSR result needs O(n) arrays whatever the entries (checked again with
    // them once their count is known).
    let indptr_bytes = super::triplets_peak_bytes(n, 0);
    if indptr_bytes > budget.max_bytes as u128 {
        return Err(Fail::budget(
            format!("shape ({n} x {n})"),
            indptr_bytes,
            budget,
        ));
    }

    let data_raw = members.raw("data.npy")?;
    let data_arr = parse_npy(&data_raw, "data.npy", budget, 16)?;
    one_d(&data_arr, "data.npy")?;
    let data = data_arr.floats("").map_err(|e| e.within("data.npy: "))?;
    let nnz = data.len();
    let peak = super::triplets_peak_bytes(n, nnz as u128) + members.used;
    if peak > budget.max_bytes as u128 {
        return Err(Fail::budget(
            format!("{nnz} entries of a {n} x {n} matrix"),
            peak,
            budget,
        ));
    }

    match format.as_str() {
        "csr" | "csc" => compressed(&mut members, n, &data, format == "csr"),
        "coo" => coordinates(&mut members, n, &data),
        other => Err(Fail::msg(format!(
            "sparse format '{}' not supported (expected csr, csc or coo)",
            other.escape_default()
        ))),
    }
}

/// The CSR (`by_rows`) or CSC matrix of `indices.npy` and `indptr.npy` around `data`.
fn compressed(
    members: &mut Members<'_>,
    n: usize,
    data: &[f64],
    by_rows: bool,
) -> Result<CsMat<f64>, Fail> {
    let nnz = data.len();
    let indices = members.indices("indices.npy")?;
    let indptr = members.indices("indptr.npy")?;
    if indices.len() != nnz {
        return Err(Fail::msg(format!(
            "indices has {} entries but data has {nnz}",
            indices.len()
        )));
    }
    if indptr.len() != n + 1 {
        return Err(Fail::msg(format!(
            "indptr has {} entries, expected n + 1 = {}",
            indptr.len(),
            n + 1
        )));
    }
    if indptr[0] != 0 {
        return Err(Fail::msg(format!("indptr[0] = {} (expected 0)", indptr[0])));
    }
    for k in 0..n {
        if indptr[k + 1] < indptr[k] {
            return Err(Fail::msg(format!(
                "indptr not monotone: indptr[{}] = {} < indptr[{k}] = {}",
                k + 1,
                indptr[k + 1],
                indptr[k]
            )));
        }
    }
    if indptr[n] != nnz as i64 {
        return Err(Fail::msg(format!(
            "indptr[{n}] = {} but data has {nnz} entries",
            indptr[n]
        )));
    }
    let minor = check_indices(&indices, "indices", n)?;
    let mut outer = Vec::with_capacity(nnz);
    for k in 0..n {
        // Validated above: 0 <= indptr[k] <= indptr[k+1] <= nnz.
        let len = (indptr[k + 1] - indptr[k]) as usize;
        outer.extend(std::iter::repeat_n(k, len));
    }
    if by_rows {
        csr_from_triplets(n, &outer, &minor, data)
    } else {
        csr_from_triplets(n, &minor, &outer, data)
    }
}

/// The COO matrix of `row.npy` + `col.npy` (or a `(2, nnz)` `coords.npy`) around `data`.
fn coordinates(members: &mut Members<'_>, n: usize, data: &[f64]) -> Result<CsMat<f64>, Fail> {
    let nnz = data.len();
    let (rows, cols) = if members.has("row.npy") {
        (members.indices("row.npy")?, members.indices("col.npy")?)
    } else if members.has("coords.npy") {
        let raw = members.raw("coords.npy")?;
        let arr = parse_npy(&raw, "coords.npy", members.budget, 8)?;
        let all = arr.ints("").map_err(|e| e.within("coords.npy: "))?;
        let m = match arr.shape.as_slice() {
            [2, m] => *m,
            s => {
                return Err(Fail::msg(format!(
                    "coords.npy: expected shape (2, nnz), found {s:?}"
                )))
            }
        };
        if arr.fortran_order {
            (
                all.iter().step_by(2).copied().collect(),
                all.iter().skip(1).step_by(2).copied().collect(),
            )
        } else {
            (all[..m].to_vec(), all[m..].to_vec())
        }
    } else {
        return Err(Fail::msg(
            "coo archive has neither row.npy/col.npy nor coords.npy".into(),
        ));
    };
    if rows.len() != nnz || cols.len() != nnz {
        return Err(Fail::msg(format!(
            "coo lengths differ: {} rows, {} cols, {nnz} data",
            rows.len(),
            cols.len()
        )));
    }
    let rows = check_indices(&rows, "row", n)?;
    let cols = check_indices(&cols, "col", n)?;
    csr_from_triplets(n, &rows, &cols, data)
}

/// The archive's members, read against one byte budget shared by all of them.
struct Members<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    budget: &'a Budget,
    /// Uncompressed bytes of the members read so far.
    used: u128,
}

impl<'a> Members<'a> {
    fn open(bytes: &'a [u8], budget: &'a Budget) -> Result<Self, Fail> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            Fail::msg(format!(
                "not a readable zip archive (expected scipy.sparse.save_npz output): {e}"
            ))
        })?;
        Ok(Members {
            zip,
            budget,
            used: 0,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.zip.index_for_name(name).is_some()
    }

    /// Read one member, checking its declared size against what is left of the budget.
    fn raw(&mut self, name: &str) -> Result<Vec<u8>, Fail> {
        let budget = self.budget;
        let f = self.zip.by_name(name).map_err(|e| {
            Fail::msg(format!(
                "missing or unreadable '{name}' in the archive: {e}"
            ))
        })?;
        let size = f.size();
        self.used += u128::from(size);
        if self.used > budget.max_bytes as u128 {
            return Err(Fail::budget(
                format!("archive member '{name}' (uncompressed)"),
                self.used,
                budget,
            ));
        }
        // `size` fits the budget, hence usize.
        let size = usize::try_from(size).unwrap_or(0);
        let mut out = Vec::with_capacity(size);
        f.take(size as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Fail::msg(format!("'{name}': cannot decompress: {e}")))?;
        if out.len() != size {
            return Err(Fail::msg(format!(
                "'{name}': declared {size} bytes, decompressed {}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// A 1-D integer member (an index array).
    fn indices(&mut self, name: &str) -> Result<Vec<i64>, Fail> {
        let raw = self.raw(name)?;
        let a = parse_npy(&raw, name, self.budget, 8)?;
        one_d(&a, name)?;
        a.ints("").map_err(|e| e.within(&format!("{name}: ")))
    }
}

fn parse_npy<'a>(
    raw: &'a [u8],
    name: &str,
    budget: &Budget,
    elem: usize,
) -> Result<NpyArray<'a>, Fail> {
    npy::parse(raw, budget, elem).map_err(|e| e.within(&format!("{name}: ")))
}

fn one_d(a: &NpyArray<'_>, name: &str) -> Result<usize, Fail> {
    match a.shape.as_slice() {
        [m] => Ok(*m),
        s => Err(Fail::msg(format!(
            "{name}: expected a 1-D array, found shape {s:?}"
        ))),
    }
}

/// Check `0 <= v[k] < n` for all `k`, naming the first offender.
fn check_indices(v: &[i64], what: &str, n: usize) -> Result<Vec<usize>, Fail> {
    v.iter()
        .enumerate()
        .map(|(k, &x)| {
            if x >= 0 && (x as u64) < n as u64 {
                Ok(x as usize)
            } else {
                Err(Fail::msg(format!("{what}[{k}] = {x} outside 0..{n}")))
            }
        })
        .collect()
}
