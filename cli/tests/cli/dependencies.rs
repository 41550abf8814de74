//! `--depends-on`, Slurm's meanings, through the real binary.

use std::time::Duration;

use crate::harness::Home;
use crate::text;

const LONG: Duration = Duration::from_mins(1);

#[test]
fn afterok_on_a_failing_job_is_cancelled_with_the_reason_and_afternotok_runs() {
    let home = Home::new();
    // It fails when the test says so, after the checks of its dependents' waiting.
    let release = home.path().join("release");
    let failing = home.file(
        "fails.yaml",
        &format!(
            "name: fails\nrun: |\n  while [ ! -f {r} ]; do sleep 0.2; done\n  exit 3\n",
            r = release.display()
        ),
    );
    let first = home.launch_detached(&failing, &[]);
    let then = home.file("then.yaml", "name: then\nrun: echo ran after\n");
    let ok = home.launch_detached(&then, &["--depends-on", &format!("{first}:afterok")]);
    let notok = home.launch_detached(&then, &["--depends-on", &format!("{first}:afternotok")]);

    // Both wait while the first runs, and the queue says what for.
    assert_eq!(home.job(ok)["status"], "PENDING");
    assert_eq!(
        home.job(notok)["depends_on"][0],
        format!("{first}:afternotok")
    );
    let queue = text(&home.run(&["jobs", "queue"]).stdout);
    assert!(
        queue.contains(&format!("Job {ok} depends on {first}:afterok.")),
        "{queue}"
    );

    std::fs::write(&release, "").unwrap();
    home.wait_status(first, &["FAILED"], LONG);
    let cancelled = home.wait_status(ok, &["CANCELLED", "SUCCEEDED"], LONG);
    assert_eq!(cancelled["status"], "CANCELLED");
    let reason = cancelled["failure_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("Job {first} it depends on ended FAILED"))
            && reason.contains("afterok"),
        "{cancelled}"
    );
    assert!(home.launched_clusters(ok).is_empty(), "it never launched");
    let ran = home.wait_status(notok, &["SUCCEEDED", "CANCELLED", "FAILED"], LONG);
    assert_eq!(ran["status"], "SUCCEEDED");
    assert!(home.logs(notok).contains("ran after"));
    assert!(home.controller_log(notok).contains(&format!(
        "Waiting for job(s) {first}:afternotok before launching."
    )));
}

#[test]
fn a_dependency_that_is_not_yours_or_not_a_dependency_is_bad_input() {
    let home = Home::new();
    let then = home.file("then.yaml", "name: then\nrun: echo x\n");
    let out = home.run(&["jobs", "launch", "-y", "-d", "--depends-on", "999", &then]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("job 999 is not one of your jobs"),
        "{}",
        text(&out.stderr)
    );
    let out = home.run(&[
        "jobs",
        "launch",
        "-y",
        "-d",
        "--depends-on",
        "1:aftrok",
        &then,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean 'afterok'"),
        "{}",
        text(&out.stderr)
    );
    let out = home.run(&["jobs", "queue", "-a", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]", "nothing was stored");
}
