//! A client nobody in this project wrote, pyvisa with the pure-Python pyvisa-py backend, drives
//! the simulated TEC controller the way lab software would (tests/python/pyvisa_check.sh). If
//! it can, real lab software can.
//!
//! The script makes a venv and installs pyvisa from PyPI on first use. Set HEALTH_SKIP_PYVISA=1
//! to skip this test on a machine without network access.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use health_hal::scpi::{ScpiBenchSimulator, ScpiSimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyvisa_drives_the_simulated_tec_controller() {
    if std::env::var_os("HEALTH_SKIP_PYVISA").is_some() {
        eprintln!("HEALTH_SKIP_PYVISA is set: skipping the pyvisa cross-check");
        return;
    }
    let sim = ScpiBenchSimulator::start(IpAddr::V4(Ipv4Addr::LOCALHOST), ScpiSimOptions::default())
        .await
        .expect("start the simulator");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/pyvisa_check.sh"
    );
    let child = tokio::process::Command::new("bash")
        .arg(script)
        .arg(sim.tec_addr().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If the bound below expires, the script (and pip) must not outlive the test.
        .kill_on_drop(true)
        .spawn()
        .expect("run bash");
    // Generous: the first run creates the venv and downloads pyvisa.
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("the pyvisa check finishes within 10 minutes")
        .expect("wait for the pyvisa check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pyvisa check failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("idn: health-agent simulator,TECSource 5310"),
        "{stdout}"
    );
    assert!(stdout.contains("temperature: 25."), "{stdout}");
    assert!(
        stdout.contains("error queue: -113,\"Undefined header\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("error queue then: 0,\"No error\""),
        "{stdout}"
    );
    assert!(stdout.contains("pyvisa: all checks passed"), "{stdout}");
}
