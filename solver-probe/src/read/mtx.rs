//! Matrix Market `.mtx` reader.
//!
//! Supports `%%MatrixMarket matrix coordinate real|integer|pattern general|symmetric|
//! skew-symmetric` (keywords case-insensitive). Comment (`%`) and blank lines are skipped;
//! entries are 1-based. Symmetric and skew-symmetric files have their off-diagonal entries
//! mirrored (negated for skew); pattern entries are 1.0; duplicates are summed. `array`
//! (dense) and `complex`/`hermitian` files are rejected with a clear message. The declared
//! entry count is checked against the [`Budget`] before allocating and against the entries
//! actually present.

use sprs::CsMat;

use super::{check_shape, csr_from_triplets, nonfinite, Budget, Fail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Real,
    Integer,
    Pattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Symmetry {
    General,
    Symmetric,
    Skew,
}

/// Parse Matrix Market bytes into a CSR matrix.
pub(crate) fn parse_matrix(bytes: &[u8], budget: &Budget) -> Result<CsMat<f64>, Fail> {
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(k, l)| (k + 1, l.strip_suffix(b"\r").unwrap_or(l)));
    let (no, banner_line) = lines.next().ok_or_else(|| Fail::msg("empty file".into()))?;
    let (field, symmetry) = banner(text(no, banner_line)?)?;
    let (size_line, [r, c, declared]) = size(&mut lines)?;
    check_shape(r, c).map_err(|e| e.within(&format!("line {size_line}: ")))?;
    let n = r;
    let mirror = if symmetry == Symmetry::General { 1 } else { 2 };
    let need = super::triplets_peak_bytes(n, declared as u128 * mirror);
    if need > budget.max_bytes as u128 {
        return Err(Fail::budget(
            format!("line {size_line}: {declared} declared entries of a {n} x {n} matrix"),
            need,
            budget,
        ));
    }
    if let Some(max) = (n as u128).checked_mul(n as u128) {
        if declared as u128 > max {
            return Err(Fail::msg(format!(
                "line {size_line}: {declared} entries declared for a {n} x {n} matrix"
            )));
        }
    }

    // Entries. Capacity is bounded by what the file can actually hold (4 bytes per entry).
    let cap = declared.min(bytes.len() / 4) * mirror as usize;
    let mut rows = Vec::with_capacity(cap);
    let mut cols = Vec::with_capacity(cap);
    let mut vals = Vec::with_capacity(cap);
    let mut found = 0usize;
    for (no, l) in lines {
        let t = text(no, l)?;
        let t = t.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        if found == declared {
            return Err(Fail::msg(format!(
                "line {no}: more entries than the {declared} declared on line {size_line}"
            )));
        }
        let (i, j, v) = entry(no, t, field, n)?;
        found += 1;
        rows.push(i);
        cols.push(j);
        vals.push(v);
        if i != j {
            match symmetry {
                Symmetry::General => {}
                Symmetry::Symmetric => {
                    rows.push(j);
                    cols.push(i);
                    vals.push(v);
                }
                Symmetry::Skew => {
                    rows.push(j);
                    cols.push(i);
                    vals.push(-v);
                }
            }
        } else if symmetry == Symmetry::Skew && v != 0.0 {
            return Err(Fail::msg(format!(
                "line {no}: nonzero diagonal entry {v} at ({}, {}) in a skew-symmetric matrix",
                i + 1,
                j + 1
            )));
        }
    }
    if found < declared {
        return Err(Fail::msg(format!(
            "truncated: {declared} entries declared on line {size_line}, found {found}"
        )));
    }
    csr_from_triplets(n, &rows, &cols, &vals)
}

