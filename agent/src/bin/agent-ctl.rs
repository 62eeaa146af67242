//! `agent-ctl`: see [`health_agent::ctl`].
fn main() -> std::process::ExitCode {
    health_agent::ctl::main()
}
