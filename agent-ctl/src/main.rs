//! `agent-ctl`: see [`agent_ctl`].
fn main() -> std::process::ExitCode {
    agent_ctl::main()
}
