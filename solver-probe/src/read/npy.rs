//! NumPy `.npy` reader: format versions 1.0, 2.0 and 3.0.
//!
//! The header is a Python dict literal with `descr`, `fortran_order` and `shape`; it is parsed
//! by a small, depth-limited literal parser (never `eval`). The declared size is checked against
//! the [`Budget`] and against the bytes actually present before anything is allocated.
//!
//! Matrices must be 2-D, square, non-empty, in C or Fortran order, of a float, integer or
//! boolean dtype (a solver's operator saved from an integer stencil or a 0/1 adjacency is still
//! an operator); every element is read as f64 and the matrix converted to CSR dropping exact
//! zeros. Vectors have shape `(n,)` or `(n, 1)`.

use sprs::CsMat;

use super::{Budget, Fail};

/// Element type of an `.npy` array, as far as the probe understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    /// `<f8`
    F64,
    /// `<f4`
    F32,
    /// `<i8`
    I64,
    /// `<i4`
    I32,
    /// `|S<k>`: fixed-width byte string.
    Bytes(usize),
    /// `<U<k>`: fixed-width UTF-32 string.
    Unicode(usize),
    /// `<i2`
    I16,
    /// `|i1`
    I8,
    /// `<u8`
    U64,
    /// `<u4`
    U32,
    /// `<u2`
    U16,
    /// `|u1`
    U8,
    /// `|b1`
    Bool,
}

/// The dtypes read as f64 matrix or vector elements, as error messages list them.
const NUMERIC_DTYPES: &str = "<f8, <f4, <i8, <i4, <i2, |i1, <u8, <u4, <u2, |u1 or |b1";

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        let d = match descr {
            "<f8" => Dtype::F64,
            "<f4" => Dtype::F32,
            "<i8" => Dtype::I64,
            "<i4" => Dtype::I32,
            "<i2" => Dtype::I16,
            "|i1" | "<i1" => Dtype::I8,
            "<u8" => Dtype::U64,
            "<u4" => Dtype::U32,
            "<u2" => Dtype::U16,
            "|u1" | "<u1" => Dtype::U8,
            "|b1" => Dtype::Bool,
            _ => {
                if let Some(k) = descr.strip_prefix("|S") {
                    Dtype::Bytes(k.parse().ok()?)
                } else if let Some(k) = descr.strip_prefix("<U") {
                    Dtype::Unicode(k.parse().ok()?)
                } else {
                    return None;
                }
            }
        };
        Some(d)
    }

    fn item_size(self) -> Option<usize> {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => Some(8),
            Dtype::F32 | Dtype::I32 | Dtype::U32 => Some(4),
            Dtype::I16 | Dtype::U16 => Some(2),
            Dtype::I8 | Dtype::U8 | Dtype::Bool => Some(1),
            Dtype::Bytes(k) => Some(k),
            Dtype::Unicode(k) => k.checked_mul(4),
        }
    }
}

