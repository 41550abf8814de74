//! The documented sequence after `sam deploy`, against a stack built by the functions' own
//! context builder (GCP enabled through Workload Identity Federation): `stratus api login`,
//! `stratus check` (what the stack can use), `stratus jobs launch`, `stratus jobs queue`.

use std::process::{Command, Output};

use crate::harness::{Options, World};

fn stratus(home: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(crate::lambda::function_binary("stratus"))
        .args(args)
        .env("STRATUS_HOME", home)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "example-secret")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stratus {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_check_and_launch_against_the_stack() {
    let world = World::new(Options {
        gce: true,
        ..Options::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let (url, dir) = (world.api_url.clone(), home.path().to_owned());
    let check = tokio::task::spawn_blocking(move || {
        let login = stratus(
            &dir,
            &["api", "login", "--url", &url, "--region", "us-east-1"],
        );
        assert!(
            String::from_utf8_lossy(&login.stdout).contains("Logged in"),
            "{login:?}"
        );
        String::from_utf8_lossy(&stratus(&dir, &["check"]).stdout).into_owned()
    })
    .await
    .unwrap();
    for words in [
        "the Stratus stack at",
        "AWS: enabled",
        "GCP: enabled",
        "Workload Identity Federation",
        "✔ GCP",
    ] {
        assert!(
            check.contains(words),
            "stratus check lacks {words:?}:\n{check}"
        );
    }

    let task = home.path().join("task.yaml");
    std::fs::write(
        &task,
        "name: deployed\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: echo hello from the stack\n",
    )
    .unwrap();
    let dir = home.path().to_owned();
    let launched = tokio::task::spawn_blocking(move || {
        let task = task.to_string_lossy().into_owned();
        String::from_utf8_lossy(&stratus(&dir, &["jobs", "launch", "-y", "-d", &task]).stdout)
            .into_owned()
    })
    .await
    .unwrap();
    let id: u64 = launched
        .split("Job ID: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {launched}"));
    world.wait_succeeded(id).await;
    assert!(world.logs(id).await.contains("hello from the stack"));
}