/// The field and symmetry the `%%MatrixMarket` banner (line 1) declares.
fn banner(banner: &str) -> Result<(Field, Symmetry), Fail> {
    let words: Vec<String> = banner
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    if words.first().map(String::as_str) != Some("%%matrixmarket") {
        return Err(Fail::msg("line 1: missing '%%MatrixMarket' banner".into()));
    }
    if words.len() != 5 {
        return Err(Fail::msg(format!(
            "line 1: banner should be '%%MatrixMarket matrix coordinate <field> <symmetry>', found {} words",
            words.len()
        )));
    }
    if words[1] != "matrix" {
        return Err(Fail::msg(format!(
            "line 1: object '{}' not supported (expected matrix)",
            words[1]
        )));
    }
    match words[2].as_str() {
        "coordinate" => {}
        "array" => {
            return Err(Fail::msg(
                "line 1: dense 'array' format not supported (only 'coordinate'; save dense matrices as .npy)"
                    .into(),
            ))
        }
        f => {
            return Err(Fail::msg(format!(
                "line 1: format '{f}' not supported (expected coordinate)"
            )))
        }
    }
    let field = match words[3].as_str() {
        "real" | "double" => Field::Real,
        "integer" => Field::Integer,
        "pattern" => Field::Pattern,
        "complex" => {
            return Err(Fail::msg(
                "line 1: 'complex' field not supported (expected real, integer or pattern)".into(),
            ))
        }
        f => {
            return Err(Fail::msg(format!(
                "line 1: field '{f}' not supported (expected real, integer or pattern)"
            )))
        }
    };
    let symmetry = match words[4].as_str() {
        "general" => Symmetry::General,
        "symmetric" => Symmetry::Symmetric,
        "skew-symmetric" => Symmetry::Skew,
        s => {
            return Err(Fail::msg(format!(
            "line 1: symmetry '{s}' not supported (expected general, symmetric or skew-symmetric)"
        )))
        }
    };
    Ok((field, symmetry))
}

/// The size line `rows cols entries` after the banner and any comments, with its line number.
fn size<'a>(
    lines: &mut impl Iterator<Item = (usize, &'a [u8])>,
) -> Result<(usize, [usize; 3]), Fail> {
    for (no, l) in lines {
        let t = text(no, l)?;
        let t = t.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let parts: Vec<&str> = t.split_whitespace().collect();
        if parts.len() != 3 {
            return Err(Fail::msg(format!(
                "line {no}: size line should be 'rows cols entries', found '{}'",
                t.escape_default()
            )));
        }
        let mut v = [0usize; 3];
        for (slot, p) in v.iter_mut().zip(&parts) {
            *slot = p.parse().map_err(|_| {
                Fail::msg(format!(
                    "line {no}: bad size value '{}'",
                    p.escape_default()
                ))
            })?;
        }
        return Ok((no, v));
    }
    Err(Fail::msg("truncated: no size line".into()))
}

/// One entry line of an n x n matrix: 0-based row and column, and the value (1.0 for pattern
/// files).
fn entry(no: usize, t: &str, field: Field, n: usize) -> Result<(usize, usize, f64), Fail> {
    let want = if field == Field::Pattern { 2 } else { 3 };
    let mut parts = [""; 3];
    let mut count = 0;
    for w in t.split_whitespace() {
        if count < 3 {
            parts[count] = w;
        }
        count += 1;
    }
    if count != want {
        return Err(Fail::msg(format!(
            "line {no}: expected {want} fields ({}), found {}",
            if want == 2 {
                "row col"
            } else {
                "row col value"
            },
            count
        )));
    }
    let index = |p: &str, what: &str| -> Result<usize, Fail> {
        match p.parse::<i64>() {
            Ok(v) if v >= 1 && (v as u64) <= n as u64 => Ok(v as usize - 1),
            Ok(v) => Err(Fail::msg(format!(
                "line {no}: {what} index {v} out of 1..={n}"
            ))),
            Err(_) => Err(Fail::msg(format!(
                "line {no}: bad {what} index '{}'",
                p.escape_default()
            ))),
        }
    };
    let i = index(parts[0], "row")?;
    let j = index(parts[1], "column")?;
    let v = match field {
        Field::Pattern => 1.0,
        Field::Integer => parts[2].parse::<i64>().map(|x| x as f64).map_err(|_| {
            Fail::msg(format!(
                "line {no}: bad integer value '{}'",
                parts[2].escape_default()
            ))
        })?,
        Field::Real => {
            let parsed = if parts[2].contains(['d', 'D']) {
                // Fortran-style exponent, e.g. 1.0D+00.
                parts[2].replace(['d', 'D'], "e").parse::<f64>()
            } else {
                parts[2].parse::<f64>()
            };
            parsed.map_err(|_| {
                Fail::msg(format!(
                    "line {no}: bad real value '{}'",
                    parts[2].escape_default()
                ))
            })?
        }
    };
    if !v.is_finite() {
        return Err(Fail::msg(format!(
            "line {no}: {} at ({i}, {j}) (0-based)",
            nonfinite(v)
        )));
    }
    Ok((i, j, v))
}

/// A line as UTF-8 text, or an error naming the line.
fn text(no: usize, l: &[u8]) -> Result<&str, Fail> {
    std::str::from_utf8(l).map_err(|_| Fail::msg(format!("line {no}: not valid UTF-8")))
}
