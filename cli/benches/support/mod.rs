//! What the benches that drive the real `stratus` binary share (a module, not a bench target:
//! Cargo only finds benches at `benches/*.rs`).

use std::path::Path;
use std::process::Command;

/// Runs `stratus` with `args` against the home `home`, as user `bench`.
pub fn stratus(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .env("STRATUS_HOME", home)
        .env("USER", "bench")
        .output()
        .expect("run stratus")
}

/// Starts the local control plane in `home`: its base URL and its API token.
#[allow(dead_code)] // Not every bench talks to the API directly.
pub fn start_api(home: &Path) -> (String, String) {
    let out = stratus(home, &["api", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::fs::read_to_string(home.join("api/port")).unwrap();
    let token = hex::encode(std::fs::read(home.join("api/token")).unwrap());
    (format!("http://127.0.0.1:{}", port.trim()), token)
}
