//! `stratus jobs queue | logs | cancel`, and the log follower `launch` shares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use shared::api::JobView;
use shared::clock::{Clock, SystemClock, Timestamp};
use shared::job::cost::format_usd;
use shared::job::{JobStatus, Phase};

use crate::Failure;
use crate::client::{self, Client};
use crate::home::stratus_home;
use crate::local;

/// Exit code of `launch` and `logs` when the job ended in anything but SUCCEEDED.
pub const JOB_FAILED: u8 = 100;

/// The exit code a finished (or still running) job maps to.
pub fn exit_code(status: JobStatus) -> u8 {
    if status.is_terminal() && status != JobStatus::Succeeded {
        JOB_FAILED
    } else {
        0
    }
}

fn connect() -> Result<Client, Failure> {
    Ok(local::ensure(&stratus_home())?)
}

/// Show managed jobs: one row per job, one per task under a pipeline, and one per job array
/// (`--array ID` lists its jobs).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stratus jobs queue\n  stratus jobs queue -a --json\n  stratus jobs queue --array 5 -s"
)]
pub struct QueueArgs {
    /// Show every job, not only the latest ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// How many of the latest jobs to show.
    #[arg(short = 'l', long, default_value_t = 50)]
    limit: usize,
    /// Show every user's jobs (admins only).
    #[arg(short = 'u', long)]
    all_users: bool,
    /// Print JSON (the same data) for scripts.
    #[arg(long)]
    json: bool,
    /// Only jobs that have not finished.
    #[arg(short = 's', long)]
    skip_finished: bool,
    /// The jobs of this job array (its ID is its first job's), one row each.
    #[arg(long, value_name = "ID", conflicts_with_all = ["all", "all_users"])]
    array: Option<u64>,
}

pub fn queue(args: &QueueArgs) -> Result<u8, Failure> {
    let client = connect()?;
    let limit = if args.all {
        shared::store::MAX_PAGE
    } else {
        args.limit.max(1)
    };
    let mut jobs = Vec::new();
    if let Some(id) = args.array {
        jobs = array_members(&client, id)?;
    } else {
        let mut before = None;
        loop {
            let list = client.list(args.all_users, limit, before)?;
            jobs.extend(list.jobs);
            match list.next {
                Some(next) if args.all => before = Some(next),
                _ => break,
            }
        }
        // An admin's view of everyone groups what the page holds.
        if !args.json && !args.all_users {
            complete_arrays(&client, &mut jobs)?;
        }
    }
    if args.skip_finished {
        jobs.retain(|j| !j.status.is_terminal());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).map_err(anyhow::Error::from)?
        );
        return Ok(0);
    }
    if args.array.is_some() {
        print!("{}", render_jobs(&jobs, SystemClock.now()));
    } else {
        print!("{}", render_queue(&jobs, SystemClock.now()));
    }
    Ok(0)
}

