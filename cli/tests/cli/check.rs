use crate::{stratus, text};

#[test]
fn only_local_without_credentials() {
    let home = tempfile::tempdir().unwrap();
    let out = stratus(&["check"], home.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("AWS: disabled"), "{stdout}");
    assert!(stdout.contains("GCP: disabled"), "{stdout}");
    assert!(
        stdout.contains("gcloud auth application-default login"),
        "{stdout}"
    );
    let enabled = stdout.split("Enabled clouds").nth(1).unwrap();
    assert_eq!(enabled.matches('✔').count(), 1, "{stdout}");
    assert!(enabled.contains("✔ Local"), "{stdout}");
}

#[test]
fn aws_and_gcp_when_their_credentials_are_found() {
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("key.json");
    std::fs::write(&key, "{}").unwrap();
    let out = stratus(
        &["check"],
        home.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap()),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("AWS: enabled"), "{stdout}");
    assert!(stdout.contains("GCP: enabled"), "{stdout}");
    assert!(
        stdout.contains("✔ AWS") && stdout.contains("✔ GCP") && stdout.contains("✔ Local"),
        "{stdout}"
    );
}

#[test]
fn a_variable_that_is_not_utf8_is_no_crash() {
    use std::os::unix::ffi::OsStrExt as _;
    let home = tempfile::tempdir().unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["check"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("STRATUS_HOME", home.path().join(".stratus"))
        .env("ODD", odd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::text(&out.stderr));
    let file = home.path().join("t.yaml");
    std::fs::write(&file, "run: echo\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args([
            "jobs",
            "launch",
            "--dry-run",
            "--env",
            "ODD",
            file.to_str().unwrap(),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("STRATUS_HOME", home.path().join(".stratus"))
        .env("ODD", odd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::text(&out.stderr).contains("not UTF-8"),
        "{}",
        crate::text(&out.stderr)
    );
}
