//! SkyPilot users at home: the CLI behaves as SkyPilot's does where they differed (options
//! after the task file, launch and restart lines, `logs` following, REQUESTED, errors, queue
//! columns and colours, SkyPilot's flags, help examples that run as written).

use std::time::Duration;

use crate::harness::Home;
use crate::text;

const LONG: Duration = Duration::from_mins(1);

fn ok(out: &std::process::Output) -> String {
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    stdout
}

#[test]
fn options_after_the_task_file_are_options_and_n_names_the_task() {
    let home = Home::new();
    let file = home.file("task.yaml", "name: fromfile\nrun: echo hi\n");
    let out = home.run(&[
        "jobs", "launch", "-n", "renamed", &file, "-y", "-d", "--cpus", "1+",
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("Managed Job ID: 1"), "{stdout}");
    let job = home.wait_status(1, &["SUCCEEDED"], LONG);
    assert_eq!(job["name"], "renamed");
    assert_eq!(job["tasks"][0]["name"], "renamed", "{job}");
    assert_eq!(job["tasks"][0]["requested"], "1x[CPU:1+]", "{job}");
    assert!(home.logs(1).contains("(renamed) hi"), "{}", home.logs(1));
    // A file with no .yaml name that holds a task is a task file, as in SkyPilot.
    let bare = home.file("task", "name: bare\nrun: echo bare\n");
    let out = home.run(&["jobs", "launch", &bare, "-y", "-d"]);
    assert!(ok(&out).contains("Managed Job ID: 2"));
    assert_eq!(home.wait_status(2, &["SUCCEEDED"], LONG)["name"], "bare");
    // A pipeline file too (several documents).
    let pipe = home.file("pipe", "name: pipe\n---\nrun: echo a\n---\nrun: echo b\n");
    let out = home.run(&["jobs", "launch", &pipe, "-y", "-d"]);
    assert!(ok(&out).contains("Managed Job ID: 3"));
    assert_eq!(home.wait_status(3, &["SUCCEEDED"], LONG)["name"], "pipe");
}

#[test]
fn log_lines_name_their_process_as_skypilots_do() {
    let home = Home::new();
    let file = home.file(
        "pids.yaml",
        "name: pids\nnum_nodes: 2\nsetup: echo set\nrun: echo ran $$\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    let stdout = ok(&out);
    for rank in 0..2 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("(pids, rank={rank}, pid=")))
            .unwrap_or_else(|| panic!("{stdout}"));
        // The pid is the command's shell: the one `$$` names.
        let pid = line
            .split("pid=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert!(line.ends_with(&format!(" ran {pid}")), "{line}");
        assert!(line.contains(", ip=127.0.0."), "{line}");
    }
    assert!(stdout.contains("(setup, rank=0, pid="), "{stdout}");
    let single = home.file("one.yaml", "name: one\nsetup: echo set\nrun: echo ran\n");
    let stdout = ok(&home.run(&["jobs", "launch", "-y", &single]));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("(setup pid=") && l.ends_with(") set")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("(one, pid=") && l.ends_with(") ran")),
        "{stdout}"
    );
}

#[test]
fn every_launch_logs_cluster_launched_once() {
    let home = Home::new();
    let file = home.file("quick.yaml", "name: quick\nrun: echo quick\n");
    let ids: Vec<u64> = (0..8).map(|_| home.launch_detached(&file, &[])).collect();
    for id in ids {
        home.wait_status(id, &["SUCCEEDED"], LONG);
        let log = home.wait_controller(id, "Job succeeded.");
        assert_eq!(
            log.matches("Cluster launched: ").count(),
            1,
            "job {id}: {log}"
        );
    }
}

