//! Reader error paths: every error names the file and what is wrong and where, budgets are
//! checked before allocating, and arbitrary or corrupted bytes never make a parser panic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::io::{Cursor, Write};
use std::path::Path;

use proptest::prelude::*;
use solver_probe::read::{
    parse_matrix_bytes, parse_vector_bytes, read_matrix, read_vector, Budget, Format, ReadError,
};

/// An `.npy` file (version `major`) with the given header fields and raw data.
fn npy(major: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    let pre = if major == 1 { 10 } else { 12 };
    let mut header = dict.into_bytes();
    while (pre + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.push(major);
    out.push(0);
    if major == 1 {
        out.extend((header.len() as u16).to_le_bytes());
    } else {
        out.extend((header.len() as u32).to_le_bytes());
    }
    out.extend(header);
    out.extend(data);
    out
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn npz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in members {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file(*name, opts).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

/// A 3×3 CSR `.npz` with the given arrays.
fn csr_npz(format: &[u8], indptr: &[i32], indices: &[i32], data: &[f64]) -> Vec<u8> {
    npz(&[
        ("format.npy", npy(1, "|S3", false, "()", format)),
        ("shape.npy", npy(1, "<i4", false, "(2,)", &i32s(&[3, 3]))),
        (
            "indptr.npy",
            npy(
                1,
                "<i4",
                false,
                &format!("({},)", indptr.len()),
                &i32s(indptr),
            ),
        ),
        (
            "indices.npy",
            npy(
                1,
                "<i4",
                false,
                &format!("({},)", indices.len()),
                &i32s(indices),
            ),
        ),
        (
            "data.npy",
            npy(1, "<f8", false, &format!("({},)", data.len()), &f64s(data)),
        ),
    ])
}

fn err(format: Format, bytes: &[u8], file: &str) -> String {
    match parse_matrix_bytes(format, bytes, &Budget::default(), file) {
        Ok(m) => panic!("{file}: expected an error, got a {:?} matrix", m.shape()),
        Err(e) => e.to_string(),
    }
}

fn mtx_err(text: &str) -> String {
    err(Format::Mtx, text.as_bytes(), "a.mtx")
}

fn assert_has(msg: &str, want: &str) {
    assert!(msg.contains(want), "message {msg:?} lacks {want:?}");
}

#[test]
fn mtx_errors_name_file_line_and_problem() {
    let head = "%%MatrixMarket matrix coordinate real general\n% c\n3 3 2\n";
    let m = mtx_err(&format!("{head}1 1 1.0\n0 2 3.0\n"));
    assert_eq!(m, "a.mtx: line 5: row index 0 out of 1..=3");
    assert_has(
        &mtx_err(&format!("{head}1 1 1.0\n2 4 3.0\n")),
        "line 5: column index 4 out of 1..=3",
    );
    assert_has(
        &mtx_err(&format!("{head}1 1 1.0\n")),
        "truncated: 2 entries declared on line 3, found 1",
    );
    assert_has(
        &mtx_err(&format!("{head}1 1 1\n2 2 1\n3 3 1\n")),
        "line 6: more entries than the 2 declared",
    );
    assert_has(
        &mtx_err(&format!("{head}1 1 nan\n2 2 1\n")),
        "line 4: NaN at (0, 0)",
    );
    assert_has(
        &mtx_err(&format!("{head}1 1 1\n2 2 -inf\n")),
        "line 5: -Inf at (1, 1)",
    );
    assert_has(
        &mtx_err(&format!("{head}1 1 x\n2 2 1\n")),
        "line 4: bad real value 'x'",
    );
    // The count is the fields the line has, not the ones the reader wanted.
    assert_has(
        &mtx_err(&format!("{head}1 1\n2 2 1\n")),
        "line 4: expected 3 fields (row col value), found 2",
    );
    assert_has(
        &mtx_err("%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n"),
        "'array' format not supported",
    );
    assert_has(
        &mtx_err("%%MatrixMarket matrix coordinate complex general\n1 1 1\n1 1 1 0\n"),
        "'complex' field not supported",
    );
    assert_has(
        &mtx_err("%%MatrixMarket matrix coordinate real general\n2 3 0\n"),
        "line 2: non-square shape (2 x 3)",
    );
    assert_has(
        &mtx_err("%%MatrixMarket matrix coordinate real general\n0 0 0\n"),
        "empty matrix (0 x 0)",
    );
    assert_has(
        &mtx_err("hello\n"),
        "line 1: missing '%%MatrixMarket' banner",
    );
    let big = mtx_err("%%MatrixMarket matrix coordinate real general\n100 100 10000000000\n");
    assert_has(&big, "a.mtx: line 2: 10000000000 declared entries");
    assert_has(
        &big,
        "560000002424 bytes, over the memory budget of 2147483648 bytes",
    );
}

#[test]
fn mtx_variants_parse() {
    let b = Budget::default();
    let skew = "%%MatrixMarket MATRIX Coordinate Real Skew-Symmetric\n3 3 1\n3 1 2.5\n";
    let a = parse_matrix_bytes(Format::Mtx, skew.as_bytes(), &b, "k.mtx").expect("skew");
    let d = a.to_dense();
    assert_eq!((d[[2, 0]], d[[0, 2]]), (2.5, -2.5));
    let pat = "%%MatrixMarket matrix coordinate pattern symmetric\n2 2 2\n1 1\n2 1\n";
    let d = parse_matrix_bytes(Format::Mtx, pat.as_bytes(), &b, "p.mtx").expect("pattern");
    assert_eq!(dense2(&d), [[1.0, 1.0], [1.0, 0.0]]);
    let dup =
        "%%MatrixMarket matrix coordinate integer general\r\n2 2 3\r\n1 1 2\r\n1 1 3\r\n2 2 -1\r\n";
    let d = parse_matrix_bytes(Format::Mtx, dup.as_bytes(), &b, "i.mtx").expect("dup");
    assert_eq!(dense2(&d), [[5.0, 0.0], [0.0, -1.0]]);
}

/// Integer and boolean `.npy` matrices (an integer stencil, a 0/1 adjacency) and an `.npz`
/// whose data is integer, written to real files and read back as f64.
#[test]
fn integer_and_boolean_npy_read_as_f64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Budget::default();
    type Case = (&'static str, Vec<u8>, [[f64; 2]; 2]);
    let cases: [Case; 6] = [
        ("<i4", i32s(&[4, -1, -1, 4]), [[4.0, -1.0], [-1.0, 4.0]]),
        (
            "<i8",
            [-3i64, 0, 7, 1 << 40]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            [[-3.0, 0.0], [7.0, 1099511627776.0]],
        ),
        ("|b1", vec![1, 0, 0, 1], [[1.0, 0.0], [0.0, 1.0]]),
        ("|u1", vec![255, 0, 2, 1], [[255.0, 0.0], [2.0, 1.0]]),
        ("|i1", vec![0x80, 0, 0, 0x7f], [[-128.0, 0.0], [0.0, 127.0]]),
        (
            "<u2",
            [65535u16, 0, 0, 3]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            [[65535.0, 0.0], [0.0, 3.0]],
        ),
    ];
    for (descr, data, want) in cases {
        let path = dir.path().join(format!("m{}.npy", &descr[1..]));
        std::fs::write(&path, npy(1, descr, false, "(2, 2)", &data)).expect("write");
        let a = read_matrix(&path, &b).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(dense2(&a), want, "{descr}");
        // Exact zeros are dropped whatever the dtype.
        let zeros = want.iter().flatten().filter(|v| **v == 0.0).count();
        assert_eq!(a.nnz(), 4 - zeros, "{descr}");
    }
    // Fortran order applies to integer data too.
    let path = dir.path().join("f.npy");
    std::fs::write(&path, npy(1, "<i4", true, "(2, 2)", &i32s(&[1, 2, 3, 4]))).expect("write");
    let a = read_matrix(&path, &b).expect("fortran i4");
    assert_eq!(dense2(&a), [[1.0, 3.0], [2.0, 4.0]]);
    // A vector of booleans is a right-hand side of ones and zeros.
    let path = dir.path().join("b.npy");
    std::fs::write(&path, npy(1, "|b1", false, "(3,)", &[1, 0, 1])).expect("write");
    assert_eq!(
        read_vector(&path, &b).expect("bool vector"),
        [1.0, 0.0, 1.0]
    );
    // A SciPy CSR whose data is integer.
    let data: Vec<u8> = [2i64, -1, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bytes = npz(&[
        ("format.npy", npy(1, "|S3", false, "()", b"csr")),
        ("shape.npy", npy(1, "<i4", false, "(2,)", &i32s(&[2, 2]))),
        (
            "indptr.npy",
            npy(1, "<i4", false, "(3,)", &i32s(&[0, 2, 3])),
        ),
        (
            "indices.npy",
            npy(1, "<i4", false, "(3,)", &i32s(&[0, 1, 1])),
        ),
        ("data.npy", npy(1, "<i8", false, "(3,)", &data)),
    ]);
    let path = dir.path().join("m.npz");
    std::fs::write(&path, bytes).expect("write");
    let a = read_matrix(&path, &b).expect("integer npz");
    assert_eq!(dense2(&a), [[2.0, -1.0], [0.0, 5.0]]);
    // Matrix Market integer and pattern fields, from real files.
    let path = dir.path().join("i.mtx");
    std::fs::write(
        &path,
        "%%MatrixMarket matrix coordinate integer symmetric\n2 2 2\n1 1 3\n2 1 -2\n",
    )
    .expect("write");
    assert_eq!(
        dense2(&read_matrix(&path, &b).expect("integer mtx")),
        [[3.0, -2.0], [-2.0, 0.0]]
    );
    let path = dir.path().join("p.mtx");
    std::fs::write(
        &path,
        "%%MatrixMarket matrix coordinate pattern general\n2 2 2\n1 2\n2 2\n",
    )
    .expect("write");
    assert_eq!(
        dense2(&read_matrix(&path, &b).expect("pattern mtx")),
        [[0.0, 1.0], [0.0, 1.0]]
    );
}

fn dense2(a: &sprs::CsMat<f64>) -> [[f64; 2]; 2] {
    let g = |i, j| a.get(i, j).copied().unwrap_or(0.0);
    [[g(0, 0), g(0, 1)], [g(1, 0), g(1, 1)]]
}

#[test]
fn npy_errors() {
    let c16 = npy(1, "<c16", false, "(2, 2)", &[0; 64]);
    assert_eq!(
        err(Format::Npy, &c16, "m.npy"),
        "m.npy: dtype '<c16' not supported (expected <f8, <f4, <i8, <i4, <i2, |i1, <u8, <u4, <u2, |u1 or |b1)"
    );
    let text = npy(1, "<U3", false, "(1, 1)", &[0; 12]);
    assert_has(
        &err(Format::Npy, &text, "m.npy"),
        "dtype '<U3' not supported (expected <f8, <f4",
    );
    let trunc = npy(1, "<f8", false, "(3, 3)", &f64s(&[1.0; 8]));
    assert_has(
        &err(Format::Npy, &trunc, "m.npy"),
        "m.npy: truncated data: shape [3, 3] of '<f8' needs 72 bytes, file has 64",
    );
    let nan = npy(1, "<f8", false, "(2, 2)", &f64s(&[1.0, 0.0, f64::NAN, 1.0]));
    assert_has(&err(Format::Npy, &nan, "m.npy"), "m.npy: NaN at (1, 0)");
    let nan_f = npy(
        1,
        "<f8",
        true,
        "(2, 2)",
        &f64s(&[1.0, 0.0, f64::INFINITY, 1.0]),
    );
    assert_has(&err(Format::Npy, &nan_f, "m.npy"), "+Inf at (0, 1)");
    let rect = npy(1, "<f8", false, "(2, 3)", &f64s(&[1.0; 6]));
    assert_has(
        &err(Format::Npy, &rect, "m.npy"),
        "non-square shape (2 x 3)",
    );
    let empty = npy(1, "<f8", false, "(0, 0)", &[]);
    assert_has(&err(Format::Npy, &empty, "m.npy"), "empty matrix (0 x 0)");
    let huge = npy(1, "<f8", false, "(100000, 100000)", &[]);
    let e = parse_matrix_bytes(Format::Npy, &huge, &Budget::default(), "m.npy").unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::OverBudget {
                declared: 80_000_000_000,
                budget: 2_147_483_648,
                ..
            }
        ),
        "{e}"
    );
    assert_has(&e.to_string(), "m.npy: shape [100000, 100000] needs 80000000000 bytes, over the memory budget of 2147483648 bytes");
    let vec3 = npy(1, "<f8", false, "(3,)", &f64s(&[1.0; 3]));
    assert_has(
        &err(Format::Npy, &vec3, "m.npy"),
        "expected a 2-D matrix, found shape [3]",
    );
    assert_has(
        &err(Format::Npy, b"PK\x03\x04", "m.npy"),
        "m.npy: not an .npy file",
    );
    let bad_ver = [b"\x93NUMPY".as_slice(), &[9, 0, 0, 0]].concat();
    assert_has(
        &err(Format::Npy, &bad_ver, "m.npy"),
        "unsupported .npy format version 9.0",
    );
    let small = Budget { max_bytes: 100 };
    let m = npy(1, "<f8", false, "(4, 4)", &f64s(&[1.0; 16]));
    assert!(matches!(
        parse_matrix_bytes(Format::Npy, &m, &small, "m.npy"),
        Err(ReadError::OverBudget {
            declared: 128,
            budget: 100,
            ..
        })
    ));
}

#[test]
fn npy_versions_orders_and_f32() {
    let b = Budget::default();
    let vals = [1.0, 2.0, 0.0, 4.0];
    for major in [1, 2, 3] {
        let c = npy(major, "<f8", false, "(2, 2)", &f64s(&vals));
        let a = parse_matrix_bytes(Format::Npy, &c, &b, "c.npy").expect("c order");
        assert_eq!(a.nnz(), 3, "exact zeros dropped");
        assert_eq!(a.get(0, 1), Some(&2.0));
        let f = npy(major, "<f8", true, "(2, 2)", &f64s(&vals));
        let a = parse_matrix_bytes(Format::Npy, &f, &b, "f.npy").expect("f order");
        assert_eq!(a.get(1, 0), Some(&2.0));
    }
    let f32s: Vec<u8> = [0.5f32, 0.0, 0.0, 0.25]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let a = parse_matrix_bytes(
        Format::Npy,
        &npy(1, "<f4", false, "(2, 2)", &f32s),
        &b,
        "s.npy",
    )
    .expect("f32");
    assert_eq!(a.get(1, 1), Some(&0.25));
}

#[test]
fn vector_shapes() {
    let b = Budget::default();
    let v = npy(1, "<f8", false, "(3, 1)", &f64s(&[1.0, 2.0, 3.0]));
    assert_eq!(
        parse_vector_bytes(&v, &b, "b.npy").expect("column"),
        vec![1.0, 2.0, 3.0]
    );
    let m = npy(1, "<f8", false, "(3, 2)", &f64s(&[1.0; 6]));
    assert_has(
        &parse_vector_bytes(&m, &b, "b.npy").unwrap_err().to_string(),
        "b.npy: expected a vector of shape (n,) or (n, 1), found shape [3, 2]",
    );
    let nan = npy(1, "<f8", false, "(2,)", &f64s(&[1.0, f64::NAN]));
    assert_has(
        &parse_vector_bytes(&nan, &b, "b.npy")
            .unwrap_err()
            .to_string(),
        "NaN at index 1",
    );
}

#[test]
fn npz_errors_and_duplicates() {
    let ok = csr_npz(b"csr", &[0, 2, 3, 4], &[2, 0, 1, 2], &[3.0, 1.0, 2.0, 4.0]);
    let a =
        parse_matrix_bytes(Format::Npz, &ok, &Budget::default(), "m.npz").expect("unsorted csr");
    assert_eq!(
        a.outer_view(0).map(|r| r.indices().to_vec()),
        Some(vec![0, 2])
    );
    let csc = csr_npz(b"csc", &[0, 2, 3, 4], &[2, 0, 1, 2], &[3.0, 1.0, 2.0, 4.0]);
    let a = parse_matrix_bytes(Format::Npz, &csc, &Budget::default(), "m.npz").expect("csc");
    assert_eq!(a.get(2, 0), Some(&3.0));

    let bad = csr_npz(b"csr", &[0, 2, 3, 4], &[2, 0, 70, 2], &[1.0; 4]);
    assert_eq!(
        err(Format::Npz, &bad, "m.npz"),
        "m.npz: indices[2] = 70 outside 0..3"
    );
    let nonmono = csr_npz(b"csr", &[0, 3, 2, 4], &[0, 1, 2, 2], &[1.0; 4]);
    assert_has(
        &err(Format::Npz, &nonmono, "m.npz"),
        "indptr not monotone: indptr[2] = 2 < indptr[1] = 3",
    );
    let end = csr_npz(b"csr", &[0, 1, 2, 3], &[0, 1, 2, 2], &[1.0; 4]);
    assert_has(
        &err(Format::Npz, &end, "m.npz"),
        "indptr[3] = 3 but data has 4 entries",
    );
    let len = csr_npz(b"csr", &[0, 1, 2, 3], &[0, 1, 2], &[1.0; 4]);
    assert_has(
        &err(Format::Npz, &len, "m.npz"),
        "indices has 3 entries but data has 4",
    );
    let bsr = csr_npz(b"bsr", &[0, 1, 2, 3], &[0, 1, 2], &[1.0; 3]);
    assert_has(
        &err(Format::Npz, &bsr, "m.npz"),
        "sparse format 'bsr' not supported",
    );
    let inf = csr_npz(
        b"csr",
        &[0, 1, 2, 3],
        &[0, 1, 2],
        &[1.0, f64::INFINITY, 1.0],
    );
    assert_has(&err(Format::Npz, &inf, "m.npz"), "+Inf at (1, 1)");
    assert_has(
        &err(Format::Npz, b"not a zip", "m.npz"),
        "m.npz: not a readable zip archive",
    );
    let missing = npz(&[("format.npy", npy(1, "|S3", false, "()", b"csr"))]);
    assert_has(&err(Format::Npz, &missing, "m.npz"), "'shape.npy'");

    // COO (with <U3 format) with duplicates that must be summed.
    let u3: Vec<u8> = "coo"
        .chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect();
    let coo = npz(&[
        ("format.npy", npy(1, "<U3", false, "()", &u3)),
        (
            "shape.npy",
            npy(
                1,
                "<i8",
                false,
                "(2,)",
                &[2i64, 2]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<_>>(),
            ),
        ),
        ("row.npy", npy(1, "<i4", false, "(3,)", &i32s(&[1, 0, 1]))),
        ("col.npy", npy(1, "<i4", false, "(3,)", &i32s(&[0, 0, 0]))),
        (
            "data.npy",
            npy(1, "<f8", false, "(3,)", &f64s(&[1.0, 5.0, 2.0])),
        ),
    ]);
    let a = parse_matrix_bytes(Format::Npz, &coo, &Budget::default(), "c.npz").expect("coo");
    assert_eq!(
        (a.nnz(), a.get(1, 0), a.get(0, 0)),
        (2, Some(&3.0), Some(&5.0))
    );

    let rect = npz(&[
        ("format.npy", npy(1, "|S3", false, "()", b"csr")),
        ("shape.npy", npy(1, "<i4", false, "(2,)", &i32s(&[2, 5]))),
    ]);
    assert_has(
        &err(Format::Npz, &rect, "m.npz"),
        "m.npz: non-square shape (2 x 5)",
    );
    let lying = npz(&[
        ("format.npy", npy(1, "|S3", false, "()", b"csr")),
        ("shape.npy", npy(1, "<i4", false, "(2,)", &i32s(&[3, 3]))),
        ("data.npy", npy(1, "<f8", false, "(1000000000,)", &[])),
    ]);
    let e = parse_matrix_bytes(Format::Npz, &lying, &Budget::default(), "m.npz").unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::OverBudget {
                declared: 16_000_000_000,
                ..
            }
        ),
        "{e}"
    );
    assert_has(&e.to_string(), "m.npz: data.npy: shape [1000000000]");
}

