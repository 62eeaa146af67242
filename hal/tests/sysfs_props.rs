//! Properties of the sysfs parsers: they take any text a driver may produce without
//! panicking, and they understand what well-formed files say.

use health_hal::sysfs::hwmon::{parse_sensor_file, SensorType};
use health_hal::sysfs::pci::{parse_address, parse_aer, parse_link_speed, parse_link_width};
use health_hal::sysfs::powercap::energy_delta_uj;
use health_hal::sysfs::read::{natural_key, parse_i64, quote};
use health_hal::sysfs::thermal::parse_trip_file;
use proptest::prelude::*;
use std::path::Path;

proptest! {
    #[test]
    fn aer_parser_never_panics(s in any::<String>()) {
        let _ = parse_aer(&s);
    }

    #[test]
    fn aer_parser_never_panics_on_near_misses(
        s in "([A-Za-z_]{0,12}( |\t){0,3}[0-9]{0,25}(\n|\r\n| ){0,2}){0,8}"
    ) {
        let _ = parse_aer(&s);
    }

    #[test]
    fn aer_parser_reads_well_formed_files(
        counts in proptest::collection::vec(("[A-Z][A-Za-z]{0,10}", 0u64..1_000_000), 0..10),
        with_total in any::<bool>(),
    ) {
        let mut text: String = counts.iter().map(|(n, c)| format!("{n} {c}\n")).collect();
        let sum: u64 = counts.iter().map(|(_, c)| c).sum();
        if with_total {
            text.push_str(&format!("TOTAL_ERR_COR {sum}\n"));
        }
        let parsed = parse_aer(&text).expect("well-formed");
        prop_assert_eq!(parsed.total, sum);
        prop_assert_eq!(parsed.counts.len(), counts.len());
    }

    #[test]
    fn sensor_file_parser_never_panics(s in any::<String>()) {
        let _ = parse_sensor_file(&s);
        let _ = parse_trip_file(&s);
        let _ = natural_key(&s);
        let _ = parse_link_speed(&s);
        let _ = parse_link_width(&s);
        let _ = parse_address(&s);
        let _ = parse_i64(Path::new("/sys/f"), &s);
        let _ = quote(&s);
    }

    #[test]
    fn sensor_file_parser_never_panics_on_near_misses(
        s in "(temp|power|energy|in|fan|curr|intrusion|pwm)?[0-9]{0,12}_?[a-z_]{0,10}"
    ) {
        let _ = parse_sensor_file(&s);
    }

    #[test]
    fn sensor_file_names_round_trip(
        t in prop::sample::select(SensorType::ALL.to_vec()),
        index in 0u32..10_000,
        property in "[a-z][a-z_]{0,12}",
    ) {
        let name = format!("{}{index}_{property}", t.prefix());
        let f = parse_sensor_file(&name).expect("valid name");
        prop_assert_eq!(f.sensor_type, t);
        prop_assert_eq!(f.index, index);
        prop_assert_eq!(f.property, property);
    }

    #[test]
    fn quoted_garbage_is_short(s in any::<String>()) {
        // Debug escaping can take one char to `\u{10ffff}` (10 chars), plus quotes and `…`.
        prop_assert!(quote(&s).chars().count() <= 65 * 10 + 2);
    }

    #[test]
    fn energy_delta_never_panics_and_wraps_within_the_range(
        prev in any::<u64>(), now in any::<u64>(), range in proptest::option::of(any::<u64>()),
    ) {
        if let (Some(d), Some(r)) = (energy_delta_uj(prev, now, range), range) {
            if now < prev {
                prop_assert!(d < r);
            }
        }
    }
}
