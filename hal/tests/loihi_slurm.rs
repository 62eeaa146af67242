//! Property tests of the `sinfo` parser: nothing it is given makes it panic, and every state
//! SLURM can print (base states, `+` compounds, flag suffixes) parses back to its parts.

/// The shared proptest policy: fixed seed, no persistence files, `PROPTEST_CASES` to run longer.
#[path = "../../tests/fuzz/policy.rs"]
mod policy;

use health_hal::loihi::{parse_sinfo, parse_state, BaseState, StateFlag};
use proptest::prelude::*;

const NAMES: [&str; 24] = [
    "idle",
    "alloc",
    "allocated",
    "mix",
    "mixed",
    "comp",
    "completing",
    "resv",
    "plnd",
    "down",
    "drain",
    "drained",
    "drng",
    "draining",
    "fail",
    "failg",
    "failing",
    "maint",
    "futr",
    "future",
    "pow_dn",
    "pow_up",
    "unknown",
    "inval",
];
const FLAGS: [char; 9] = ['*', '~', '#', '!', '%', '$', '@', '^', '-'];

proptest! {
    #![proptest_config(policy::config(512))]

    #[test]
    fn arbitrary_output_never_panics(out in any::<String>(), node in "[a-z0-9-]{1,12}") {
        let _ = parse_sinfo(&out, &node);
        let _ = parse_state(&node, &out);
    }

    #[test]
    fn line_shaped_output_never_panics(
        lines in prop::collection::vec(("[a-z0-9-]{1,8}", "[ -~]{0,20}"), 0..8),
    ) {
        let out: String = lines.iter().map(|(n, s)| format!("{n} {s}\n")).collect();
        for (node, _) in &lines {
            if let Ok(state) = parse_sinfo(&out, node) {
                prop_assert_eq!(&state.node, node);
                // Every state has a description and at most one condition.
                prop_assert!(state.describe().contains(node.as_str()));
            }
        }
    }

    #[test]
    fn printed_states_parse_back(
        parts in prop::collection::vec(prop::sample::select(NAMES.to_vec()), 1..3),
        flags in prop::collection::vec(prop::sample::select(FLAGS.to_vec()), 0..3),
        upper in any::<bool>(),
    ) {
        let mut word = parts.join("+");
        if upper {
            word = word.to_ascii_uppercase();
        }
        word.extend(flags.iter());
        let out = format!("other idle\nnode01 {word}\n");
        let s = parse_sinfo(&out, "node01").unwrap();
        prop_assert_eq!(&s.raw, &word);
        prop_assert_eq!(s.states.len(), parts.len());
        prop_assert!(!s.states.iter().any(|b| matches!(b, BaseState::Other(_))));
        let mut want: Vec<StateFlag> = Vec::new();
        for c in &flags {
            let f = StateFlag::from_char(*c).unwrap();
            if !want.contains(&f) {
                want.push(f);
            }
        }
        prop_assert_eq!(&s.flags, &want);
        let judged = s.condition("b", std::time::SystemTime::now());
        let bad = parts.iter().any(|p| matches!(*p, "down" | "fail" | "failg" | "failing"));
        // Taken out of service on purpose: maintenance (info), whatever else the state says.
        let maint = flags.contains(&'$')
            || parts.iter().any(|p| matches!(*p, "drain" | "drained" | "drng" | "draining" | "maint"));
        if maint {
            prop_assert_eq!(
                judged.map(|c| (c.code, c.severity)),
                Some((health_hal::ConditionCode::Maintenance, health_hal::Severity::Info))
            );
        } else if bad {
            prop_assert_eq!(judged.map(|c| c.severity), Some(health_hal::Severity::Critical));
        }
    }
}