#[test]
fn files_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("x.txt");
    std::fs::write(&p, "1 2 3").expect("write");
    let e = read_matrix(&p, &Budget::default()).unwrap_err();
    assert_has(&e.to_string(), "x.txt: unsupported file extension");
    let missing = dir.path().join("none.mtx");
    let e = read_matrix(&missing, &Budget::default()).unwrap_err();
    assert!(matches!(e, ReadError::Io { .. }));
    assert_has(&e.to_string(), "none.mtx: ");
    let m = dir.path().join("m.MTX");
    std::fs::write(
        &m,
        "%%MatrixMarket matrix coordinate real general\n1 1 1\n1 1 2\n",
    )
    .expect("write");
    assert_eq!(
        read_matrix(&m, &Budget::default()).expect("read").get(0, 0),
        Some(&2.0)
    );
    let e = read_matrix(&m, &Budget { max_bytes: 10 }).unwrap_err();
    assert_has(&e.to_string(), "the file itself needs");
    let e = read_vector(Path::new("b.mtx"), &Budget::default()).unwrap_err();
    assert_has(&e.to_string(), "b.mtx: a vector must be an .npy file");
}

fn valid_inputs() -> Vec<(Format, Vec<u8>)> {
    vec![
        (
            Format::Npy,
            npy(1, "<f8", false, "(2, 2)", &f64s(&[1.0, 2.0, 0.0, 4.0])),
        ),
        (Format::Npy, npy(2, "<f4", true, "(1, 1)", &[0, 0, 128, 63])),
        (
            Format::Npz,
            csr_npz(b"csr", &[0, 2, 3, 4], &[2, 0, 1, 2], &[3.0, 1.0, 2.0, 4.0]),
        ),
        (
            Format::Mtx,
            b"%%MatrixMarket matrix coordinate real symmetric\n3 3 3\n1 1 1.5\n3 1 2\n2 2 1\n"
                .to_vec(),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let b = Budget::default();
        for f in [Format::Npy, Format::Npz, Format::Mtx] {
            let _ = parse_matrix_bytes(f, &bytes, &b, "fuzz");
        }
        let _ = parse_vector_bytes(&bytes, &b, "fuzz");
        // Arbitrary bytes after a valid prefix exercise the header and dict parsers.
        let mut npy_like = b"\x93NUMPY\x01\x00".to_vec();
        npy_like.extend(&bytes);
        let _ = parse_matrix_bytes(Format::Npy, &npy_like, &b, "fuzz");
        let mut mtx_like = b"%%MatrixMarket matrix coordinate real general\n".to_vec();
        mtx_like.extend(&bytes);
        let _ = parse_matrix_bytes(Format::Mtx, &mtx_like, &b, "fuzz");
    }

    #[test]
    fn corrupted_valid_files_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let (f, mut bytes) = valid_inputs().swap_remove(which);
        for (pos, val) in edits {
            let k = pos % bytes.len();
            bytes[k] = val;
        }
        let _ = parse_matrix_bytes(f, &bytes, &Budget::default(), "fuzz");
        let _ = parse_vector_bytes(&bytes, &Budget::default(), "fuzz");
        let short = &bytes[..cut % (bytes.len() + 1)];
        let _ = parse_matrix_bytes(f, short, &Budget::default(), "fuzz");
    }
}
