//! `stratus`: launch and watch managed jobs, SkyPilot style.
//!
//! # Layout
//! - `main`: the clap command tree and exit codes.
//! - `launch`: `stratus jobs launch` (planning and `--dry-run`).
//! - `check`: `stratus check`, the enabled clouds.
//! - `home`: `$STRATUS_HOME`, where Stratus keeps its files.
//!
//! Exit codes scripts can trust: 0 ok, 2 bad input or usage (message on stderr), 1 anything else.

mod check;
mod home;
mod launch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Managed batch jobs on AWS and GCP with no controller VM: SkyPilot's task YAML and verbs.
#[derive(Debug, Parser)]
#[command(name = "stratus", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  stratus check\n  stratus jobs launch --dry-run task.yaml\n  stratus jobs launch --dry-run --gpus A100:8 --use-spot -- python train.py"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Managed jobs: launch, and (soon) queue, logs and cancel.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Show which clouds are enabled (credentials found) and how to enable the others.
    Check,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    Launch(Box<launch::LaunchArgs>),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Bad input or usage: exit 2.
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Jobs(JobsCommand::Launch(args)) => launch::run(&args),
        Command::Check => Ok(check::run()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(code)
        }
    }
}
