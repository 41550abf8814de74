//! `stratus check`: which clouds are enabled, as `sky check` shows them. Logged in to a
//! deployed stack, it asks the stack (its functions hold the cloud credentials, not this
//! machine) and prints where each cloud's credentials come from or why it is off.

use shared::credentials::{self, Environment};

use crate::{home, local, remote};

pub fn run() -> anyhow::Result<u8> {
    let home = home::stratus_home();
    if let Some(stack) = remote::load(&home)? {
        let health = local::ensure(&home)?.health()?;
        println!(
            "Checking which clouds the Stratus stack at {} can use.",
            stack.url
        );
        return Ok(print_stack(&health));
    }
    let statuses = credentials::check(&Environment::current());
    println!("Checking credentials to enable clouds for Stratus.");
    for s in &statuses {
        if s.enabled {
            println!("  {}: enabled\n    {}", s.cloud, s.detail);
        } else {
            println!("  {}: disabled\n    Reason: {}", s.cloud, s.detail);
        }
    }
    print_enabled(
        statuses
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.cloud.to_string()),
    );
    Ok(0)
}

/// The stack's answer (`GET /api/v1/health`: `clouds`, `cloud_notes`).
fn print_stack(health: &serde_json::Value) -> u8 {
    let enabled: Vec<String> = health["clouds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .map(str::to_owned)
        .collect();
    let notes = health["cloud_notes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (cloud, note) in &notes {
        let note = note.as_str().unwrap_or_default();
        if enabled.contains(cloud) {
            println!("  {}: enabled\n    {note}", cloud.to_uppercase());
        } else {
            println!("  {}: disabled\n    Reason: {note}", cloud.to_uppercase());
        }
    }
    print_enabled(enabled.iter().map(|c| c.to_uppercase()));
    0
}

fn print_enabled(clouds: impl Iterator<Item = String>) {
    println!("\n🎉 Enabled clouds 🎉");
    for cloud in clouds {
        println!("  ✔ {cloud}");
    }
}
