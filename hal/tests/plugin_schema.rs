//! Property tests of the plugin schema parser: no input makes it panic, errors always name a
//! path, and every valid report it is given comes back (numbers to within one unit in the last
//! place: serde_json's default float parser is not exactly round-trip, which is far below any
//! sensor's resolution).

/// The shared proptest policy: fixed seed, no persistence files, `PROPTEST_CASES` to run longer.
#[path = "../../tests/fuzz/policy.rs"]
mod policy;

use health_hal::plugin::schema::{parse_report, parse_value, quantity_name};
use health_hal::Quantity;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const QUANTITIES: [Quantity; 13] = [
    Quantity::TemperatureCelsius,
    Quantity::PowerWatts,
    Quantity::EnergyJoules,
    Quantity::VoltageVolts,
    Quantity::CurrentAmperes,
    Quantity::FanRpm,
    Quantity::PhaseErrorRadians,
    Quantity::OpticalPowerWatts,
    Quantity::ConductanceDriftRatio,
    Quantity::StuckCellsRatio,
    Quantity::EffectiveBits,
    Quantity::CalibrationAgeSeconds,
    Quantity::SetpointCelsius,
];

/// Keys the schema knows, at any level, so random documents reach deep into the parser.
const KEYS: [&str; 20] = [
    "version",
    "identity",
    "readings",
    "conditions",
    "powered",
    "power_limit_watts",
    "calibrated_at_unix",
    "calibration_temperature_celsius",
    "message",
    "output",
    "sensor",
    "quantity",
    "value",
    "code",
    "severity",
    "vendor",
    "serial",
    "temperature_celsius",
    "THERMAL_WARNING",
    "x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // serde_json turns non-finite floats into null: that path is covered too.
        any::<f64>().prop_map(Value::from),
        Just(json!(1)),
        "[a-zA-Z_]{0,12}".prop_map(Value::String),
        prop::sample::select(KEYS.to_vec()).prop_map(|k| Value::String(k.to_string())),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_ish() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(KEYS.to_vec()).prop_map(String::from),
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

fn check_error(e: &health_hal::plugin::SchemaError) {
    assert!(!e.path.is_empty(), "an error without a path: {e}");
    assert!(!e.problem.is_empty(), "an error without a problem: {e}");
    assert!(
        e.to_string().len() < 2000,
        "an overlong error: {}",
        e.to_string().len()
    );
}

proptest! {
    #![proptest_config(policy::config(512))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Err(e) = parse_report(s.as_bytes()) {
            check_error(&e);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse_report(&b) {
            check_error(&e);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_ish()) {
        if let Err(e) = parse_value(&v) {
            check_error(&e);
        }
        let text = serde_json::to_vec(&v).unwrap();
        if let Err(e) = parse_report(&text) {
            check_error(&e);
        }
    }

    #[test]
    fn near_valid_documents_never_panic(
        fields in prop::collection::vec((prop::sample::select(KEYS.to_vec()), json_ish()), 0..6),
        readings in prop::collection::vec(json_ish(), 0..4),
    ) {
        let mut doc = Map::new();
        doc.insert("version".into(), json!(1));
        doc.insert("readings".into(), Value::Array(readings));
        for (k, v) in fields {
            doc.insert(k.to_string(), v);
        }
        if let Err(e) = parse_value(&Value::Object(doc)) {
            check_error(&e);
        }
    }

    #[test]
    fn valid_reports_come_back(
        readings in prop::collection::vec(
            ("[a-z][a-z0-9_.-]{0,30}", prop::sample::select(QUANTITIES.to_vec()), -1e12f64..1e12),
            0..40,
        ),
        limit in prop::option::of(0.0f64..1e4),
        powered in prop::option::of(any::<bool>()),
        message in prop::option::of(".{0,50}"),
    ) {
        let mut doc = json!({
            "version": 1,
            "readings": readings.iter().map(|(s, q, v)| json!({
                "sensor": s, "quantity": quantity_name(*q), "value": v
            })).collect::<Vec<_>>(),
        });
        if let Some(l) = limit { doc["power_limit_watts"] = json!(l); }
        if let Some(p) = powered { doc["powered"] = json!(p); }
        if let Some(m) = &message { doc["message"] = json!(m); }
        let text = serde_json::to_vec(&doc).unwrap();
        let r = parse_report(&text).unwrap();
        prop_assert_eq!(r.readings.len(), readings.len());
        for (got, (s, q, v)) in r.readings.iter().zip(&readings) {
            prop_assert_eq!(&got.sensor, s);
            prop_assert_eq!(got.quantity, *q);
            prop_assert!(close(got.value, *v), "{} vs {}", got.value, v);
        }
        prop_assert_eq!(r.power_limit_watts.is_some(), limit.is_some());
        if let (Some(got), Some(want)) = (r.power_limit_watts, limit) {
            prop_assert!(close(got, want), "{} vs {}", got, want);
        }
        prop_assert_eq!(r.powered, powered);
        prop_assert_eq!(r.message, message);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    let e = parse_report(deep.as_bytes()).unwrap_err();
    assert_eq!(e.path, "$");
    let deep = format!(
        r#"{{"version":1,"message":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(parse_report(deep.as_bytes()).is_err());
}
