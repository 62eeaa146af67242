//! Fuzzing the HAL's device-reply parsers (issue 6): BMP (SCP datagrams and their VER/ADC
//! payloads), SCPI reply lines, and the vendor plugin's JSON report. Arbitrary input and
//! mutations of valid replies (truncated, bytes and bits changed, runs duplicated or removed,
//! numbers made extreme). No input may panic; every error says what was expected and
//! names the field, the JSON path or quotes the offending text, in bounded length.
//! Policy (cases, seed, `PROPTEST_CASES`): `tests/fuzz/policy.rs`.

#[path = "../../tests/fuzz/policy.rs"]
mod policy;

use health_hal::bmp::wire::{reply_seq, AdcInfo, ReturnCode, ScpReply, VersionInfo};
use health_hal::plugin::schema::parse_report;
use health_hal::scpi::wire::{
    parse_bool, parse_error_entry, parse_idn, parse_integer, parse_number,
};
use proptest::prelude::*;

// ---- BMP ----

/// Valid reply datagrams: a VER reply, an ADC reply, and an empty OK.
fn bmp_replies() -> Vec<Vec<u8>> {
    let ver = VersionInfo {
        board: 0,
        can_id: 0,
        frame_id: 0,
        code_block: 0,
        buffer_size: 256,
        version: 0xffff,
        build_date: 1_400_000_000,
        name: "BC&MP".into(),
        version_string: "2.1.0".into(),
    };
    let adc = AdcInfo {
        adc: [0, 1550, 1560, 1570, 2300, 3200, 4200, 3900],
        t_int: [40 * 256, 36 * 256, 0, 0],
        t_ext: [27 * 256, 0, 0, 0],
        fan: [2400, 0, 0, 0],
        warning: 0,
        shutdown: 0,
    };
    vec![
        ScpReply {
            rc: ReturnCode::Ok,
            seq: 7,
            payload: ver.encode(),
        }
        .encode(None),
        ScpReply {
            rc: ReturnCode::Ok,
            seq: 8,
            payload: adc.encode(),
        }
        .encode(None),
        ScpReply {
            rc: ReturnCode::Ok,
            seq: 9,
            payload: Vec::new(),
        }
        .encode(None),
    ]
}

