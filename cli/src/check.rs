//! `stratus check`: which clouds are enabled, as `sky check` shows them.

use shared::credentials::{self, Environment};

pub fn run() -> u8 {
    let statuses = credentials::check(&Environment::current());
    println!("Checking credentials to enable clouds for Stratus.");
    for s in &statuses {
        if s.enabled {
            println!("  {}: enabled\n    {}", s.cloud, s.detail);
        } else {
            println!("  {}: disabled\n    Reason: {}", s.cloud, s.detail);
        }
    }
    println!("\n🎉 Enabled clouds 🎉");
    for s in statuses.iter().filter(|s| s.enabled) {
        println!("  ✔ {}", s.cloud);
    }
    0
}
