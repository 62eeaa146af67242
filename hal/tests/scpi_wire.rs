//! Property tests for everything in the SCPI backend that reads input from the network: the
//! reply parsers, the address parser, the simulator's command interpreter, and the client
//! against a peer that sends arbitrary bytes. None may panic; numbers must round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use health_hal::scpi::config::normalize_address;
use health_hal::scpi::sim_instruments::{Instrument, InstrumentInfo, Session};
use health_hal::scpi::sim_model::{BenchModel, ModelParams};
use health_hal::scpi::wire::{
    parse_bool, parse_error_entry, parse_idn, parse_integer, parse_number,
};
use health_hal::scpi::{client::expects_reply, ScpiClient};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

proptest! {
    #[test]
    fn parsers_never_panic(s in any::<String>()) {
        let _ = parse_number(&s);
        let _ = parse_integer(&s);
        let _ = parse_bool(&s);
        let _ = parse_idn(&s);
        let _ = parse_error_entry(&s);
        let _ = normalize_address(&s);
        let _ = expects_reply(&s);
    }

    #[test]
    fn parsers_never_panic_on_scpi_like_text(s in r#"[-+0-9.eE,"; :?*A-Za-z\r]{0,40}"#) {
        let _ = parse_number(&s);
        let _ = parse_integer(&s);
        let _ = parse_idn(&s);
        if let Ok(e) = parse_error_entry(&s) {
            // Whatever was accepted has its code before the first comma.
            let head = s.split(',').next().unwrap_or("").trim().trim_end_matches('\r');
            prop_assert_eq!(parse_integer(head), Ok(e.code));
        }
    }

    #[test]
    fn numbers_round_trip(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        prop_assert_eq!(parse_number(&format!("{x}")), Ok(x));
        prop_assert_eq!(parse_number(&format!("{x:E}")), Ok(x));
        prop_assert_eq!(parse_number(&format!("{x:e}\r\n")), Ok(x));
        prop_assert_eq!(parse_number(&format!(" {x:+E} ")), Ok(x));
    }

    #[test]
    fn integers_and_error_entries_round_trip(
        code in any::<i32>(),
        message in r#"[^"\r\n]{0,30}"#,
    ) {
        let code = i64::from(code);
        prop_assert_eq!(parse_integer(&format!("{code:+}")), Ok(code));
        let e = parse_error_entry(&format!("{code},\"{message}\"\r\n")).unwrap();
        prop_assert_eq!(e.code, code);
        prop_assert_eq!(e.message, message);
    }

    #[test]
    fn identities_round_trip(
        fields in proptest::array::uniform4(r"[A-Za-z0-9][A-Za-z0-9 ._()-]{0,15}[A-Za-z0-9]"),
    ) {
        let id = parse_idn(&format!("{}, {} ,{},{}\n", fields[0], fields[1], fields[2], fields[3])).unwrap();
        prop_assert_eq!(
            [id.maker, id.model, id.serial, id.firmware],
            fields
        );
    }

    #[test]
    fn simulated_instruments_never_panic(lines in proptest::collection::vec(any::<String>(), 1..8)) {
        let mut model = BenchModel::new(ModelParams::nominal(3));
        let info = InstrumentInfo { idn: "a,b,c,d".to_string(), self_test: 0 };
        for instrument in [Instrument::TecController, Instrument::PowerMeter, Instrument::Laser] {
            let mut session = Session::new(instrument);
            for line in &lines {
                let _ = session.execute(line, &mut model, &info);
            }
            // Whatever came before, the queue drains to 0 within the client's bound.
            let drained = (0..32)
                .filter_map(|_| session.execute("SYST:ERR?", &mut model, &info))
                .any(|r| r.starts_with("0,"));
            prop_assert!(drained);
        }
        model.advance(1.0);
        prop_assert!(model.temperature_c.is_finite());
    }

    #[test]
    fn simulated_instruments_never_panic_on_scpi_like_commands(
        lines in proptest::collection::vec(
            r"(\*|:)?(TEC|SOUR0|SENS|SYST|MEAS|TEMP)(:(T|SET|OUT|ITE|V|LIM|THI|TLO|WAV|POW|STAT|CORR|ERR|AVER|COUN)){0,3}\??( [-+0-9.eEA-Za-z,]{0,12})?",
            1..10,
        ),
    ) {
        let mut model = BenchModel::new(ModelParams::nominal(4));
        let info = InstrumentInfo { idn: "a,b,c,d".to_string(), self_test: 0 };
        for instrument in [Instrument::TecController, Instrument::PowerMeter, Instrument::Laser] {
            let mut session = Session::new(instrument);
            for line in &lines {
                let _ = session.execute(line, &mut model, &info);
            }
        }
        model.advance(5.0);
        prop_assert!(model.temperature_c.is_finite() && model.phase_rad.is_finite());
    }
}

/// A peer that answers every line with the same arbitrary bytes, then the client asks it.
async fn client_against(reply: Vec<u8>) -> Result<String, health_hal::HalError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 256];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&reply).await.is_err() {
                    break;
                }
            }
        }
    });
    let c = ScpiClient::new(addr.to_string(), Duration::from_millis(100));
    let r = c.query("TEC:T?").await;
    server.abort();
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_client_never_panics_on_arbitrary_replies(reply in proptest::collection::vec(any::<u8>(), 0..600)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let r = rt.block_on(client_against(reply));
        // Any outcome is fine as long as it is a value, not a panic or a hang.
        let _ = r;
    }
}
