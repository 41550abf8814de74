//! What `stratus jobs launch` prints of a plan: the one-line choice per task, the
//! considered-resources tables, and the whole `--dry-run` report (the plan per task and what a
//! real launch would need).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use shared::cloud::Cloud;
use shared::optimizer::{self, TaskPlan};
use shared::spec::{Loaded, MountSource, StorageSource, Task, Workdir};

use crate::launch::expand;

/// One line per task: where it will run and what it costs an hour (the table's first row).
pub(crate) fn render_choices(loaded: &Loaded, plans: &[TaskPlan]) -> String {
    let mut out = String::new();
    for (task, plan) in loaded.pipeline.tasks.iter().zip(plans) {
        if let Some(c) = plan.chosen() {
            let _ = writeln!(
                out,
                "Task '{}' will run on {}x {} in {} {} ({}), ${:.2}/h (estimated).",
                task.name,
                task.num_nodes,
                c.instance_label(),
                c.cloud,
                c.region,
                c.zone,
                c.cost()
            );
        }
    }
    out
}

/// "will be launched on" and a Considered-resources table per task (or why nothing fits).
pub(crate) fn render_tables(loaded: &Loaded, plans: &[TaskPlan]) -> String {
    let pipeline = &loaded.pipeline;
    let mut out = String::new();
    let tasks = pipeline.tasks.len();
    let _ = writeln!(
        out,
        "Managed job '{}' will be launched on (estimated):",
        pipeline.name
    );
    for (task, plan) in pipeline.tasks.iter().zip(plans) {
        out.push('\n');
        let label = (tasks > 1).then_some(task.name.as_str());
        if plan.chosen().is_some() {
            out.push_str(&optimizer::considered_table(plan, label, task.num_nodes));
        } else {
            let _ = writeln!(out, "No resource fits task '{}':", task.name);
            out.push_str(&plan.explain_no_fit());
        }
    }
    out
}

/// The whole dry-run report: tables, the plan per task, and what a real launch would need.
pub(crate) fn render_dry_run(
    loaded: &Loaded,
    plans: &[TaskPlan],
    enabled: &[Cloud],
    cwd: &Path,
) -> String {
    let pipeline = &loaded.pipeline;
    let tasks = pipeline.tasks.len();
    let mut out = render_tables(loaded, plans);

    let _ = writeln!(
        out,
        "\nPlan ({tasks} task{}, run in order):",
        if tasks == 1 { "" } else { "s" }
    );
    let mut disabled_used = BTreeSet::new();
    for (i, (task, plan)) in pipeline.tasks.iter().zip(plans).enumerate() {
        let nodes = if task.num_nodes == 1 {
            "1 node".to_owned()
        } else {
            format!("{} nodes", task.num_nodes)
        };
        match plan.chosen() {
            Some(c) => {
                if !enabled.contains(&c.cloud) {
                    disabled_used.insert(c.cloud);
                }
                let _ = writeln!(
                    out,
                    "  Task {i} '{}': {nodes} on {} {} ({}) {}, ${:.2}/h",
                    task.name,
                    c.cloud,
                    c.region,
                    c.zone,
                    c.instance_label(),
                    c.cost()
                );
                let regions: BTreeSet<(&str, &str)> = plan
                    .ranked
                    .iter()
                    .map(|c| (c.cloud.id(), c.region.as_str()))
                    .collect();
                let _ = writeln!(
                    out,
                    "    failover: {} more candidate{} in {} region{}",
                    plan.ranked.len() - 1,
                    if plan.ranked.len() == 2 { "" } else { "s" },
                    regions.len(),
                    if regions.len() == 1 { "" } else { "s" }
                );
            }
            None => {
                let _ = writeln!(out, "  Task {i} '{}': {nodes}, no resource fits", task.name);
            }
        }
        describe_task(&mut out, task, cwd);
    }
    let disabled: Vec<String> = Cloud::ALL
        .iter()
        .filter(|c| !enabled.contains(c))
        .map(ToString::to_string)
        .collect();
    if !disabled.is_empty() {
        let _ = writeln!(
            out,
            "\nNot enabled here: {} (see `stratus check`). A real launch chooses among enabled clouds only{}.",
            disabled.join(", "),
            if disabled_used.is_empty() {
                ""
            } else {
                ", so its choice may differ from the plan above"
            }
        );
    }
    out.push_str("Dry run: nothing was launched.\n");
    out
}

fn describe_task(out: &mut String, task: &Task, cwd: &Path) {
    if !task.envs.is_empty() {
        let names: Vec<&str> = task.envs.keys().map(String::as_str).collect();
        let _ = writeln!(out, "    envs: {}", names.join(", "));
    }
    if !task.secrets.is_empty() {
        let shown: Vec<String> = task
            .secrets
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "    secrets: {}", shown.join(", "));
    }
    let _ = writeln!(out, "    recovery: {}", task.resources.recovery);
    match &task.workdir {
        Some(Workdir::Local(dir)) => {
            let _ = writeln!(out, "    workdir: {dir}{}", missing(cwd, dir));
        }
        Some(Workdir::Git { url, reference }) => {
            let at = reference
                .as_deref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default();
            let _ = writeln!(out, "    workdir: git {url}{at}");
        }
        None => {}
    }
    for mount in &task.file_mounts {
        let what = match &mount.source {
            MountSource::Local(path) => format!("{path}{}", missing(cwd, path)),
            MountSource::Bucket(url) => format!("{url} (copy)"),
            MountSource::Storage(s) => {
                let mut parts = Vec::new();
                if let Some(name) = &s.name {
                    parts.push(format!("bucket '{name}'"));
                }
                for source in &s.sources {
                    parts.push(match source {
                        StorageSource::Local(p) => format!("from {p}{}", missing(cwd, p)),
                        StorageSource::Bucket(u) => u.to_string(),
                    });
                }
                format!(
                    "{} ({}{})",
                    parts.join(" "),
                    s.mode,
                    if s.persistent {
                        ""
                    } else {
                        ", deleted after the job"
                    }
                )
            }
        };
        let _ = writeln!(out, "    file_mount {} <- {what}", mount.destination);
    }
    if task.run.as_deref().is_none_or(|r| r.trim().is_empty()) {
        let _ = writeln!(
            out,
            "    run: (none: the task succeeds without launching anything)"
        );
    }
}

/// A note when a local path the launch will upload does not exist here.
fn missing(cwd: &Path, path: &str) -> &'static str {
    if expand(cwd, path).exists() {
        ""
    } else {
        " (not found here: must exist at launch)"
    }
}