/// A parsed `.npy` array borrowing its data from the file bytes.
#[derive(Debug)]
pub(crate) struct NpyArray<'a> {
    pub descr: String,
    pub dtype: Dtype,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl NpyArray<'_> {
    /// Number of elements (product of the shape; 1 for a 0-d array).
    pub fn len(&self) -> usize {
        // Checked at parse time not to overflow.
        self.shape.iter().product()
    }

    /// Element `k` in storage order as f64 (numeric dtypes; NaN for strings, which
    /// [`Self::require_numeric`] rejects first). 64-bit integers beyond 2^53 round to the
    /// nearest f64, as NumPy's `astype(float64)` does.
    fn value_at(&self, k: usize) -> f64 {
        fn le<const N: usize>(data: &[u8], k: usize) -> [u8; N] {
            let mut b = [0u8; N];
            b.copy_from_slice(&data[N * k..N * k + N]);
            b
        }
        let d = self.data;
        match self.dtype {
            Dtype::F64 => f64::from_le_bytes(le(d, k)),
            Dtype::F32 => f64::from(f32::from_le_bytes(le(d, k))),
            Dtype::I64 => i64::from_le_bytes(le(d, k)) as f64,
            Dtype::I32 => f64::from(i32::from_le_bytes(le(d, k))),
            Dtype::I16 => f64::from(i16::from_le_bytes(le(d, k))),
            Dtype::I8 => f64::from(i8::from_le_bytes(le(d, k))),
            Dtype::U64 => u64::from_le_bytes(le(d, k)) as f64,
            Dtype::U32 => f64::from(u32::from_le_bytes(le(d, k))),
            Dtype::U16 => f64::from(u16::from_le_bytes(le(d, k))),
            Dtype::U8 => f64::from(d[k]),
            // NumPy writes True as 1 and False as 0; any other byte is still "true".
            Dtype::Bool => f64::from(u8::from(d[k] != 0)),
            Dtype::Bytes(_) | Dtype::Unicode(_) => f64::NAN,
        }
    }

    /// Require a dtype whose elements read as numbers, naming `what` in the error.
    pub fn require_numeric(&self, what: &str) -> Result<(), Fail> {
        match self.dtype {
            Dtype::Bytes(_) | Dtype::Unicode(_) => Err(Fail::msg(format!(
                "{what}dtype '{}' not supported (expected {NUMERIC_DTYPES})",
                self.descr
            ))),
            _ => Ok(()),
        }
    }

    /// All elements in storage order as f64 (float, integer and boolean dtypes).
    pub fn floats(&self, what: &str) -> Result<Vec<f64>, Fail> {
        self.require_numeric(what)?;
        Ok((0..self.len()).map(|k| self.value_at(k)).collect())
    }

    /// All elements in storage order as i64 (`<i4`/`<i8` only).
    pub fn ints(&self, what: &str) -> Result<Vec<i64>, Fail> {
        match self.dtype {
            Dtype::I64 => Ok(decode_le(self.data, i64::from_le_bytes)),
            Dtype::I32 => Ok(decode_le(self.data, |b| i64::from(i32::from_le_bytes(b)))),
            _ => Err(Fail::msg(format!(
                "{what}dtype '{}' not supported (expected <i4 or <i8)",
                self.descr
            ))),
        }
    }

    /// The value of a 0-d (or 1-element) string array: `|S<k>` or `<U<k>`.
    pub fn string(&self, what: &str) -> Result<String, Fail> {
        if self.len() != 1 {
            return Err(Fail::msg(format!(
                "{what}expected a single string, found shape {:?}",
                self.shape
            )));
        }
        match self.dtype {
            Dtype::Bytes(_) => {
                let end = self
                    .data
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(self.data.len());
                Ok(String::from_utf8_lossy(&self.data[..end]).into_owned())
            }
            Dtype::Unicode(_) => Ok(self
                .data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .take_while(|&u| u != 0)
                .map(|u| char::from_u32(u).unwrap_or('\u{fffd}'))
                .collect()),
            _ => Err(Fail::msg(format!(
                "{what}dtype '{}' not supported (expected |S or <U string)",
                self.descr
            ))),
        }
    }
}

/// Each whole N-byte little-endian element of `data`, converted by `from`.
fn decode_le<const N: usize, T>(data: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            from(b)
        })
        .collect()
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parse an `.npy` file's header and locate its data.
///
/// `elem_budget_size` is the number of bytes each element will occupy once converted (8 for
/// f64 or index values); `declared elements × elem_budget_size` is checked against the budget
/// before the data length is checked, so a lying header is reported as over budget.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    budget: &Budget,
    elem_budget_size: usize,
) -> Result<NpyArray<'a>, Fail> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Fail::msg(
            "not an .npy file (missing \\x93NUMPY magic)".to_string(),
        ));
    }
    let (major, minor) = match (bytes.get(6), bytes.get(7)) {
        (Some(&a), Some(&b)) => (a, b),
        _ => return Err(Fail::msg("truncated .npy header (no version)".into())),
    };
    let (header_len, start) = match major {
        1 => match bytes.get(8..10) {
            Some(b) => (usize::from(u16::from_le_bytes([b[0], b[1]])), 10usize),
            None => return Err(Fail::msg("truncated .npy header (no header length)".into())),
        },
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                12usize,
            ),
            None => return Err(Fail::msg("truncated .npy header (no header length)".into())),
        },
        _ => {
            return Err(Fail::msg(format!(
                "unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
            )))
        }
    };
    let end = start.saturating_add(header_len);
    let header = bytes.get(start..end).ok_or_else(|| {
        Fail::msg(format!(
            "truncated .npy header: declares {header_len} bytes, file has {}",
            bytes.len().saturating_sub(start)
        ))
    })?;
    let header = if major == 3 {
        String::from_utf8(header.to_vec())
            .map_err(|_| Fail::msg("header is not valid UTF-8".into()))?
    } else {
        header.iter().map(|&b| char::from(b)).collect::<String>()
    };
    let (descr, fortran_order, shape) = header_fields(&header)?;
    let dtype = Dtype::parse(&descr).ok_or_else(|| {
        Fail::msg(format!(
            "dtype '{descr}' not supported (expected {NUMERIC_DTYPES})"
        ))
    })?;
    let item = dtype
        .item_size()
        .ok_or_else(|| Fail::msg(format!("dtype '{descr}' too wide")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Fail::budget(format!("shape {shape:?}"), u128::MAX, budget))?;
    let declared = (count as u128) * (elem_budget_size.max(item) as u128);
    if declared > budget.max_bytes as u128 {
        return Err(Fail::budget(format!("shape {shape:?}"), declared, budget));
    }
    let data_len = count
        .checked_mul(item)
        .ok_or_else(|| Fail::budget(format!("shape {shape:?}"), u128::MAX, budget))?;
    let have = bytes.len() - end;
    if have < data_len {
        return Err(Fail::msg(format!(
            "truncated data: shape {shape:?} of '{descr}' needs {data_len} bytes, file has {have}"
        )));
    }
    if have > data_len {
        return Err(Fail::msg(format!(
            "{} unexpected trailing bytes after the data of shape {shape:?}",
            have - data_len
        )));
    }
    Ok(NpyArray {
        descr,
        dtype,
        fortran_order,
        shape,
        data: &bytes[end..],
    })
}

