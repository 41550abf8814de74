//! SkyPilot's "Considered resources" table, drawn from a task's ranked candidates.

use std::collections::BTreeMap;

use super::{Candidate, TaskPlan};
use crate::spec::resources::format_number;

/// Rows shown per (cloud, accelerator, spot) group: its cheapest regions, in failover order.
const ROWS_PER_GROUP: usize = 3;

/// The table for one task; `task` names it in pipelines (`for task 'eval'`).
pub fn considered_table(plan: &TaskPlan, task: Option<&str>, num_nodes: u32) -> String {
    let nodes = if num_nodes == 1 {
        "1 node".to_owned()
    } else {
        format!("{num_nodes} nodes")
    };
    let title = match task {
        Some(name) => format!("Considered resources for task '{name}' ({nodes}):"),
        None => format!("Considered resources ({nodes}):"),
    };
    let mut shown: BTreeMap<(String, String, bool), Vec<&str>> = BTreeMap::new();
    let mut rows: Vec<[String; 7]> = Vec::new();
    for (rank, c) in plan.ranked.iter().enumerate() {
        let gpus = gpus(c);
        let regions = shown
            .entry((c.cloud.id().to_owned(), gpus.clone(), c.use_spot))
            .or_default();
        if regions.len() >= ROWS_PER_GROUP || regions.contains(&c.region.as_str()) {
            continue;
        }
        regions.push(&c.region);
        rows.push([
            format!("{} ({})", c.cloud, c.region),
            c.instance_label(),
            format_number(c.vcpus),
            format_number(c.memory_gb),
            gpus,
            format!("{:.2}", c.cost()),
            if rank == 0 {
                "✔".into()
            } else {
                String::new()
            },
        ]);
    }
    render(&title, &rows)
}

fn gpus(c: &Candidate) -> String {
    c.accelerator
        .as_ref()
        .map_or_else(|| "-".to_owned(), |(name, count)| format!("{name}:{count}"))
}

fn render(title: &str, rows: &[[String; 7]]) -> String {
    let header = [
        "INFRA", "INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "COST ($)", "CHOSEN",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            s.push(' ');
            s.push_str(cell);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let rule = "-".repeat(widths.iter().sum::<usize>() + 3 * widths.len());
    let mut out = format!("{title}\n{rule}\n{}\n{rule}\n", line(&header));
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    out
}
