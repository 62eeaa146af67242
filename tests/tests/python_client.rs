//! A client nobody in this project wrote: Python grpcio, with grpcio-health-checking and stubs
//! generated from proto/ by grpcio-tools, in a venv the script makes, talks to the agent.

use std::process::Command;

use health_e2e::Agent;

#[test]
fn python_grpcio_health_check_and_list_devices() {
    let agent = Agent::simulate(&["--node", "e2e-python"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/cross_check.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(agent.socket.to_str().expect("utf-8 path"))
        .output()
        .expect("run the Python cross-check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cross-check failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("health: SERVING"), "{stdout}");
    assert!(stdout.contains("devices: 4"), "{stdout}");
}