/// The `descr`, `fortran_order` and `shape` entries of an `.npy` header dict; other keys are
/// ignored, a missing or mistyped one is an error naming it.
fn header_fields(header: &str) -> Result<(String, bool, Vec<usize>), Fail> {
    let dict = match literal::parse(header) {
        Ok(literal::Value::Dict(d)) => d,
        Ok(_) => return Err(Fail::msg("header is not a dict".into())),
        Err(e) => return Err(Fail::msg(format!("malformed header: {e}"))),
    };
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in dict {
        match (k.as_str(), v) {
            ("descr", literal::Value::Str(s)) => descr = Some(s),
            ("descr", _) => return Err(Fail::msg(
                "header 'descr' is not a simple dtype string (structured dtypes are not supported)"
                    .into(),
            )),
            ("fortran_order", literal::Value::Bool(b)) => fortran = Some(b),
            ("shape", literal::Value::Tuple(t)) => {
                let mut dims = Vec::with_capacity(t.len());
                for d in t {
                    match d {
                        literal::Value::Int(i) if i >= 0 => {
                            dims.push(usize::try_from(i).map_err(|_| {
                                Fail::msg(format!("header shape dimension {i} too large"))
                            })?)
                        }
                        _ => {
                            return Err(Fail::msg(
                                "header 'shape' must be a tuple of non-negative integers".into(),
                            ))
                        }
                    }
                }
                shape = Some(dims);
            }
            _ => {}
        }
    }
    let descr = descr.ok_or_else(|| Fail::msg("header has no 'descr'".into()))?;
    let fortran_order =
        fortran.ok_or_else(|| Fail::msg("header has no boolean 'fortran_order'".into()))?;
    let shape = shape.ok_or_else(|| Fail::msg("header has no tuple 'shape'".into()))?;
    Ok((descr, fortran_order, shape))
}

/// Parse a dense 2-D square `.npy` matrix into CSR, dropping exact zeros.
pub(crate) fn parse_matrix(bytes: &[u8], budget: &Budget) -> Result<CsMat<f64>, Fail> {
    let a = parse(bytes, budget, 8)?;
    a.require_numeric("")?;
    let (r, c) = match a.shape.as_slice() {
        [r, c] => (*r, *c),
        s => {
            return Err(Fail::msg(format!(
                "expected a 2-D matrix, found shape {s:?}"
            )))
        }
    };
    super::check_shape(r, c)?;
    let n = r;
    let mut indptr = Vec::with_capacity(n + 1);
    let mut indices = Vec::new();
    let mut data = Vec::new();
    indptr.push(0);
    for i in 0..n {
        for j in 0..n {
            let k = if a.fortran_order {
                j * n + i
            } else {
                i * n + j
            };
            let v = a.value_at(k);
            if !v.is_finite() {
                return Err(Fail::msg(format!("{} at ({i}, {j})", super::nonfinite(v))));
            }
            if v != 0.0 {
                indices.push(j);
                data.push(v);
            }
        }
        indptr.push(indices.len());
    }
    CsMat::try_new((n, n), indptr, indices, data)
        .map_err(|e| Fail::msg(format!("internal CSR construction failed: {}", e.3)))
}