/// Every job of array `id`, newest first: one listing, as its jobs have consecutive IDs.
/// An ID that is not an array's is bad input.
pub fn array_members(client: &Client, id: u64) -> Result<Vec<JobView>, Failure> {
    let first = match client.job(id) {
        Ok(job) => job,
        Err(e) if client::is_not_found(&e) => {
            return Err(Failure::input(anyhow!("--array {id}: no such job")));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(array) = first.array.filter(|a| a.id == id) else {
        let hint = first
            .array
            .map(|a| format!("; it is rank {} of array {}", a.rank, a.id))
            .unwrap_or_default();
        return Err(Failure::input(anyhow!(
            "--array {id}: job {id} is not the first job of an array{hint}"
        )));
    };
    let end = array.id + u64::from(array.size);
    let list = client.list(false, array.size as usize, Some(end))?;
    Ok(list
        .jobs
        .into_iter()
        .filter(|j| array.contains(j.id))
        .collect())
}

/// A page may cut an array: its line must count every job of it, so the rest are read.
fn complete_arrays(client: &Client, jobs: &mut Vec<JobView>) -> Result<(), Failure> {
    let mut seen: BTreeMap<u64, (u32, usize)> = BTreeMap::new();
    for array in jobs.iter().filter_map(|j| j.array) {
        seen.entry(array.id).or_insert((array.size, 0)).1 += 1;
    }
    for (id, (size, present)) in seen {
        if present < size as usize {
            let members = array_members(client, id)?;
            jobs.retain(|j| j.array.is_none_or(|a| a.id != id));
            jobs.extend(members);
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
    Ok(())
}

/// SkyPilot's queue table, with one line per job array.
pub fn render_queue(jobs: &[JobView], now: Timestamp) -> String {
    render_table(jobs, now, true)
}

/// SkyPilot's queue table, every job on its own line (an array's jobs too).
pub fn render_jobs(jobs: &[JobView], now: Timestamp) -> String {
    render_table(jobs, now, false)
}

fn render_table(jobs: &[JobView], now: Timestamp, group_arrays: bool) -> String {
    let mut out = String::from("Managed jobs\n");
    let active: BTreeMap<&str, usize> =
        jobs.iter()
            .filter(|j| !j.status.is_terminal())
            .fold(BTreeMap::new(), |mut m, j| {
                *m.entry(j.status.as_str()).or_default() += 1;
                m
            });
    if !active.is_empty() {
        let parts: Vec<String> = active.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(out, "In progress tasks: {}", parts.join(", "));
    }
    if jobs.is_empty() {
        out.push_str("No in-progress managed jobs.\n");
        return out;
    }
    let mut rows: Vec<[String; 10]> = vec![[
        "ID".into(),
        "TASK".into(),
        "NAME".into(),
        "REQUESTED".into(),
        "SUBMITTED".into(),
        "TOT. DURATION".into(),
        "JOB DURATION".into(),
        "#RECOVERIES".into(),
        // Machine time × catalog price: an estimate, and the header says so.
        "EST. COST".into(),
        "STATUS".into(),
    ]];
    let mut arrays: Vec<u64> = Vec::new();
    for job in jobs {
        match job.array {
            Some(array) if group_arrays => {
                if !arrays.contains(&array.id) {
                    arrays.push(array.id);
                    let members: Vec<&JobView> = jobs
                        .iter()
                        .filter(|j| j.array.is_some_and(|a| a.id == array.id))
                        .collect();
                    rows.push(array_row(&members, now));
                }
            }
            _ => job_rows(job, now, &mut rows),
        }
    }
    aligned(&rows, &mut out);
    // Dependencies and arrays below the table, so that SkyPilot's columns stay as they are.
    for job in jobs.iter().filter(|j| !j.depends_on.is_empty()) {
        if group_arrays && job.array.is_some_and(|a| a.rank > 0) {
            continue;
        }
        let _ = writeln!(
            out,
            "Job {} depends on {}.",
            job.id,
            job.depends_on.join(", ")
        );
    }
    for id in arrays {
        if let Some(a) = jobs.iter().find_map(|j| j.array.filter(|a| a.id == id)) {
            let _ = writeln!(
                out,
                "Array {id}: {} jobs (IDs {id}-{}), at most {} at once; `stratus jobs queue --array {id}` lists them.",
                a.size,
                id + u64::from(a.size) - 1,
                a.max_parallel
            );
        }
    }
    out
}

/// One job's line, and one per task under a pipeline.
fn job_rows(job: &JobView, now: Timestamp, rows: &mut Vec<[String; 10]>) {
    let pipeline = job.tasks.len() > 1;
    let job_duration = if job.started_at.is_some() {
        duration(job.job_duration_ms)
    } else {
        "-".into()
    };
    rows.push([
        job.id.to_string(),
        "-".into(),
        job.name.clone(),
        if pipeline {
            "-".into()
        } else {
            job.tasks[0].requested.clone()
        },
        ago(job.submitted_at, now),
        duration(job.total_duration_ms),
        job_duration,
        job.recoveries.to_string(),
        format_usd(job.cost.usd),
        job.status.to_string(),
    ]);
    if pipeline {
        for task in &job.tasks {
            let total = task.submitted_at.map_or_else(
                || "-".into(),
                |s| duration(millis(task.ended_at.unwrap_or(now).since(s))),
            );
            rows.push([
                " ↳".into(),
                task.index.to_string(),
                task.name.clone(),
                task.requested.clone(),
                task.submitted_at
                    .map_or_else(|| "-".into(), |s| ago(s, now)),
                total,
                if task.started_at.is_some() {
                    duration(task.job_duration_ms)
                } else {
                    "-".into()
                },
                task.recoveries.to_string(),
                format_usd(task.cost.usd),
                task.status.to_string(),
            ]);
        }
    }
}

/// One line for a job array (`members` newest first): its ID range, the longest duration,
/// recoveries and cost summed, and how many of its jobs are in each status.
fn array_row(members: &[&JobView], now: Timestamp) -> [String; 10] {
    let first = members.last().expect("an array line has jobs");
    let ids = match first.array {
        Some(a) if a.size > 1 => format!("{}-{}", a.id, a.id + u64::from(a.size) - 1),
        _ => first.id.to_string(),
    };
    let mut counts: BTreeMap<JobStatus, usize> = BTreeMap::new();
    for m in members {
        *counts.entry(m.status).or_default() += 1;
    }
    let statuses: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let running_ms: u64 = members.iter().map(|m| m.job_duration_ms).sum();
    [
        ids,
        "-".into(),
        first.name.clone(),
        first.tasks[0].requested.clone(),
        ago(first.submitted_at, now),
        duration(
            members
                .iter()
                .map(|m| m.total_duration_ms)
                .max()
                .unwrap_or(0),
        ),
        if running_ms > 0 {
            duration(running_ms)
        } else {
            "-".into()
        },
        members
            .iter()
            .map(|m| m.recoveries)
            .sum::<u32>()
            .to_string(),
        format_usd(members.iter().map(|m| m.cost.usd).sum()),
        statuses.join(", "),
    ]
}

/// The rows as columns two spaces apart, each as wide as its widest cell.
fn aligned<const N: usize>(rows: &[[String; N]], out: &mut String) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `2m 13s`, `1h 5m`, `3s`, as SkyPilot prints durations.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `5 secs ago`, `2 mins ago`, ...
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let secs = now.since(at).as_secs();
    match secs {
        0..60 => format!("{secs} secs ago"),
        60..3600 => format!("{} mins ago", secs / 60),
        3600..86_400 => format!("{} hrs ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// Print a managed job's output (setup and run), following it until it ends.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stratus jobs logs            # the latest job\n  stratus jobs logs 3 --no-follow\n  stratus jobs logs -n train --controller\n  stratus jobs logs 5 --rank 3   # rank 3 of job array 5"
)]
pub struct LogsArgs {
    /// The job's ID (default: your latest job).
    job_id: Option<u64>,
    /// The job's name instead of its ID (the latest job with that name).
    #[arg(short = 'n', long, conflicts_with = "job_id")]
    name: Option<String>,
    /// Print what is there and return, instead of following until the job ends.
    #[arg(long)]
    no_follow: bool,
    /// Show the control plane's events for the job (launches, failures, recoveries, cleanup)
    /// instead of its output.
    #[arg(long)]
    controller: bool,
    #[arg(
        long,
        value_name = "RANK",
        requires = "job_id",
        help = "With a job array's ID: the job of this rank (its $SKYPILOT_JOB_RANK)."
    )]
    rank: Option<u32>,
}

pub fn logs(args: &LogsArgs) -> Result<u8, Failure> {
    let client = connect()?;
    let mut job = resolve_one(&client, args.job_id, args.name.as_deref())?;
    if let Some(rank) = args.rank {
        job = rank_of(&client, &job, rank)?;
    }
    if args.controller {
        // Print the events so far; when following, the new ones until the job ends.
        let mut seen = 0;
        loop {
            let events = client.events(job.id)?;
            for e in events.iter().skip(seen) {
                println!(
                    "{} [task {}] {}: {}",
                    clock_time(e.at),
                    e.task,
                    e.status,
                    printable(&e.message)
                );
            }
            seen = events.len();
            let status = client.job(job.id)?.status;
            if args.no_follow || status.is_terminal() {
                return Ok(exit_code(status));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let status = follow(&client, &job, !args.no_follow, false)?;
    Ok(exit_code(status))
}

/// The job of rank `rank` in the array whose first job is `first`.
fn rank_of(client: &Client, first: &JobView, rank: u32) -> Result<JobView, Failure> {
    let id = first.id;
    let Some(array) = first.array.filter(|a| a.id == id) else {
        return Err(Failure::input(anyhow!(
            "--rank: job {id} is not the first job of a job array (give the array's ID, as `stratus jobs queue` shows it)"
        )));
    };
    if rank >= array.size {
        return Err(Failure::input(anyhow!(
            "--rank {rank}: array {id} has ranks 0 to {}",
            array.size - 1
        )));
    }
    let job = client.job(id + u64::from(rank))?;
    if job.array.is_none_or(|a| a.id != id || a.rank != rank) {
        return Err(anyhow!("job {} is not rank {rank} of array {id}", job.id).into());
    }
    Ok(job)
}

/// `text` with control characters (escape sequences that would drive the terminal) shown as
/// `\u{..}` instead of sent raw: controller lines can quote names from requests.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// `HH:MM:SS` (UTC) of a timestamp, for controller log lines.
fn clock_time(at: Timestamp) -> String {
    let c = at.civil();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// The job a user means: by ID, by name (the latest with it), or their latest job.
fn resolve_one(client: &Client, id: Option<u64>, name: Option<&str>) -> Result<JobView, Failure> {
    match (id, name) {
        (Some(id), _) => client.job(id).map_err(|e| {
            if client::is_not_found(&e) {
                Failure::from(anyhow!("managed job {id} not found"))
            } else {
                e.into()
            }
        }),
        (None, Some(name)) => client
            .find_by_name(name, false)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no managed job named '{name}'").into()),
        (None, None) => client
            .list(false, 1, None)?
            .jobs
            .into_iter()
            .next()
            .ok_or_else(|| {
                anyhow!("no managed jobs yet: launch one with `stratus jobs launch`").into()
            }),
    }
}

/// Prints the job's output from the start; with `follow`, until the job ends. Status changes
/// are printed as progress lines when `progress` is set (the launch view). Returns the last
/// status seen.
pub fn follow(
    client: &Client,
    job: &JobView,
    follow: bool,
    progress: bool,
) -> anyhow::Result<JobStatus> {
    let names: Vec<String> = job.tasks.iter().map(|t| t.name.clone()).collect();
    let multi_node: Vec<bool> = job
        .tasks
        .iter()
        .map(|t| !t.requested.starts_with("1x"))
        .collect();
    let mut after = String::new();
    let mut status = job.status;
    let mut at_line_start: BTreeMap<(usize, u32, bool, u32), bool> = BTreeMap::new();
    let stdout = std::io::stdout();
    loop {
        let page = client.logs(job.id, &after, follow)?;
        let mut out = stdout.lock();
        for piece in &page.pieces {
            let key = (
                piece.task,
                piece.attempt,
                piece.phase == Phase::Run,
                piece.rank,
            );
            let name = names.get(piece.task).map_or("task", String::as_str);
            let who = match piece.phase {
                Phase::Setup => "setup".to_owned(),
                Phase::Run => name.to_owned(),
            };
            let prefix = if multi_node.get(piece.task).copied().unwrap_or(false) {
                format!("({who}, rank={}) ", piece.rank)
            } else {
                format!("({who}) ")
            };
            let start = at_line_start.entry(key).or_insert(true);
            for line in piece.data.split_inclusive('\n') {
                if *start {
                    let _ = out.write_all(prefix.as_bytes());
                }
                let _ = out.write_all(line.as_bytes());
                *start = line.ends_with('\n');
            }
        }
        let _ = out.flush();
        drop(out);
        after = page.next;
        if progress && page.status != status && !page.status.is_terminal() {
            println!("{}", progress_line(job.id, page.status));
        }
        status = page.status;
        if page.more {
            // More is stored already (a long log is read a page at a time).
            continue;
        }
        if page.done || !follow {
            // A line cut off at the end still gets its newline.
            if at_line_start.values().any(|s| !*s) {
                println!();
            }
            return Ok(status);
        }
        std::thread::sleep(client.follow_interval());
    }
}

fn progress_line(id: u64, status: JobStatus) -> String {
    match status {
        JobStatus::Pending => format!("⚙︎ Job {id} is waiting for resources (PENDING)."),
        JobStatus::Starting => format!("⚙︎ Job {id} is launching its cluster (STARTING)."),
        JobStatus::Running => format!("⚙︎ Job {id} is RUNNING."),
        JobStatus::Recovering => {
            format!("⚙︎ Job {id} lost its cluster and is RECOVERING on a new one.")
        }
        JobStatus::Cancelling => format!("⚙︎ Job {id} is CANCELLING."),
        other => format!("⚙︎ Job {id}: {other}."),
    }
}

/// SkyPilot's "useful commands" block.
pub fn useful_commands(id: u64) -> String {
    format!(
        "📋 Useful Commands\n\
         ├── To cancel the job:                stratus jobs cancel {id}\n\
         ├── To stream job logs:               stratus jobs logs {id}\n\
         ├── To stream controller logs:        stratus jobs logs --controller {id}\n\
         └── To view all managed jobs:         stratus jobs queue\n"
    )
}

/// Cancel managed jobs: they go CANCELLING, then CANCELLED once their clusters are gone.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  stratus jobs cancel 3 4\n  stratus jobs cancel -n train -y\n  stratus jobs cancel -a -y\n  stratus jobs cancel --array 5 -y"
)]
pub struct CancelArgs {
    /// Job IDs to cancel.
    job_ids: Vec<u64>,
    /// Cancel the active jobs with this name.
    #[arg(short = 'n', long, conflicts_with = "job_ids")]
    name: Option<String>,
    /// Cancel all your active jobs.
    #[arg(short = 'a', long, conflicts_with_all = ["job_ids", "name"])]
    all: bool,
    /// Cancel every job of this job array that has not ended (its ID is its first job's).
    #[arg(long, value_name = "ID", conflicts_with_all = ["job_ids", "name", "all"])]
    array: Option<u64>,
    /// Skip the confirmation prompt.
    #[arg(short = 'y', long)]
    yes: bool,
}

pub fn cancel(args: &CancelArgs) -> Result<u8, Failure> {
    if args.job_ids.is_empty() && args.name.is_none() && !args.all && args.array.is_none() {
        return Err(Failure::input(anyhow!(
            "say which jobs: job IDs, -n NAME, --array ID, or -a for all your active jobs"
        )));
    }
    let client = connect()?;
    if let Some(id) = args.array {
        return cancel_array(&client, id, args.yes);
    }
    let ids: Vec<u64> = if args.all {
        client
            .list(false, shared::store::MAX_PAGE, None)?
            .jobs
            .iter()
            .filter(|j| !j.status.is_terminal())
            .map(|j| j.id)
            .collect()
    } else if let Some(name) = &args.name {
        client
            .find_by_name(name, false)?
            .iter()
            .filter(|j| !j.status.is_terminal())
            .map(|j| j.id)
            .collect()
    } else {
        args.job_ids.clone()
    };
    if ids.is_empty() {
        println!("No active managed jobs to cancel.");
        return Ok(0);
    }
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if !args.yes
        && !confirm(&format!(
            "Cancelling managed job(s) {}. Proceed?",
            list.join(", ")
        ))?
    {
        eprintln!("Aborted!");
        return Ok(1);
    }
    let mut code = 0;
    for id in ids {
        match client.cancel(id) {
            Ok(job) if job.status.is_terminal() && job.status != JobStatus::Cancelled => {
                println!("Managed job {id} already finished ({}).", job.status);
            }
            Ok(job) => println!("Managed job {id} is {}.", job.status),
            Err(e) if client::is_not_found(&e) => {
                eprintln!("error: managed job {id} not found");
                code = 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}

/// Cancels an array's jobs that have not ended, the last rank first: a job still waiting is
/// cancelled before the one it waits for ends and would wake it.
fn cancel_array(client: &Client, id: u64, yes: bool) -> Result<u8, Failure> {
    let members = array_members(client, id)?;
    let active: Vec<u64> = members
        .iter()
        .filter(|j| !j.status.is_terminal())
        .map(|j| j.id)
        .collect();
    if active.is_empty() {
        println!("No active jobs in managed job array {id}.");
        return Ok(0);
    }
    if !yes
        && !confirm(&format!(
            "Cancelling managed job array {id}: {} of its {} jobs have not ended. Proceed?",
            active.len(),
            members.len()
        ))?
    {
        eprintln!("Aborted!");
        return Ok(1);
    }
    let mut counts: BTreeMap<JobStatus, usize> = BTreeMap::new();
    for job in active {
        match client.cancel(job) {
            Ok(view) => *counts.entry(view.status).or_default() += 1,
            Err(e) if client::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("Managed job array {id}: {}.", parts.join(", "));
    Ok(0)
}

/// `<question> [Y/n]: ` on stderr; yes unless the answer starts with n. No answer (end of
/// input) is a no, so scripts without `-y` do not launch by accident.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [Y/n]: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer)? == 0 {
        eprintln!();
        return Ok(false);
    }
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer.is_empty() || answer.starts_with('y'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\u{1b}[2Jb\u{7}"), "a\\u{1b}[2Jb\\u{7}");
    }
}
