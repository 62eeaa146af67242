//! Fuzzing the matrix readers (issue 6): `.npy`, SciPy `.npz` and Matrix Market, with
//! arbitrary bytes, and with mutations of valid files: truncated, bytes and bits changed,
//! runs removed or repeated, numbers in headers made extreme (huge declared sizes, negative,
//! overflowing). Inside `.npz` the member arrays are mutated before zipping too, so the edits
//! reach the array parsers past the zip layer. No input may panic; every error starts with
//! the file's name, says what is wrong, and fits on a line.
//! Policy (cases, seed, `PROPTEST_CASES`): `tests/fuzz/policy.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

#[path = "../../tests/fuzz/policy.rs"]
mod policy;

use std::io::{Cursor, Write};

use proptest::prelude::*;
use solver_probe::read::{parse_matrix_bytes, parse_vector_bytes, Budget, Format};

/// The budget the fuzz runs read under: 256 MiB, so a header that lies within the budget
/// costs at most that (the agent's default is 2 GiB).
const BUDGET: Budget = Budget {
    max_bytes: 256 << 20,
};

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend(data);
    out
}

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

/// The members of a 3×3 CSR `save_npz` file.
fn csr_members() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("format.npy", npy("|S3", "()", b"csr")),
        (
            "shape.npy",
            npy("<i8", "(2,)", &le(&[3i64, 3], i64::to_le_bytes)),
        ),
        (
            "indptr.npy",
            npy("<i4", "(4,)", &le(&[0i32, 2, 3, 4], i32::to_le_bytes)),
        ),
        (
            "indices.npy",
            npy("<i4", "(4,)", &le(&[2i32, 0, 1, 2], i32::to_le_bytes)),
        ),
        (
            "data.npy",
            npy(
                "<f8",
                "(4,)",
                &le(&[3.0f64, 1.0, 2.0, 4.0], f64::to_le_bytes),
            ),
        ),
    ]
}

fn zip(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    for (name, data) in members {
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file(*name, opts).expect("start a member");
        w.write_all(data).expect("write a member");
    }
    w.finish().expect("finish the zip").into_inner()
}

/// Valid files of each format (the seeds the mutations start from).
fn seeds() -> Vec<(Format, Vec<u8>)> {
    vec![
        (
            Format::Npy,
            npy("<f8", "(2, 2)", &le(&[1.0f64, 2.0, 0.0, 4.0], f64::to_le_bytes)),
        ),
        (Format::Npy, npy("<f4", "(1, 1)", &1.0f32.to_le_bytes())),
        (Format::Npz, zip(&csr_members(), true)),
        (Format::Npz, zip(&csr_members(), false)),
        (
            Format::Mtx,
            b"%%MatrixMarket matrix coordinate real symmetric\n% a comment\n3 3 3\n1 1 1.5\n3 1 2\n2 2 1\n"
                .to_vec(),
        ),
        (
            Format::Mtx,
            b"%%MatrixMarket matrix coordinate pattern general\n2 2 2\n1 2\n2 1\n".to_vec(),
        ),
    ]
}

fn check(format: Format, bytes: &[u8]) -> Result<(), TestCaseError> {
    let name = match format {
        Format::Npy => "fuzz.npy",
        Format::Npz => "fuzz.npz",
        Format::Mtx => "fuzz.mtx",
    };
    if let Err(e) = parse_matrix_bytes(format, bytes, &BUDGET, name) {
        let s = e.to_string();
        prop_assert!(s.starts_with(&format!("{name}: ")), "{}", s);
        prop_assert!(s.len() > name.len() + 2 && s.len() < 1000, "{}", s);
    }
    if format == Format::Npy {
        if let Err(e) = parse_vector_bytes(bytes, &BUDGET, name) {
            prop_assert!(e.to_string().starts_with(&format!("{name}: ")), "{}", e);
        }
    }
    Ok(())
}

#[test]
fn the_seeds_are_valid() {
    for (f, b) in seeds() {
        parse_matrix_bytes(f, &b, &BUDGET, "seed").expect("a seed must parse");
    }
}

proptest! {
    #![proptest_config(policy::config(2000))]

    #[test]
    fn fuzz_readers_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..600), which in 0usize..3) {
        let f = [Format::Npy, Format::Npz, Format::Mtx][which];
        check(f, &b)?;
        // Behind a valid magic, so the bytes reach the header parsers.
        let mut prefixed = match f {
            Format::Npy => b"\x93NUMPY\x01\x00".to_vec(),
            Format::Npz => b"PK\x03\x04".to_vec(),
            Format::Mtx => b"%%MatrixMarket matrix coordinate real general\n".to_vec(),
        };
        prefixed.extend(&b);
        check(f, &prefixed)?;
    }

    #[test]
    fn fuzz_readers_mutated_files(which in 0usize..6, m in policy::mutations(6)) {
        let (f, seed) = seeds().swap_remove(which);
        check(f, &policy::apply(&seed, &m))?;
    }

    #[test]
    fn fuzz_readers_mutated_npz_members(member in 0usize..5, deflate in any::<bool>(), m in policy::mutations(4)) {
        let mut members = csr_members();
        members[member].1 = policy::apply(&members[member].1, &m);
        check(Format::Npz, &zip(&members, deflate))?;
    }
}

#[test]
fn tiny_files_declaring_huge_dimensions_are_refused_before_allocating() {
    // Found by fuzzing with extreme header numbers: 2·10⁸ rows and no entries passed the
    // 2 GiB default budget, and building the CSR then took 6 GB and 15 s.
    let b = Budget::default();
    for text in [
        "%%MatrixMarket matrix coordinate real general\n200000000 200000000 0\n",
        "%%MatrixMarket matrix coordinate real general\n200000000 200000000 1\n1 1 1\n",
    ] {
        let e = parse_matrix_bytes(Format::Mtx, text.as_bytes(), &b, "huge.mtx")
            .expect_err("over budget")
            .to_string();
        assert!(
            e.starts_with("huge.mtx: line 2: ") && e.contains("budget"),
            "{e}"
        );
    }
    // The same through an .npz: a COO matrix with no entries and a huge shape.
    let coo = [
        ("format.npy", npy("|S3", "()", b"coo")),
        (
            "shape.npy",
            npy(
                "<i8",
                "(2,)",
                &le(&[200_000_000i64, 200_000_000], i64::to_le_bytes),
            ),
        ),
        ("row.npy", npy("<i4", "(0,)", &[])),
        ("col.npy", npy("<i4", "(0,)", &[])),
        ("data.npy", npy("<f8", "(0,)", &[])),
    ];
    let e = parse_matrix_bytes(Format::Npz, &zip(&coo, true), &b, "huge.npz")
        .expect_err("over budget")
        .to_string();
    assert!(e.starts_with("huge.npz: ") && e.contains("budget"), "{e}");
}