/// Parse a vector `.npy` of shape `(n,)` or `(n, 1)`.
pub(crate) fn parse_vector(bytes: &[u8], budget: &Budget) -> Result<Vec<f64>, Fail> {
    let a = parse(bytes, budget, 8)?;
    a.require_numeric("")?;
    match a.shape.as_slice() {
        [_] | [_, 1] => {}
        s => {
            return Err(Fail::msg(format!(
                "expected a vector of shape (n,) or (n, 1), found shape {s:?}"
            )))
        }
    }
    let v = a.floats("")?;
    if v.is_empty() {
        return Err(Fail::msg("empty vector (length 0)".into()));
    }
    if let Some((k, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Fail::msg(format!("{} at index {k}", super::nonfinite(*x))));
    }
    Ok(v)
}

mod literal {
    //! A minimal, depth-limited parser for the Python literals found in `.npy` headers:
    //! strings without escapes, integers, `True`/`False`/`None`, tuples, lists and dicts.
    /// A Python literal value.
    #[derive(Debug)]
    pub enum Value {
        Str(String),
        Int(i128),
        Bool(bool),
        None,
        Tuple(Vec<Value>),
        Dict(Vec<(String, Value)>),
    }

    const MAX_DEPTH: usize = 16;

    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }

    pub fn parse(s: &str) -> Result<Value, String> {
        let mut p = P {
            s: s.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("unexpected text at byte {}", p.i));
        }
        Ok(v)
    }

    impl P<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }

        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }

        fn expect(&mut self, c: u8) -> Result<(), String> {
            if self.peek() == Some(c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected '{}' at byte {}", char::from(c), self.i))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, String> {
            if depth > MAX_DEPTH {
                return Err("nesting too deep".into());
            }
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    let mut items = Vec::new();
                    loop {
                        if self.peek() == Some(b'}') {
                            self.i += 1;
                            return Ok(Value::Dict(items));
                        }
                        let key = match self.value(depth + 1)? {
                            Value::Str(s) => s,
                            _ => {
                                return Err(format!("dict key is not a string at byte {}", self.i))
                            }
                        };
                        self.expect(b':')?;
                        let v = self.value(depth + 1)?;
                        items.push((key, v));
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {}
                            _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
                        }
                    }
                }
                Some(b'(') | Some(b'[') => {
                    let close = if self.s[self.i] == b'(' { b')' } else { b']' };
                    self.i += 1;
                    let mut items = Vec::new();
                    loop {
                        if self.peek() == Some(close) {
                            self.i += 1;
                            return Ok(Value::Tuple(items));
                        }
                        items.push(self.value(depth + 1)?);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(c) if c == close => {}
                            _ => return Err(format!("expected ',' at byte {}", self.i)),
                        }
                    }
                }
                Some(q @ (b'\'' | b'"')) => {
                    self.i += 1;
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i] != q {
                        if self.s[self.i] == b'\\' {
                            return Err(format!("escape sequence in string at byte {}", self.i));
                        }
                        self.i += 1;
                    }
                    if self.i >= self.s.len() {
                        return Err("unterminated string".into());
                    }
                    let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                    self.i += 1;
                    Ok(Value::Str(text))
                }
                Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                    let start = self.i;
                    self.i += 1;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    // Python 2 era headers may write long integers as `3L`.
                    let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                    if self.s.get(self.i) == Some(&b'L') {
                        self.i += 1;
                    }
                    text.parse::<i128>()
                        .map(Value::Int)
                        .map_err(|_| format!("bad integer '{text}' at byte {start}"))
                }
                Some(c) if c.is_ascii_alphabetic() => {
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
                        self.i += 1;
                    }
                    match &self.s[start..self.i] {
                        b"True" => Ok(Value::Bool(true)),
                        b"False" => Ok(Value::Bool(false)),
                        b"None" => Ok(Value::None),
                        w => Err(format!(
                            "unexpected word '{}' at byte {start}",
                            String::from_utf8_lossy(w)
                        )),
                    }
                }
                Some(c) => Err(format!(
                    "unexpected character '{}' at byte {}",
                    char::from(c).escape_default(),
                    self.i
                )),
                None => Err("unexpected end of header".into()),
            }
        }
    }
}
