//! Fuzzing the collector's config parser (issue 6): arbitrary text and mutations of the
//! shipped example. A unit-test module because the collector is a binary crate with no
//! library for an integration test to call. No input may panic; every error starts with the
//! file's name and says what is wrong. Policy (cases, seed, `PROPTEST_CASES`):
//! `tests/fuzz/policy.rs`.

#[path = "../../tests/fuzz/policy.rs"]
mod policy;

use std::path::Path;

use proptest::prelude::*;

use crate::config::parse;

const EXAMPLE: &str = include_str!("../../systemd/collector.toml.example");

fn check(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = parse(Path::new("collector.toml"), text) {
        let shown = e.to_string();
        prop_assert!(shown.starts_with("collector.toml: "), "{}", shown);
        prop_assert!(shown.len() > "collector.toml: ".len(), "{}", shown);
    }
    Ok(())
}

#[test]
fn the_example_is_valid() {
    parse(Path::new("collector.toml"), EXAMPLE).expect("the mutation seed must parse");
}

proptest! {
    #![proptest_config(policy::config(2000))]

    #[test]
    fn fuzz_collector_config_arbitrary_text(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn fuzz_collector_config_mutated_example(m in policy::mutations(6)) {
        check(&String::from_utf8_lossy(&policy::apply(EXAMPLE.as_bytes(), &m)))?;
    }
}