fn bmp_check(d: &[u8]) -> Result<(), TestCaseError> {
    let _ = reply_seq(d);
    match ScpReply::parse(d) {
        Ok(r) => {
            for e in [
                VersionInfo::parse(&r.payload).err(),
                AdcInfo::parse(&r.payload).err(),
            ]
            .into_iter()
            .flatten()
            {
                let s = e.to_string();
                prop_assert!(!s.is_empty() && s.len() < 200, "{}", s);
            }
        }
        Err(e) => {
            let s = e.to_string();
            prop_assert!(!s.is_empty() && s.len() < 200, "{}", s);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(policy::config(4000))]

    #[test]
    fn fuzz_bmp_arbitrary_datagrams(d in prop::collection::vec(any::<u8>(), 0..600)) {
        bmp_check(&d)?;
        // The payload parsers on their own, as the client calls them.
        let _ = VersionInfo::parse(&d);
        let _ = AdcInfo::parse(&d);
    }

    #[test]
    fn fuzz_bmp_mutated_replies(which in 0usize..3, m in policy::mutations(6)) {
        let d = policy::apply(&bmp_replies()[which], &m);
        bmp_check(&d)?;
    }
}

// ---- SCPI ----

/// Valid replies of the instruments the bench talks to.
const SCPI_REPLIES: [&str; 8] = [
    "+2.500000E+01\r\n",
    "1.234E-3\n",
    "1\n",
    "ON\n",
    "Keysight Technologies,N7744C,MY12345678,1.2.3\n",
    "-113,\"Undefined header\"\r\n",
    "0,\"No error\"\n",
    "+1550.000000E-09\n",
];

fn scpi_check(s: &str) -> Result<(), TestCaseError> {
    let errors = [
        parse_number(s).err(),
        parse_integer(s).err(),
        parse_bool(s).err(),
        parse_idn(s).err(),
        parse_error_entry(s).err(),
    ];
    for e in errors.into_iter().flatten() {
        let shown = e.to_string();
        // "expected X, found <quoted, shortened reply>"
        prop_assert!(shown.starts_with("expected "), "{}", shown);
        prop_assert!(shown.len() < 300, "{} bytes", shown.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(policy::config(4000))]

    #[test]
    fn fuzz_scpi_arbitrary_replies(s in any::<String>()) {
        scpi_check(&s)?;
    }

    #[test]
    fn fuzz_scpi_mutated_replies(which in 0usize..8, m in policy::mutations(4)) {
        let b = policy::apply(SCPI_REPLIES[which].as_bytes(), &m);
        scpi_check(&String::from_utf8_lossy(&b))?;
    }

}

proptest! {
    #![proptest_config(policy::config(500))]

    #[test]
    fn fuzz_scpi_long_replies(n in 0usize..5000, c in any::<char>()) {
        // A reply far longer than any instrument sends, of any one character (control
        // characters quote to several): shown shortened.
        scpi_check(&std::iter::repeat_n(c, n).collect::<String>())?;
    }
}

#[test]
fn scpi_errors_quote_control_characters_within_bounds() {
    // Found by fuzz_scpi_long_replies: 38 DEL characters quoted to a 302-byte error.
    let e = parse_number(&"\u{7f}".repeat(38)).unwrap_err().to_string();
    assert!(e.len() < 200 && e.contains("(38 bytes)"), "{e}");
}

// ---- plugin JSON ----

const PLUGIN_REPORT: &str = r#"{"version": 1,
 "identity": {"vendor": "Acme", "model": "X1", "serial": "S-1", "firmware": "1.0"},
 "readings": [
   {"sensor": "die", "quantity": "temperature_celsius", "value": 41.5},
   {"sensor": "card", "quantity": "power_watts", "value": 7.9}
 ],
 "conditions": [{"code": "THERMAL_WARNING", "severity": "warning", "message": "hot"}],
 "powered": true, "power_limit_watts": 15,
 "calibrated_at_unix": 1700000000, "calibration_temperature_celsius": 40.1,
 "output": [1.0, -2.5, 3e-3]}"#;

fn plugin_check(b: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = parse_report(b) {
        prop_assert!(!e.path.is_empty(), "an error without a JSON path: {}", e);
        prop_assert!(!e.problem.is_empty(), "{}", e);
        prop_assert!(e.to_string().len() < 2000, "{} bytes", e.to_string().len());
    }
    Ok(())
}

#[test]
fn plugin_errors_about_odd_keys_still_name_them() {
    // Found by fuzz_plugin_mutated_reports (20 000 cases): a deletion left an empty key, and
    // the error's path was empty.
    let e = parse_report(br#"{"version": 1, "": 2}"#).unwrap_err();
    assert_eq!(e.path, r#"$[""]"#, "{e}");
    let e =
        parse_report(br#"{"version": 1, "readings": [{"sensor": "a", "a b": 1}]}"#).unwrap_err();
    assert_eq!(e.path, r#"readings[0]["a b"]"#, "{e}");
}

#[test]
fn the_plugin_seed_report_is_valid() {
    parse_report(PLUGIN_REPORT.as_bytes()).expect("the mutation seed must parse");
}

proptest! {
    #![proptest_config(policy::config(3000))]

    #[test]
    fn fuzz_plugin_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..700)) {
        plugin_check(&b)?;
    }

    #[test]
    fn fuzz_plugin_mutated_reports(m in policy::mutations(6)) {
        plugin_check(&policy::apply(PLUGIN_REPORT.as_bytes(), &m))?;
    }

}

proptest! {
    // Each case parses up to a megabyte of JSON: a handful straddling the output limit.
    #![proptest_config(policy::config_fixed(6))]

    #[test]
    fn fuzz_plugin_huge_arrays(n in 1_048_570usize..1_048_580) {
        let doc = format!(
            "{{\"version\":1,\"readings\":[],\"output\":[{}]}}",
            vec!["1"; n].join(",")
        );
        match parse_report(doc.as_bytes()) {
            Ok(r) => prop_assert!(n <= 1_048_576 && r.output.map(|o| o.len()) == Some(n)),
            Err(e) => {
                prop_assert!(n > 1_048_576, "{}", e);
                prop_assert!(e.path.contains("output"), "{}", e);
            }
        }
    }
}
