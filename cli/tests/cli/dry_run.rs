//! `stratus jobs launch --dry-run`: plans, flags, errors and exit codes.

use std::path::Path;

use crate::{stratus, text};

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_valid_file_prints_the_table_and_the_plan() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        "train.yaml",
        "name: train\nresources:\n  infra: aws\n  accelerators: A10G\n  use_spot: true\n  job_recovery:\n    max_restarts_on_errors: 2\nenvs:\n  LR: 1e-6\nsecrets:\n  TOKEN: hunter2\nrun: python train.py\n",
    );
    let out = stratus(&["jobs", "launch", "--dry-run", &file], home.path(), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Managed job 'train' will be launched on (estimated):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Considered resources (1 node):"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" INFRA ") && stdout.contains("COST ($)") && stdout.contains("CHOSEN"),
        "{stdout}"
    );
    assert!(
        stdout.contains("g5.xlarge[Spot]") && stdout.contains('✔'),
        "{stdout}"
    );
    assert!(
        stdout.contains("recovery: EAGER_NEXT_REGION, max_restarts_on_errors: 2"),
        "{stdout}"
    );
    assert!(stdout.contains("envs: LR"), "{stdout}");
    assert!(stdout.contains("secrets: TOKEN=<redacted>"), "{stdout}");
    assert!(
        !stdout.contains("hunter2"),
        "a secret was printed: {stdout}"
    );
    assert!(stdout.contains("Not enabled here: AWS, GCP"), "{stdout}");
    assert!(
        stdout.contains("Dry run: nothing was launched."),
        "{stdout}"
    );
    assert!(
        !home.path().join(".stratus").exists(),
        "a dry run must touch nothing"
    );
}

#[test]
fn an_invalid_file_exits_2_naming_the_field_and_line() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        "bad.yaml",
        "name: x\nresources:\n  cpus: 2\n  accelerators: V1OO:1\nrun: echo\n",
    );
    let out = stratus(&["jobs", "launch", "--dry-run", &file], home.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml: line 4, column 3: resources.accelerators"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean 'V100'?"), "{stderr}");
    assert!(text(&out.stdout).is_empty());

    let file = write(home.path(), "typo.yaml", "run: echo\nnum_node: 2\n");
    let out = stratus(&["jobs", "launch", "--dry-run", &file], home.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "line 2, column 1: num_node: unknown field 'num_node' (did you mean 'num_nodes'?)"
        ),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec!["jobs", "launch", "--dry-run"],
        vec!["jobs", "launch", "--dry-run", "missing.yaml"],
        vec!["jobs", "launch", "--dry-run", "--bogus", "x.yaml"],
        vec![
            "jobs",
            "launch",
            "--dry-run",
            "--env",
            "NOT_SET_ANYWHERE",
            "--",
            "echo",
        ],
        vec![
            "jobs",
            "launch",
            "--dry-run",
            "--gpus",
            "V1OO",
            "--",
            "echo",
        ],
        vec![
            "jobs",
            "launch",
            "--dry-run",
            "-n",
            "bad name",
            "--",
            "echo",
        ],
    ] {
        let out = stratus(&args, home.path(), &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty(), "{args:?}");
    }
}

#[test]
fn an_inline_command_takes_the_flags() {
    let home = tempfile::tempdir().unwrap();
    let out = stratus(
        &[
            "jobs",
            "launch",
            "--dry-run",
            "-n",
            "cmd",
            "--infra",
            "gcp/us-central1",
            "--cpus",
            "4+",
            "--use-spot",
            "--num-nodes",
            "2",
            "--env",
            "FROM_CALLER",
            "--",
            "python",
            "train.py",
            "--lr",
            "1",
        ],
        home.path(),
        &[("FROM_CALLER", "yes")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Managed job 'cmd'"), "{stdout}");
    assert!(
        stdout.contains("Considered resources (2 nodes):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Task 0 'cmd': 2 nodes on GCP us-central1"),
        "{stdout}"
    );
    assert!(stdout.contains("[Spot]"), "{stdout}");
    assert!(stdout.contains("envs: FROM_CALLER"), "{stdout}");
}

#[test]
fn nothing_fits_exits_1_with_a_reason_per_cloud() {
    let home = tempfile::tempdir().unwrap();
    let out = stratus(
        &[
            "jobs",
            "launch",
            "--dry-run",
            "--gpus",
            "K80:3",
            "--",
            "echo",
        ],
        home.path(),
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("No resource fits task 'stratus-cmd':"),
        "{stdout}"
    );
    assert!(stdout.contains("  AWS: no K80"), "{stdout}");
    assert!(stdout.contains("  GCP: no K80"), "{stdout}");
    assert!(stdout.contains("  Local: no accelerators"), "{stdout}");
}

#[test]
fn a_user_catalog_overrides_the_embedded_one() {
    let home = tempfile::tempdir().unwrap();
    let catalogs = home.path().join(".stratus/catalogs");
    std::fs::create_dir_all(&catalogs).unwrap();
    std::fs::write(
        catalogs.join("aws.csv"),
        "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,Region,AvailabilityZone,Price,SpotPrice\n\
         my.cheap,8,32,,,ap-south-1,ap-south-1a,0.01,0.005\n",
    )
    .unwrap();
    let out = stratus(
        &[
            "jobs",
            "launch",
            "--dry-run",
            "--infra",
            "aws",
            "--",
            "echo",
        ],
        home.path(),
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("AWS ap-south-1 (ap-south-1a) my.cheap"),
        "{stdout}"
    );
}

#[test]
fn a_pipeline_plans_each_task_and_warns_of_ignored_fields() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        "pipe.yaml",
        "name: pipe\n---\nname: prep\nresources:\n  autostop: 10\nrun: echo a\n---\nname: train\nresources:\n  accelerators: T4\nrun: echo b\n",
    );
    let out = stratus(&["jobs", "launch", "--dry-run", &file], home.path(), &[]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("Considered resources for task 'prep' (1 node):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Considered resources for task 'train' (1 node):"),
        "{stdout}"
    );
    assert!(stdout.contains("Plan (2 tasks, run in order):"), "{stdout}");
    assert!(
        stderr.contains("Warning: ") && stderr.contains("resources.autostop: ignored"),
        "{stderr}"
    );
}
