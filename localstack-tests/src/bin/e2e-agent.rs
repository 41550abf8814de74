//! The node agent, for the harness to start on each emulated EC2 instance (with the
//! environment the instance's user data would set).

fn main() -> std::process::ExitCode {
    if let Some(code) = agent::exec_if_trampoline() {
        return code;
    }
    agent::main_from_env("e2e-agent")
}
