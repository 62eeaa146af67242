//! Fuzzing the agent's config parser (issue 6): arbitrary text, TOML-shaped text, and
//! mutations of the shipped configs (the annotated example and the embedded `--simulate`
//! default). No input may panic; every error names the file and a message, in one line.
//! Policy (cases, seed, `PROPTEST_CASES`): `tests/fuzz/policy.rs`.

#[path = "../../tests/fuzz/policy.rs"]
mod policy;

use health_agent::config::{parse, SIMULATE_TOML};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../systemd/agent.toml.example");

fn check(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = parse("agent.toml", text) {
        let shown = e.to_string();
        prop_assert_eq!(&e.file, "agent.toml");
        prop_assert!(shown.starts_with("agent.toml: "), "{}", shown);
        prop_assert!(!e.message.is_empty(), "{}", shown);
        prop_assert!(
            !shown.contains('\n') || e.message.contains("TOML"),
            "{}",
            shown
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(policy::config(3000))]

    #[test]
    fn fuzz_agent_config_arbitrary_text(s in any::<String>()) {
        check(&s)?;
    }
}

proptest! {
    // Generating from this regex is the slow part (debug build): fewer cases.
    #![proptest_config(policy::config(1000))]

    #[test]
    fn fuzz_agent_config_toml_shaped_text(
        s in r#"(\[\[?(device|probe|probe\.known_answer|uplink|host|discover|device\.(sim|bmp|scpi|plugin|sysfs|limits))\]\]?\n|[a-z_]{1,20} = ("[a-z0-9:./ ]{0,12}"|-?[0-9]{1,22}(\.[0-9]+)?(e-?[0-9]{1,3})?|true|\[\]|\{\})\n){0,12}"#
    ) {
        check(&s)?;
    }
}

proptest! {
    #![proptest_config(policy::config(2000))]

    #[test]
    fn fuzz_agent_config_mutated_example(m in policy::mutations(6)) {
        let bytes = policy::apply(EXAMPLE.as_bytes(), &m);
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn fuzz_agent_config_mutated_simulate_default(m in policy::mutations(6)) {
        let bytes = policy::apply(SIMULATE_TOML.as_bytes(), &m);
        check(&String::from_utf8_lossy(&bytes))?;
    }
}
