//! Local mode end to end: real `stratus` commands, a real local control plane, real node
//! processes, in a temporary `$STRATUS_HOME` per test.

use std::time::Duration;

use crate::harness::{Home, example};
use crate::text;

const LONG: Duration = Duration::from_mins(1);

#[test]
fn hello_succeeds_and_stays_visible() {
    let home = Home::new();
    let out = home.run(&["jobs", "launch", "-y", &example("hello.yaml")]);
    let stdout = crate::plain_prefixes(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // `-y` shows the choice, not the table it would have asked about.
    assert!(stdout.contains("Task 'hello' will run on 1x "), "{stdout}");
    assert!(!stdout.contains("Considered resources"), "{stdout}");
    assert!(stdout.contains("⚙︎ Job submitted, ID: 1"), "{stdout}");
    assert!(stdout.contains("(hello) Hello from Stratus!"), "{stdout}");
    assert!(
        stdout.contains("✓ Managed job finished: 1 (status: SUCCEEDED)."),
        "{stdout}"
    );
    assert!(
        stdout.contains("stratus jobs logs --controller 1"),
        "{stdout}"
    );

    let queue = text(&home.run(&["jobs", "queue"]).stdout);
    let row = queue
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("{queue}"));
    for column in ["hello", "1x[CPU:2+]", "SUCCEEDED"] {
        assert!(row.contains(column), "{queue}");
    }
    assert!(
        queue.contains("ID  TASK  NAME") && queue.contains("#RECOVERIES"),
        "{queue}"
    );

    let logs = home.run(&["jobs", "logs", "--no-follow", "1"]);
    assert_eq!(logs.status.code(), Some(0));
    assert!(
        text(&logs.stdout).contains("Hello from Stratus!"),
        "{}",
        text(&logs.stdout)
    );
    let controller = home.wait_controller(1, "Cleanup: cluster hello-1-1 is torn down.");
    assert!(
        controller.contains("Launching hello-1-1 on local/zone-a"),
        "{controller}"
    );
    assert!(
        controller.contains("Cleanup: cluster hello-1-1 is torn down."),
        "{controller}"
    );
    home.wait_no_nodes(Duration::from_secs(10));
}

