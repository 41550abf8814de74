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
    /// More columns: STARTED, CLUSTER, INFRA, RESOURCES, and DETAILS (the failure reason, or
    /// what a job waits for).
    #[arg(short = 'v', long)]
    verbose: bool,
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
    let columns = Columns {
        user: args.all_users,
        verbose: args.verbose,
        group_arrays: args.array.is_none(),
    };
    let table = render_table(&jobs, SystemClock.now(), columns);
    // Colours only on a terminal (and never with NO_COLOR).
    let mut stdout = anstream::stdout();
    let _ = stdout.write_all(table.as_bytes());
    let _ = stdout.flush();
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

/// Which columns the queue table has besides SkyPilot's default ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Columns {
    /// USER (`-u`: every user's jobs).
    pub user: bool,
    /// `-v`: STARTED, CLUSTER, INFRA, RESOURCES and DETAILS (why it failed or is waiting).
    pub verbose: bool,
    /// One line per job array (else each of its jobs).
    pub group_arrays: bool,
}

type Row = Vec<String>;

fn render_table(jobs: &[JobView], now: Timestamp, columns: Columns) -> String {
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
    let mut header: Row = ["ID", "TASK", "NAME"].map(String::from).to_vec();
    if columns.user {
        header.push("USER".into());
    }
    // Machine time × catalog price: an estimate, and the header says so.
    header.extend(
        [
            "REQUESTED",
            "SUBMITTED",
            "TOT. DURATION",
            "JOB DURATION",
            "#RECOVERIES",
            "EST. COST",
            "STATUS",
        ]
        .map(String::from),
    );
    if columns.verbose {
        header.extend(["STARTED", "CLUSTER", "INFRA", "RESOURCES", "DETAILS"].map(String::from));
    }
    let mut rows: Vec<Row> = vec![header];
    let mut arrays: Vec<u64> = Vec::new();
    for job in jobs {
        match job.array {
            Some(array) if columns.group_arrays => {
                if !arrays.contains(&array.id) {
                    arrays.push(array.id);
                    let members: Vec<&JobView> = jobs
                        .iter()
                        .filter(|j| j.array.is_some_and(|a| a.id == array.id))
                        .collect();
                    rows.push(array_row(&members, now, columns));
                }
            }
            _ => job_rows(job, now, columns, &mut rows),
        }
    }
    let status_column = rows[0].iter().position(|h| h == "STATUS");
    aligned(&rows, status_column, &mut out);
    // Dependencies and arrays below the table, so that SkyPilot's columns stay as they are.
    for job in jobs.iter().filter(|j| !j.depends_on.is_empty()) {
        if columns.group_arrays && job.array.is_some_and(|a| a.rank > 0) {
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

/// SkyPilot's pipeline STATUS: the first task that has not succeeded, `(task: N)` while it
/// is active.
fn job_status(job: &JobView) -> String {
    if job.tasks.len() < 2 {
        return job.status.to_string();
    }
    match job.tasks.iter().find(|t| t.status != JobStatus::Succeeded) {
        Some(t) if !t.status.is_terminal() => format!("{} (task: {})", t.status, t.index),
        Some(t) => t.status.to_string(),
        None => job.status.to_string(),
    }
}

/// What `-v`'s DETAILS says: why the job failed, or what it waits for.
fn details(status: JobStatus, reason: Option<&str>, depends_on: &[String]) -> String {
    match (status, reason) {
        (_, Some(reason)) => format!("Failure: {}", printable(reason)),
        (JobStatus::Pending, None) if !depends_on.is_empty() => {
            format!("Waiting for job(s) {}", depends_on.join(", "))
        }
        (JobStatus::Pending | JobStatus::Starting, None) => "Waiting for resources".into(),
        (JobStatus::Recovering, None) => "Recovering".into(),
        _ => "-".into(),
    }
}

/// One job's line, and one per task under a pipeline.
fn job_rows(job: &JobView, now: Timestamp, columns: Columns, rows: &mut Vec<Row>) {
    let pipeline = job.tasks.len() > 1;
    let job_duration = if job.started_at.is_some() {
        duration(job.job_duration_ms)
    } else {
        "-".into()
    };
    let mut row: Row = vec![job.id.to_string(), "-".into(), job.name.clone()];
    if columns.user {
        row.push(job.owner.clone());
    }
    row.extend([
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
        job_status(job),
    ]);
    if columns.verbose {
        let current = job
            .tasks
            .iter()
            .rfind(|t| t.cluster.is_some())
            .unwrap_or(&job.tasks[0]);
        row.extend(verbose_cells(
            job.started_at,
            current,
            now,
            details(job.status, job.failure_reason.as_deref(), &job.depends_on),
        ));
    }
    rows.push(row);
    if pipeline {
        for task in &job.tasks {
            let total = task.submitted_at.map_or_else(
                || "-".into(),
                |s| duration(millis(task.ended_at.unwrap_or(now).since(s))),
            );
            let mut row: Row = vec![" ↳".into(), task.index.to_string(), task.name.clone()];
            if columns.user {
                row.push(job.owner.clone());
            }
            row.extend([
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
            if columns.verbose {
                let detail = details(task.status, task.failure_reason.as_deref(), &[]);
                row.extend(verbose_cells(task.started_at, task, now, detail));
            }
            rows.push(row);
        }
    }
}

/// `-v`'s cells: STARTED, CLUSTER, INFRA, RESOURCES, DETAILS.
fn verbose_cells(
    started: Option<Timestamp>,
    task: &shared::api::TaskView,
    now: Timestamp,
    details: String,
) -> [String; 5] {
    let dash = || "-".to_owned();
    [
        started.map_or_else(dash, |s| ago(s, now)),
        task.cluster.clone().unwrap_or_else(dash),
        task.infra.clone().unwrap_or_else(dash),
        task.instance_type.as_ref().map_or_else(dash, |t| {
            format!("{t}{}", if task.use_spot { "[Spot]" } else { "" })
        }),
        details,
    ]
}

/// One line for a job array (`members` newest first): its ID range, the longest duration,
/// recoveries and cost summed, and how many of its jobs are in each status.
fn array_row(members: &[&JobView], now: Timestamp, columns: Columns) -> Row {
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
    let mut row: Row = vec![ids, "-".into(), first.name.clone()];
    if columns.user {
        row.push(first.owner.clone());
    }
    row.extend([
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
    ]);
    if columns.verbose {
        row.extend(["-", "-", "-", "-", "-"].map(String::from));
    }
    row
}

/// The rows as columns two spaces apart, each as wide as its widest cell (in terminal
/// columns), the STATUS cells coloured as SkyPilot colours them (`anstream` drops the colour
/// when the output is not a terminal).
fn aligned(rows: &[Row], status_column: Option<usize>, out: &mut String) {
    use unicode_width::UnicodeWidthStr as _;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let style = status_column
                .filter(|c| *c == i && r > 0)
                .map_or_else(anstyle::Style::new, |_| status_style(cell));
            let _ = write!(line, "{style}{cell}{style:#}");
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(w - cell.width() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// SkyPilot's status colours: blue while waiting, green running or done well, cyan
/// recovering, red failed, yellow cancelled.
fn status_style(cell: &str) -> anstyle::Style {
    use anstyle::AnsiColor;
    // A job's status, or a pipeline's `RUNNING (task: 1)`; an array's counts stay plain.
    let word = cell.split_whitespace().next();
    let colour = match word {
        Some("RUNNING" | "SUCCEEDED") => Some(AnsiColor::Green),
        Some(w) if w.starts_with("FAILED") => Some(AnsiColor::Red),
        Some("PENDING" | "STARTING") => Some(AnsiColor::Blue),
        Some("RECOVERING") => Some(AnsiColor::Cyan),
        Some("CANCELLING" | "CANCELLED") => Some(AnsiColor::Yellow),
        _ => None,
    };
    anstyle::Style::new().fg_color(colour.map(anstyle::Color::Ansi))
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

/// `1 sec ago`, `5 secs ago`, `2 mins ago`, ...
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let secs = now.since(at).as_secs();
    let (n, unit) = match secs {
        0..60 => (secs, "sec"),
        60..3600 => (secs / 60, "min"),
        3600..86_400 => (secs / 3600, "hr"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
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
    /// Show the output of every attempt (recoveries and restarts), not only the current one.
    #[arg(long)]
    all_attempts: bool,
    /// Save the job's output (every attempt) and controller log under
    /// ~/stratus_logs/managed_jobs/job-ID/ instead of printing them.
    #[arg(long, conflicts_with = "controller")]
    sync_down: bool,
    /// Accepted for SkyPilot's scripts: it restarts SkyPilot's controller, and Stratus has none.
    #[arg(long)]
    refresh: bool,
}

pub fn logs(args: &LogsArgs) -> Result<u8, Failure> {
    let client = connect()?;
    let mut job = resolve_one(&client, args.job_id, args.name.as_deref())?;
    if let Some(rank) = args.rank {
        job = rank_of(&client, &job, rank)?;
    }
    if args.refresh {
        eprintln!(
            "Note: --refresh restarts SkyPilot's jobs controller; Stratus has none to restart (its control plane is serverless; `stratus api status` shows the local one)."
        );
    }
    if args.sync_down {
        return sync_down(&client, &job);
    }
    if args.controller {
        // Print the events so far; when following, the new ones until the job ends.
        let mut seen = 0;
        loop {
            let events = client.events(job.id)?;
            for e in events.iter().skip(seen) {
                println!("{}", controller_line(e));
            }
            seen = events.len();
            let status = client.job(job.id)?.status;
            if args.no_follow || status.is_terminal() {
                return Ok(exit_code(status));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let status = follow(
        &client,
        &job,
        Follow {
            until_done: !args.no_follow,
            progress: if args.no_follow {
                Progress::Quiet
            } else {
                Progress::Logs
            },
            all_attempts: args.all_attempts,
        },
    )?;
    if !args.no_follow {
        print!("{}", finished_lines(&client, job.id, status));
    }
    Ok(exit_code(status))
}

/// `logs --sync-down`: the job's output (every attempt) and its controller log, saved under
/// `~/stratus_logs/managed_jobs/job-<ID>/` as SkyPilot saves them under `~/sky_logs`.
fn sync_down(client: &Client, job: &JobView) -> Result<u8, Failure> {
    let home = std::env::var_os("HOME").map_or_else(|| ".".into(), std::path::PathBuf::from);
    let dir = home
        .join("stratus_logs/managed_jobs")
        .join(format!("job-{}", job.id));
    std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
    let mut run = std::io::BufWriter::new(
        std::fs::File::create(dir.join("run.log")).map_err(anyhow::Error::from)?,
    );
    let mut printer = Printer::new(job, true);
    let mut after = String::new();
    loop {
        let page = client.logs(job.id, &after, false)?;
        printer.write(&page.pieces, &mut run, &|| None);
        after = page.next;
        if !page.more {
            break;
        }
    }
    printer.write_end(&mut run).map_err(anyhow::Error::from)?;
    run.flush().map_err(anyhow::Error::from)?;
    let mut controller = String::new();
    for e in client.events(job.id)? {
        let _ = writeln!(controller, "{}", controller_line(&e));
    }
    std::fs::write(dir.join("controller.log"), controller).map_err(anyhow::Error::from)?;
    println!(
        "Managed job {}'s logs ({}) are in {}: run.log (every attempt's output), controller.log.",
        job.id,
        job.status,
        dir.display()
    );
    Ok(0)
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

/// A controller log line as `logs --controller` prints it (and `--sync-down` saves it).
fn controller_line(e: &shared::api::EventView) -> String {
    format!(
        "{} [task {}] {}: {}",
        clock_time(e.at),
        e.task,
        e.status,
        printable(&e.message)
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

/// What `follow` shows besides the job's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Only the output (`--no-follow`).
    Quiet,
    /// `launch`: "Job started. Streaming logs..." once the job runs, then its status changes.
    Launch,
    /// `jobs logs`: the status now and every change.
    Logs,
}

/// How to follow a job's output.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Until the job ends (else what is there now).
    pub until_done: bool,
    pub progress: Progress,
    /// Every attempt's output; else, as SkyPilot, from each task's current attempt on.
    pub all_attempts: bool,
}

/// The output of one task's attempt, one phase, one node.
type Stream = (usize, u32, bool, u32);

/// Prints the job's output as `follow` says; returns the last status seen.
pub fn follow(client: &Client, job: &JobView, how: Follow) -> anyhow::Result<JobStatus> {
    let mut printer = Printer::new(job, how.all_attempts);
    let mut status = job.status;
    let mut started = job.started_at.is_some() && how.progress == Progress::Launch;
    if let Some(note) = printer.skipped_note() {
        println!("{note}");
    }
    if how.progress == Progress::Logs && status != JobStatus::Running && !status.is_terminal() {
        println!("{}", progress_line(client, job.id, status));
    }
    // A recovery announced by its status line is not announced again by its first output.
    let recovery_told = std::cell::Cell::new(false);
    let why_new_attempt = || {
        if recovery_told.replace(false) || how.progress == Progress::Quiet {
            return None;
        }
        recovery_reason(client, job.id).map(|why| format!("⚙︎ Job {} is RECOVERING: {why}", job.id))
    };
    let mut spinner = Spinner::default();
    let mut after = String::new();
    loop {
        let page = client.logs(job.id, &after, how.until_done)?;
        let changed = page.status != status;
        status = page.status;
        if changed || !page.pieces.is_empty() {
            spinner.clear();
        }
        if how.progress == Progress::Launch && !started && status != JobStatus::Pending {
            if status == JobStatus::Running || !page.pieces.is_empty() {
                started = true;
                println!(
                    "└── Job started. Streaming logs... (Ctrl-C to exit log streaming; job will not be killed)"
                );
            }
        } else if how.progress != Progress::Quiet && changed && !status.is_terminal() {
            println!("{}", progress_line(client, job.id, status));
            // Told until the new attempt's output says it again (a RUNNING line between
            // does not make the reason news).
            if status == JobStatus::Recovering {
                recovery_told.set(true);
            }
        }
        printer.print(&page.pieces, &why_new_attempt);
        after = page.next;
        if page.more {
            // More is stored already (a long log is read a page at a time).
            continue;
        }
        if page.done || !how.until_done {
            spinner.clear();
            printer.end_lines();
            return Ok(status);
        }
        if how.progress != Progress::Quiet {
            spinner.waiting(job.id, status);
        }
        std::thread::sleep(client.follow_interval());
    }
}

/// A spinner while the job waits for machines, on a terminal only (`indicatif` draws nothing
/// elsewhere), cleared before anything else is printed.
#[derive(Default)]
struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    fn waiting(&mut self, id: u64, status: JobStatus) {
        if !matches!(
            status,
            JobStatus::Pending | JobStatus::Starting | JobStatus::Recovering
        ) {
            self.clear();
            return;
        }
        let bar = self.0.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let what = match status {
            JobStatus::Starting => "launching its cluster",
            JobStatus::Recovering => "recovering on a new cluster",
            _ => "waiting for resources",
        };
        bar.set_message(format!("Job {id} is {what} ({status})"));
    }

    fn clear(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// Prefixes lines with their task (and rank), starts each attempt with a banner, and skips
/// attempts older than the ones current when following began (unless asked for all).
struct Printer {
    names: Vec<String>,
    multi_node: Vec<bool>,
    /// Per task: the first attempt shown (older ones are skipped).
    first_shown: Vec<u32>,
    /// Per task: the attempt whose output was printed last.
    last_printed: Vec<Option<u32>>,
    at_line_start: BTreeMap<Stream, bool>,
}

impl Printer {
    fn new(job: &JobView, all_attempts: bool) -> Self {
        let first_shown = job
            .tasks
            .iter()
            .map(|t| {
                t.cluster
                    .as_deref()
                    .and_then(|c| shared::job::attempt_of_cluster(c, job.id))
                    .filter(|_| !all_attempts)
                    .unwrap_or(0)
            })
            .collect();
        Self {
            names: job.tasks.iter().map(|t| t.name.clone()).collect(),
            multi_node: job
                .tasks
                .iter()
                .map(|t| !t.requested.starts_with("1x"))
                .collect(),
            first_shown,
            last_printed: vec![None; job.tasks.len()],
            at_line_start: BTreeMap::new(),
        }
    }

    /// Says which attempt is shown when earlier ones are skipped.
    fn skipped_note(&self) -> Option<String> {
        let (task, attempt) = self
            .first_shown
            .iter()
            .enumerate()
            .rfind(|(_, a)| **a > 1)?;
        let name = &self.names[task];
        Some(format!(
            "⚙︎ Showing the output of attempt {attempt} of task '{name}', the current one (--all-attempts shows the earlier ones)."
        ))
    }

    /// Prints `pieces`; `why` says why a new attempt started, if that is still to be said.
    fn print(
        &mut self,
        pieces: &[shared::control::logs::LogPiece],
        why: &dyn Fn() -> Option<String>,
    ) {
        let mut out = std::io::stdout().lock();
        self.write(pieces, &mut out, why);
    }

    fn write(
        &mut self,
        pieces: &[shared::control::logs::LogPiece],
        out: &mut impl std::io::Write,
        why: &dyn Fn() -> Option<String>,
    ) {
        for piece in pieces {
            if piece.attempt < self.first_shown.get(piece.task).copied().unwrap_or(0) {
                continue;
            }
            let name = self.names.get(piece.task).map_or("task", String::as_str);
            if let Some(last) = self.last_printed.get_mut(piece.task) {
                if last.is_some_and(|l| l != piece.attempt) {
                    if let Some(why) = why() {
                        let _ = writeln!(out, "{why}");
                    }
                    let _ = writeln!(
                        out,
                        "⚙︎ Attempt {} of task '{name}' started. Streaming its logs...",
                        piece.attempt
                    );
                }
                *last = Some(piece.attempt);
            }
            let multi_node = self.multi_node.get(piece.task).copied().unwrap_or(false);
            let prefix = prefix(piece, name, multi_node);
            let key = (
                piece.task,
                piece.attempt,
                piece.phase == Phase::Run,
                piece.rank,
            );
            let start = self.at_line_start.entry(key).or_insert(true);
            for line in piece.data.split_inclusive('\n') {
                if *start {
                    let _ = out.write_all(prefix.as_bytes());
                }
                let _ = out.write_all(line.as_bytes());
                *start = line.ends_with('\n');
            }
        }
        let _ = out.flush();
    }

    /// A line cut off at the end still gets its newline.
    fn end_lines(&self) {
        let _ = self.write_end(&mut std::io::stdout().lock());
    }

    fn write_end(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.at_line_start.values().any(|s| !*s) {
            writeln!(out)?;
        }
        Ok(())
    }
}

/// SkyPilot's line prefix: `(setup pid=12) `, `(train, pid=34) `, and on several nodes
/// `(train, rank=1, pid=56, ip=10.0.0.2) `; the pid once the node has reported it.
fn prefix(piece: &shared::control::logs::LogPiece, name: &str, multi_node: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    if multi_node {
        parts.push(format!("rank={}", piece.rank));
    }
    if let Some(pid) = piece.pid {
        parts.push(format!("pid={pid}"));
    }
    if multi_node && let Some(ip) = &piece.ip {
        parts.push(format!("ip={ip}"));
    }
    let details = parts.join(", ");
    match (piece.phase, details.is_empty()) {
        (Phase::Setup, true) => "(setup) ".to_owned(),
        (Phase::Setup, false) if !multi_node => format!("(setup {details}) "),
        (Phase::Setup, false) => format!("(setup, {details}) "),
        (Phase::Run, true) => format!("({name}) "),
        (Phase::Run, false) => format!("({name}, {details}) "),
    }
}

/// A status change as a progress line; a recovery says why (the controller's last word on it).
fn progress_line(client: &Client, id: u64, status: JobStatus) -> String {
    match status {
        JobStatus::Pending => format!("⚙︎ Job {id} is waiting for resources (PENDING)."),
        JobStatus::Starting => format!("⚙︎ Job {id} is launching its cluster (STARTING)."),
        JobStatus::Running => format!("⚙︎ Job {id} is RUNNING."),
        JobStatus::Recovering => match recovery_reason(client, id) {
            Some(why) => format!("⚙︎ Job {id} is RECOVERING: {why}"),
            None => format!("⚙︎ Job {id} is RECOVERING."),
        },
        JobStatus::Cancelling => format!("⚙︎ Job {id} is CANCELLING."),
        other => format!("⚙︎ Job {id}: {other}."),
    }
}

/// Why the job's latest recovery started: the controller's first line in RECOVERING after
/// its last line in RUNNING (a preemption, a lost node, or the user's code failing).
fn recovery_reason(client: &Client, id: u64) -> Option<String> {
    let events = client.events(id).ok()?;
    let mut reason = None;
    for (i, e) in events.iter().enumerate() {
        let before = i.checked_sub(1).map(|p| events[p].status);
        if e.status == JobStatus::Recovering && before != Some(JobStatus::Recovering) {
            reason = Some(printable(&e.message).into_owned());
        }
    }
    reason
}

/// The line a followed job ends with, and its failure reason when it did not succeed.
pub fn finished_lines(client: &Client, id: u64, status: JobStatus) -> String {
    if status == JobStatus::Succeeded {
        return format!("✓ Managed job finished: {id} (status: {status}).\n");
    }
    let mut out = format!("✗ Managed job finished: {id} (status: {status}).\n");
    if let Some(reason) = client.job(id).ok().and_then(|j| j.failure_reason) {
        let _ = writeln!(out, "  Reason: {}", printable(&reason));
    }
    out
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
    after_help = "Examples:\n  stratus jobs cancel -y 3 4\n  stratus jobs cancel -n train -y\n  stratus jobs cancel -a -y\n  stratus jobs cancel --array 5 -y"
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
    fn ago_says_one_in_the_singular() {
        let now = Timestamp::from_millis(10_000_000);
        let before = |secs: i64| Timestamp::from_millis(10_000_000 - secs * 1000);
        let said: Vec<String> = [0, 1, 5, 60, 61, 120, 3600, 7200, 86_400, 172_800]
            .map(|s| ago(before(s), now))
            .to_vec();
        assert_eq!(
            said,
            [
                "0 secs ago",
                "1 sec ago",
                "5 secs ago",
                "1 min ago",
                "1 min ago",
                "2 mins ago",
                "1 hr ago",
                "2 hrs ago",
                "1 day ago",
                "2 days ago"
            ]
        );
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\u{1b}[2Jb\u{7}"), "a\\u{1b}[2Jb\\u{7}");
    }
}