#[test]
fn a_restart_is_announced_as_one_and_logs_show_the_current_attempt() {
    let home = Home::new();
    let file = home.file(
        "flaky.yaml",
        "name: flaky\nresources:\n  job_recovery:\n    max_restarts_on_errors: 1\nrun: echo try $SKYPILOT_TASK_ID; exit 7\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &file]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(100), "{stdout}");
    assert!(
        stdout.contains(
            "⚙︎ Job 1 is RECOVERING: The task's run failed with exit code(s) [7]; restarting"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("lost its cluster"), "{stdout}");
    // "Job started" once the job runs, after the waiting line.
    let waiting = stdout.find("├── Waiting for task resources").unwrap();
    let started = stdout.find("└── Job started. Streaming logs...").unwrap();
    assert!(waiting < started, "{stdout}");
    // The end: the mark, the reason, and where the reason is (the task's own log).
    assert!(
        stdout.contains("✗ Managed job finished: 1 (status: FAILED)."),
        "{stdout}"
    );
    assert!(
        stdout.contains("  Reason: The task's run failed with exit code(s) [7]. Its output says why: stratus jobs logs 1"),
        "{stdout}"
    );
    // `logs` shows the current attempt and says so; --all-attempts shows both, each announced.
    let out = home.run(&["jobs", "logs", "1", "--no-follow"]);
    let current = crate::plain_prefixes(&text(&out.stdout));
    assert!(
        current.contains("Showing the output of attempt 2 of task 'flaky'"),
        "{current}"
    );
    assert_eq!(current.matches("(flaky) try").count(), 1, "{current}");
    let out = home.run(&["jobs", "logs", "1", "--no-follow", "--all-attempts"]);
    let all = crate::plain_prefixes(&text(&out.stdout));
    assert_eq!(all.matches("(flaky) try").count(), 2, "{all}");
    assert!(
        all.contains("⚙︎ Attempt 2 of task 'flaky' started."),
        "{all}"
    );
}

#[test]
fn logs_follows_a_pending_job_and_ends_with_a_mark() {
    let home = Home::new();
    let first = home.file("first.yaml", "name: first\nrun: sleep 2\n");
    let then = home.file("then.yaml", "name: then\nrun: echo after\n");
    let a = home.launch_detached(&first, &[]);
    let b = home.launch_detached(&then, &["--depends-on", &a.to_string()]);
    let out = home.run(&["jobs", "logs", &b.to_string()]);
    let stdout = crate::plain_prefixes(&ok(&out));
    assert!(
        stdout.contains(&format!("⚙︎ Job {b} is waiting for resources (PENDING).")),
        "{stdout}"
    );
    assert!(stdout.contains("(then) after"), "{stdout}");
    assert!(
        stdout.contains(&format!("✓ Managed job finished: {b} (status: SUCCEEDED).")),
        "{stdout}"
    );
}

#[test]
fn requested_shows_spot_and_queue_has_skypilot_columns() {
    let home = Home::new();
    let spot = home.file(
        "spot.yaml",
        "name: spot\nresources:\n  use_spot: true\nrun: echo spot\n",
    );
    let bad = home.file("bad.yaml", "name: bad\nrun: exit 3\n");
    let s = home.launch_detached(&spot, &[]);
    let b = home.launch_detached(&bad, &[]);
    let job = home.wait_status(s, &["SUCCEEDED"], LONG);
    assert_eq!(job["tasks"][0]["requested"], "1x[CPU:8+][Spot]", "{job}");
    home.wait_status(b, &["FAILED"], LONG);
    let queue = ok(&home.run(&["jobs", "queue"]));
    assert!(queue.contains("1x[CPU:8+][Spot]"), "{queue}");
    assert!(!queue.contains(" 1 secs ago"), "{queue}");
    assert!(
        !queue.contains('\u{1b}'),
        "no colour when not a terminal: {queue:?}"
    );
    let everyone = ok(&home.run(&["jobs", "queue", "-u"]));
    let header = everyone.lines().find(|l| l.starts_with("ID")).unwrap();
    assert!(
        header.contains(" NAME ") && header.contains(" USER "),
        "{everyone}"
    );
    assert!(everyone.contains("tester"), "{everyone}");
    let verbose = ok(&home.run(&["jobs", "queue", "-v"]));
    let header = verbose.lines().find(|l| l.starts_with("ID")).unwrap();
    for column in ["STARTED", "CLUSTER", "INFRA", "RESOURCES", "DETAILS"] {
        assert!(header.contains(column), "{verbose}");
    }
    let row = verbose
        .lines()
        .find(|l| l.starts_with(&format!("{b} ")))
        .unwrap();
    assert!(
        row.contains("Failure: The task's run failed with exit code(s) [3]"),
        "{verbose}"
    );
}

#[test]
fn a_pipeline_row_shows_its_running_task() {
    let home = Home::new();
    let file = home.file(
        "pipe.yaml",
        "name: pipe\n---\nname: one\nrun: echo one\n---\nname: two\nrun: sleep 30\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_controller(id, "Job started on two-");
    let queue = ok(&home.run(&["jobs", "queue"]));
    let row = queue
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap();
    assert!(row.ends_with("RUNNING (task: 1)"), "{queue}");
    ok(&home.run(&["jobs", "cancel", "-y", &id.to_string()]));
}

#[test]
fn queue_colours_statuses_on_a_terminal() {
    let home = Home::new();
    let id = home.launch_detached(&home.file("ok.yaml", "name: ok\nrun: echo ok\n"), &[]);
    home.wait_status(id, &["SUCCEEDED"], LONG);
    let on_tty = home.run_on_pty(&["jobs", "queue"]);
    assert!(on_tty.contains("\u{1b}[32mSUCCEEDED"), "{on_tty:?}");
    let server_log = std::fs::read_to_string(home.path().join("api/server.log")).unwrap();
    assert!(
        !server_log.contains('\u{1b}'),
        "server log has colour codes"
    );
}

#[test]
fn a_waiting_launch_shows_a_spinner_on_a_terminal_only() {
    let home = Home::new();
    let first = home.launch_detached(&home.file("first.yaml", "name: first\nrun: sleep 3\n"), &[]);
    let then = home.file("then.yaml", "name: then\nrun: echo after\n");
    let after = first.to_string();
    let on_tty = home.run_on_pty(&["jobs", "launch", "-y", &then, "--depends-on", &after]);
    assert!(
        on_tty.contains("Job 2 is waiting for resources (PENDING)"),
        "{on_tty:?}"
    );
    assert!(on_tty.contains("(then, pid="), "{on_tty:?}");
    // Off a terminal, no spinner and no escape codes.
    let again = home.run(&["jobs", "launch", "-y", &then, "--depends-on", "2"]);
    let stdout = ok(&again);
    assert!(
        !stdout.contains("waiting for resources") && !stdout.contains('\u{1b}'),
        "{stdout:?}"
    );
    assert!(
        !text(&again.stderr).contains('\u{1b}'),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn errors_name_the_flag_and_the_fix() {
    let home = Home::new();
    // An unknown region is bad input, with the regions there are.
    let out = home.run(&[
        "jobs",
        "launch",
        "-y",
        "--infra",
        "aws/us-nowhere-9",
        "--",
        "echo",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("AWS has no region 'us-nowhere-9'"),
        "{}",
        text(&out.stderr)
    );
    // A cloud with no credentials: say which and how to enable it.
    let out = home.run(&["jobs", "launch", "-y", "--infra", "aws", "--", "echo"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("fits on AWS") && err.contains("stratus check"),
        "{err}"
    );
    // envs as a list: the fix is in the message.
    let list = home.file("list.yaml", "name: l\nenvs: [A=1]\nrun: echo\n");
    let out = home.run(&["jobs", "launch", "-y", &list]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("write envs as a mapping"),
        "{}",
        text(&out.stderr)
    );
    // Two typos, two errors, each at its line.
    let typos = home.file(
        "typos.yaml",
        "name: t\nresources:\n  cpu: 2\nsetpu: x\nrun: echo\n",
    );
    let out = home.run(&["jobs", "launch", "-y", &typos]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("line 3, column 3: resources.cpu: unknown field 'cpu' (did you mean 'cpus'?)"),
        "{err}"
    );
    assert!(
        err.contains("and line 4, column 1: setpu: unknown field 'setpu' (did you mean 'setup'?)"),
        "{err}"
    );
    // A missing workdir given by flag is reported as the flag.
    let ok_file = home.file("w.yaml", "name: w\nrun: echo\n");
    let out = home.run(&["jobs", "launch", "-y", "--workdir", "/nope", &ok_file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--workdir: '/nope' does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_task_with_no_run_succeeds_without_a_cluster() {
    let home = Home::new();
    let file = home.file("empty.yaml", "name: empty\nsetup: echo set\n");
    let out = home.run(&["jobs", "launch", "-y", &file]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("✓ Managed job finished: 1 (status: SUCCEEDED)."),
        "{stdout}"
    );
    let log = home.controller_log(1);
    assert!(log.contains("no `run` command"), "{log}");
    assert!(!log.contains("Cluster launched"), "{log}");
}

#[test]
fn skypilots_flags_work_or_say_what_to_use() {
    let home = Home::new();
    let env = home.file("vars.env", "# comment\nA=1\nexport B=\"two words\"\n");
    let file = home.file("t.yaml", "name: t\nenvs:\n  A:\n  B:\nrun: echo $A $B\n");
    let out = home.run(&[
        "jobs",
        "launch",
        "--dry-run",
        &file,
        "--env-file",
        &env,
        "--job-recovery",
        "failover",
        "--cloud",
        "aws",
        "--region",
        "us-east-1",
        "-c",
        "old",
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("Managed job 'old'"), "{stdout}");
    assert!(stdout.contains("envs: A, B"), "{stdout}");
    assert!(stdout.contains("recovery: FAILOVER"), "{stdout}");
    assert!(stdout.contains("on AWS us-east-1"), "{stdout}");
    let id = home.launch_detached(&file, &["--env-file", &env]);
    home.wait_status(id, &["SUCCEEDED"], LONG);
    assert!(
        home.logs(id).contains("(t) 1 two words"),
        "{}",
        home.logs(id)
    );
    let out = home.run(&["jobs", "logs", &id.to_string(), "--sync-down"]);
    assert!(ok(&out).contains("stratus_logs/managed_jobs/job-1"));
    let saved = home.path().join("home/stratus_logs/managed_jobs/job-1");
    let run = crate::plain_prefixes(&std::fs::read_to_string(saved.join("run.log")).unwrap());
    assert!(run.contains("(t) 1 two words"), "{run}");
    let controller = std::fs::read_to_string(saved.join("controller.log")).unwrap();
    assert!(controller.contains("Job succeeded."), "{controller}");
    let out = home.run(&["jobs", "logs", &id.to_string(), "--refresh", "--no-follow"]);
    assert!(text(&out.stderr).contains("Stratus has none to restart"));
    assert!(crate::plain_prefixes(&ok(&out)).contains("(t) 1 two words"));
    let out = home.run(&["jobs", "dashboard", "--no-open"]);
    assert!(ok(&out).contains("Dashboard: http://127.0.0.1:"));
}

/// Every `Example:` line of every `--help`, split as a shell would.
fn help_examples(home: &Home) -> Vec<Vec<String>> {
    let mut examples = Vec::new();
    let mut paths: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = paths.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = ok(&home.run(&args));
        let mut section = "";
        for line in help.lines() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or("");
            // A command's line is indented two spaces; its wrapped description more.
            let command_line = !line.starts_with("   ");
            if section.starts_with("Commands:") && command_line && word != "help" {
                paths.push([path.clone(), vec![word.to_owned()]].concat());
            }
            if section.starts_with("Example") && line.trim_start().starts_with("stratus ") {
                let command = line.split(" #").next().unwrap().trim();
                examples.push(shlex::split(command).expect("an example splits")[1..].to_vec());
            }
        }
    }
    examples
}

#[test]
fn every_help_example_runs_as_written() {
    let home = Home::new();
    for (name, body) in [
        ("task.yaml", "name: train\nrun: echo train\n"),
        ("evaluate.yaml", "name: evaluate\nrun: echo evaluate\n"),
        (
            "shard.yaml",
            "name: shard\nrun: echo shard $SKYPILOT_JOB_RANK\n",
        ),
    ] {
        home.file(name, body);
    }
    // Jobs 1-4 (3 runs until cancelled, on spot so that it can be preempted), then an array
    // at 5.
    let quick = home.file("quick.yaml", "name: quick\nrun: echo quick\n");
    let long = home.file(
        "long.yaml",
        "name: long\nresources:\n  use_spot: true\nrun: sleep 600\n",
    );
    for file in [&quick, &quick, &long, &quick] {
        home.launch_detached(file, &[]);
    }
    let out = home.run(&["jobs", "launch", "-y", "--num-jobs", "4", "task.yaml"]);
    assert!(ok(&out).contains("Managed job array 5"));
    home.wait_controller(3, "Job started on");
    let mut examples = help_examples(&home);
    assert!(examples.len() >= 25, "{examples:?}");
    // What cancels goes last, so the examples before it find their jobs.
    examples.sort_by_key(|e| e.iter().any(|w| w == "cancel"));
    let mut failures = Vec::new();
    for example in &examples {
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        let Some(out) = home.run_timeout(&args, &[("WANDB_API_KEY", "k")], LONG) else {
            failures.push(format!(
                "stratus {}: still running after {LONG:?}",
                args.join(" ")
            ));
            continue;
        };
        let code = out.status.code();
        // Logging in needs AWS credentials and the (made-up) deployed API: it fails, but not
        // as a usage error. Everything else must succeed, or (`logs` of a job that failed)
        // end with the job's exit code.
        let fine = match args.as_slice() {
            ["api", "login", ..] => code == Some(1),
            ["jobs", "logs", ..] => matches!(code, Some(0 | 100)),
            _ => code == Some(0),
        };
        if !fine {
            failures.push(format!(
                "stratus {} -> {code:?}\n{}{}",
                args.join(" "),
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// The `stratus` lines of the README's shell blocks, in order, as a shell would split them;
/// lines with placeholders (`<ApiUrl>`) or other programs need a deployed stack and are left
/// to the emulator tests.
fn readme_examples() -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut examples = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_shell = !in_shell && trimmed == "```sh";
            continue;
        }
        let command = trimmed.split(" #").next().unwrap().trim();
        if in_shell
            && command.starts_with("stratus ")
            && !command.contains('<')
            && !command.contains("&&")
        {
            examples.push(shlex::split(command).expect("an example splits")[1..].to_vec());
        }
    }
    examples
}

#[test]
fn the_readmes_examples_run_as_written() {
    let home = Home::new();
    home.file("task.yaml", "name: train\nrun: echo train\n");
    home.file(
        "shard.yaml",
        "name: shard\nrun: echo shard $SKYPILOT_JOB_RANK\n",
    );
    let examples = home.path().join("examples");
    std::fs::create_dir_all(&examples).unwrap();
    for name in ["checkpoint.yaml", "hello.yaml", "pipeline.yaml"] {
        std::fs::copy(crate::harness::example(name), examples.join(name)).unwrap();
    }
    let lines = readme_examples();
    assert!(lines.len() >= 15, "{lines:?}");
    let mut failures = Vec::new();
    for example in &lines {
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        // Someone who preempts a job waits until it runs, as this does.
        if let ["local", "preempt", id] = args.as_slice() {
            home.wait_controller(id.parse().unwrap(), "Job started on");
        }
        let Some(out) = home.run_timeout(&args, &[], LONG) else {
            failures.push(format!(
                "stratus {}: still running after {LONG:?}",
                args.join(" ")
            ));
            continue;
        };
        if out.status.code() != Some(0) {
            failures.push(format!(
                "stratus {} -> {:?}\n{}{}",
                args.join(" "),
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    // The preempted job recovered on a new cluster and finished (its logs were followed).
    let job = home.job(2);
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["recoveries"], 1, "{job}");
}