#[test]
fn a_failing_run_exits_100_from_launch_and_logs() {
    let home = Home::new();
    let file = home.file(
        "fail.yaml",
        "name: fail\nrun: |\n  echo about to fail\n  exit 1\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(100), "{stdout}");
    assert!(stdout.contains("about to fail"), "{stdout}");
    assert!(stdout.contains("(status: FAILED)"), "{stdout}");
    assert_eq!(home.job(1)["status"], "FAILED");
    let logs = home.run(&["jobs", "logs", "1"]);
    assert_eq!(logs.status.code(), Some(100));
    assert!(text(&logs.stdout).contains("about to fail"));
}

#[test]
fn a_failing_setup_is_failed_setup() {
    let home = Home::new();
    let file = home.file(
        "setup.yaml",
        "setup: echo broken setup; exit 3\nrun: echo never\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(100));
    let job = home.job(1);
    assert_eq!(job["status"], "FAILED_SETUP");
    let logs = home.logs(1);
    assert!(
        logs.contains("broken setup") && !logs.contains("never"),
        "{logs}"
    );
}

#[test]
fn a_failed_task_cancels_the_rest_of_the_pipeline() {
    let home = Home::new();
    let file = home.file(
        "pipe.yaml",
        "name: pipe\n---\nname: one\nrun: echo first\n---\nname: two\nrun: exit 1\n---\nname: three\nrun: echo third\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out.stdout));
    let job = home.job(1);
    let statuses: Vec<&str> = job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["SUCCEEDED", "FAILED", "CANCELLED"]);
    assert_eq!(job["status"], "FAILED");
    let queue = text(&home.run(&["jobs", "queue"]).stdout);
    let sub_rows: Vec<&str> = queue.lines().filter(|l| l.starts_with(" ↳")).collect();
    assert_eq!(sub_rows.len(), 3, "{queue}");
    assert!(
        sub_rows[0].contains("one") && sub_rows[0].contains("SUCCEEDED"),
        "{queue}"
    );
    assert!(
        sub_rows[1].contains("two") && sub_rows[1].contains("FAILED"),
        "{queue}"
    );
    assert!(
        sub_rows[2].contains("three") && sub_rows[2].contains("CANCELLED"),
        "{queue}"
    );
}

#[test]
fn the_example_pipeline_passes_data_between_tasks() {
    let home = Home::new();
    let out = home.run(&["jobs", "launch", "-y", &example("pipeline.yaml")]);
    let stdout = crate::plain_prefixes(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("(train) Training on: rows from sky-managed-"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(eval) Evaluating: model trained by"),
        "{stdout}"
    );
}

#[test]
fn preemption_recovers_in_the_other_zone_and_resumes_from_the_checkpoint() {
    let home = Home::new();
    let id = home.launch_detached(
        &example("checkpoint.yaml"),
        &["--env", "STEPS=16", "--env", "STEP_SECONDS=0.3"],
    );
    home.wait_status(id, &["RUNNING"], LONG);
    // Let it save a few steps first.
    let deadline = std::time::Instant::now() + LONG;
    while !home.logs(id).contains("step 3/16") {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress: {}",
            home.logs(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = home.run(&["local", "preempt", &id.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job = home.wait_status(id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(job["status"], "SUCCEEDED");
    assert_eq!(job["recoveries"], 1);
    assert_eq!(
        job["tasks"][0]["infra"], "Local (zone-b)",
        "relaunched in the other zone"
    );

    let logs = home.logs(id);
    assert!(logs.contains("Resuming from checkpoint at step"), "{logs}");
    assert!(logs.contains("Training done after 16 steps."), "{logs}");
    let controller = home.wait_controller(id, "Job succeeded.");
    assert!(
        controller.contains("was preempted; recovering on a new cluster (EAGER_NEXT_REGION)"),
        "{controller}"
    );
    assert!(
        controller.contains("Launching checkpoint-1-2 on local/zone-b"),
        "{controller}"
    );
    assert!(controller.contains("RECOVERING"), "{controller}");
    assert_eq!(home.launched_clusters(id).len(), 2);
    home.wait_no_nodes(Duration::from_secs(10));
}

#[test]
fn the_task_id_is_the_same_after_a_recovery() {
    let home = Home::new();
    let file = home.file(
        "id.yaml",
        "name: ids\nrun: |\n  echo \"ID=$SKYPILOT_TASK_ID\"\n  sleep 30\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["RUNNING"], LONG);
    let deadline = std::time::Instant::now() + LONG;
    while !home.logs(id).contains("ID=") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    home.run(&["local", "preempt", &id.to_string()]);
    while home.logs(id).matches("ID=").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", home.logs(id));
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = home.logs(id);
    let ids: Vec<&str> = logs.lines().filter_map(|l| l.split("ID=").nth(1)).collect();
    assert_eq!(ids.len(), 2, "{logs}");
    assert_eq!(
        ids[0], ids[1],
        "SKYPILOT_TASK_ID changed across the recovery"
    );
    assert!(
        ids[0].starts_with("sky-managed-") && ids[0].ends_with("_ids_1-0"),
        "{logs}"
    );
    home.run(&["jobs", "cancel", "-y", &id.to_string()]);
    home.wait_status(id, &["CANCELLED"], LONG);
}

#[test]
fn max_restarts_on_errors_runs_twice_then_fails() {
    let home = Home::new();
    let file = home.file(
        "restarts.yaml",
        "name: flaky\nresources:\n  job_recovery:\n    max_restarts_on_errors: 1\nrun: |\n  echo attempt\n  exit 7\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out.stdout));
    let job = home.job(1);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["tasks"][0]["restarts"], 1);
    assert_eq!(
        home.logs(1).matches("attempt").count(),
        2,
        "{}",
        home.logs(1)
    );
    assert_eq!(home.launched_clusters(1).len(), 2);
}

#[test]
fn recover_on_exit_codes_restarts_without_counting() {
    let home = Home::new();
    let file = home.file(
        "codes.yaml",
        "name: codes\nresources:\n  job_recovery:\n    recover_on_exit_codes: [29]\n\
         file_mounts:\n  ~/state:\n    name: exit-code-state\n    mode: MOUNT\n\
         run: |\n  if [ -f ~/state/tried ]; then echo second run; exit 0; fi\n  touch ~/state/tried\n  echo first run\n  exit 29\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let job = home.job(1);
    assert_eq!(job["status"], "SUCCEEDED");
    assert!(job["recoveries"].as_u64().unwrap() >= 1, "{job}");
    assert_eq!(job["tasks"][0]["restarts"], 0);
    let logs = home.logs(1);
    assert!(
        logs.contains("first run") && logs.contains("second run"),
        "{logs}"
    );
}

#[test]
fn cancel_while_starting_running_and_recovering() {
    // Nodes take 2 s to "boot", so STARTING and RECOVERING last long enough to be seen.
    let home = Home::with_env(&[("STRATUS_LOCAL_BOOT_DELAY_MS", "2000")]);
    let file = home.file(
        "sleepy.yaml",
        "name: sleepy\nrun: |\n  echo started work\n  sleep 300\n",
    );

    let starting = home.launch_detached(&file, &[]);
    home.wait_status(starting, &["STARTING"], LONG);
    let out = home.run(&["jobs", "cancel", "-y", &starting.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    home.wait_status(starting, &["CANCELLED"], LONG);

    let running = home.launch_detached(&file, &[]);
    home.wait_status(running, &["RUNNING"], LONG);
    let deadline = std::time::Instant::now() + LONG;
    while !home.logs(running).contains("started work") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    home.run(&["jobs", "cancel", "-y", &running.to_string()]);
    home.wait_status(running, &["CANCELLED"], LONG);
    assert!(
        home.logs(running).contains("started work"),
        "output before the cancel is kept"
    );

    let recovering = home.launch_detached(&file, &[]);
    home.wait_status(recovering, &["RUNNING"], LONG);
    home.run(&["local", "preempt", &recovering.to_string()]);
    home.wait_status(recovering, &["RECOVERING"], LONG);
    home.run(&["jobs", "cancel", "-y", &recovering.to_string()]);
    home.wait_status(recovering, &["CANCELLED"], LONG);

    home.wait_no_nodes(Duration::from_secs(15));
}

#[test]
fn with_every_zone_full_a_job_waits_then_starts_when_a_slot_frees() {
    let home = Home::with_env(&[("STRATUS_LOCAL_SLOTS", "zone-a=1,zone-b=1")]);
    let blocker = home.file("blocker.yaml", "name: blocker\nrun: sleep 300\n");
    let first = home.launch_detached(&blocker, &[]);
    let second = home.launch_detached(&blocker, &[]);
    home.wait_status(first, &["RUNNING"], LONG);
    home.wait_status(second, &["RUNNING"], LONG);

    let waiting = home.launch_detached(&example("hello.yaml"), &[]);
    home.wait_status(waiting, &["PENDING"], LONG);
    home.wait_controller(waiting, "No capacity on any of the 2 candidates");

    home.run(&["jobs", "cancel", "-y", &first.to_string()]);
    let job = home.wait_status(waiting, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(job["status"], "SUCCEEDED");
    home.run(&["jobs", "cancel", "-y", &second.to_string()]);
}

#[test]
fn a_crashed_control_plane_picks_the_job_up_again() {
    let home = Home::new();
    let file = home.file(
        "steady.yaml",
        "name: steady\nrun: |\n  for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.5; done\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["RUNNING"], LONG);
    let pid = home.server_pid();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(1500));
    // Any command starts it again.
    let job = home.wait_status(id, &["SUCCEEDED", "FAILED", "FAILED_CONTROLLER"], LONG);
    assert_eq!(job["status"], "SUCCEEDED", "{}", home.controller_log(id));
    assert_eq!(job["recoveries"], 0);
    assert_eq!(
        home.launched_clusters(id).len(),
        1,
        "no second cluster was launched"
    );
    assert!(home.logs(id).contains("tick 8"));
}

#[test]
fn required_envs_and_redacted_secrets() {
    let home = Home::new();
    let file = home.file(
        "secret.yaml",
        "name: secretive\nenvs:\n  WANDB_PROJECT:\nsecrets:\n  API_TOKEN:\nrun: |\n  echo \"project=$WANDB_PROJECT\"\n  [ \"$API_TOKEN\" = hunter2-secret ] && echo token-ok\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("WANDB_PROJECT has no value"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        home.cluster_folders().is_empty(),
        "a rejected launch starts nothing"
    );

    let out = home.run_env(
        &[
            "jobs",
            "launch",
            "-y",
            "--env",
            "WANDB_PROJECT",
            "--secret",
            "API_TOKEN=hunter2-secret",
            &file,
        ],
        &[("WANDB_PROJECT", "from-my-shell")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("project=from-my-shell"), "{stdout}");
    assert!(
        stdout.contains("token-ok"),
        "the secret reached the task: {stdout}"
    );
    assert!(!stdout.contains("hunter2-secret"));
    let queue = text(&home.run(&["jobs", "queue", "--json"]).stdout);
    let controller = home.wait_controller(1, "Job succeeded.");
    assert!(!queue.contains("hunter2-secret") && !controller.contains("hunter2-secret"));
    assert!(!home.logs(1).contains("hunter2-secret"));
}

#[test]
fn with_jobs_bucket_the_workdir_travels_through_that_bucket_which_outlives_the_job() {
    let home = Home::new();
    let root = home.path().to_path_buf();
    std::fs::write(
        root.join("config.yaml"),
        "jobs:\n  bucket: s3://team-scratch\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("project")).unwrap();
    std::fs::write(root.join("project/data.txt"), "rows from the workdir\n").unwrap();
    let file = home.file(
        "wd.yaml",
        "name: wd\nworkdir: ./project\nrun: cat data.txt\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("rows from the workdir"), "{stdout}");
    assert!(
        stderr.contains("Uploading ./project to s3://team-scratch/job-"),
        "{stderr}"
    );
    // The archive went to the bucket (the local cloud's folder for it), under the launch's
    // job-<id>/ folder, never to the deployment's store; the cleanup deletes it and keeps
    // the bucket.
    let bucket = root.join("buckets/s3/team-scratch");
    let archives = || -> usize {
        walk(&bucket)
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
            .count()
    };
    assert!(
        std::fs::read_dir(&bucket)
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with("job-")),
        "{:?}",
        walk(&bucket)
    );
    home.wait_controller(1, "intermediate file(s) deleted");
    assert_eq!(archives(), 0, "{:?}", walk(&bucket));
    assert!(bucket.is_dir());
    assert!(walk(&root.join("blobs/uploads")).is_empty());

    // A bucket that is not one is bad input: exit 2, naming the setting.
    std::fs::write(root.join("config.yaml"), "jobs:\n  bucket: my-bucket\n").unwrap();
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("jobs.bucket"),
        "{}",
        text(&out.stderr)
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn workdir_and_local_file_mounts_reach_every_node_and_are_cleaned_up() {
    let home = Home::new();
    let project = home.file("unused", "");
    let root = std::path::Path::new(&project)
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::create_dir_all(root.join("project/src")).unwrap();
    std::fs::write(
        root.join("project/src/train.sh"),
        "echo \"training on rank $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES\"\n",
    )
    .unwrap();
    std::fs::write(root.join("settings.json"), "{\"lr\": 0.1}").unwrap();
    let file = home.file(
        "wd.yaml",
        "name: wd\nnum_nodes: 2\nworkdir: ./project\nfile_mounts:\n  ~/conf/settings.json: ./settings.json\n\
         run: |\n  bash src/train.sh\n  cat ~/conf/settings.json; echo\n  echo \"ips: $(echo $SKYPILOT_NODE_IPS | tr '\\n' ' ')\"\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    let stdout = crate::plain_prefixes(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("(wd, rank=0) training on rank 0 of 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(wd, rank=1) training on rank 1 of 2"),
        "{stdout}"
    );
    assert!(stdout.contains("{\"lr\": 0.1}"), "{stdout}");
    assert!(stdout.contains("ips: 127.0.0.1 127.0.0.2"), "{stdout}");
    // The cleanup deletes the uploaded archives; the logs stay.
    let deadline = std::time::Instant::now() + LONG;
    let uploads = root.join("blobs/uploads");
    // uploads/<user's space>/<session>/<archive>: any archive left?
    let any_upload = || {
        let entries = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir)
                .map(|e| e.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        entries(&uploads)
            .iter()
            .flat_map(|space| entries(space))
            .any(|session| !entries(&session).is_empty())
    };
    while any_upload() {
        assert!(
            std::time::Instant::now() < deadline,
            "uploads were not cleaned up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(home.logs(1).contains("training on rank 1 of 2"));
    home.wait_controller(1, "intermediate file(s) deleted");
    // Torn down, the cluster's folder is gone too.
    let deadline = std::time::Instant::now() + LONG;
    while !home.cluster_folders().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "cluster folders left: {:?}",
            home.cluster_folders()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
