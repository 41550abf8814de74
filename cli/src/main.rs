//! `stratus`: launch and watch managed jobs, SkyPilot style.
//!
//! # Layout
//! - `main`: the clap command tree and exit codes.
//! - `launch`: `stratus jobs launch` (plan, confirm, upload, submit, stream).
//! - `jobs`: `stratus jobs queue | logs | cancel`, and the log follower.
//! - `check`: `stratus check`, the enabled clouds.
//! - `dashboard`: `stratus dashboard`, the jobs in a browser (and its SigV4 proxy for AWS).
//! - `local`: the local control plane (`stratus api serve`), started on first use.
//! - `client`: the HTTP client for the Stratus API.
//! - `pack`: `.tar.gz` archives of workdirs and local file mounts.
//! - `config`: `$STRATUS_HOME/config.yaml`.
//! - `home`: `$STRATUS_HOME`, where Stratus keeps its files.
//!
//! Exit codes scripts can trust: 0 ok; 2 bad input or usage (message on stderr); 100 a job
//! that `launch` or `logs` followed ended in anything but SUCCEEDED; 1 anything else.

mod check;
mod client;
mod config;
mod dashboard;
mod home;
mod jobs;
mod launch;
mod local;
mod pack;
mod plan_view;
mod remote;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Managed batch jobs on AWS and GCP with no controller VM: SkyPilot's task YAML and verbs.
#[derive(Debug, Parser)]
#[command(name = "stratus", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  stratus check\n  stratus jobs launch -y -n hello -- echo hello\n  stratus jobs launch --dry-run task.yaml\n  stratus jobs launch --dry-run --gpus A100:8 --use-spot -- python train.py"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Managed jobs: launch, queue, logs, cancel.
    #[command(
        subcommand,
        after_help = "Examples:\n  stratus jobs launch -y -n hello -- echo hello\n  stratus jobs queue\n  stratus jobs logs 1 --no-follow\n  stratus jobs cancel -a -y"
    )]
    Jobs(JobsCommand),
    /// Show which clouds are enabled (credentials found) and how to enable the others; logged
    /// in to a deployed stack (`stratus api login`), which clouds the stack can use.
    #[command(after_help = "Example:\n  stratus check")]
    Check,
    /// Open the dashboard: managed jobs, tasks, controller events and logs in a browser.
    Dashboard(dashboard::DashboardArgs),
    /// The local control plane (started automatically on first use).
    #[command(subcommand)]
    Api(ApiCommand),
    /// The local cloud: clusters of node processes on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Run the node agent (what each node of a local cluster runs).
    #[command(hide = true)]
    Agent,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    Launch(Box<launch::LaunchArgs>),
    Queue(jobs::QueueArgs),
    Logs(jobs::LogsArgs),
    Cancel(jobs::CancelArgs),
    /// Open the dashboard (the same as `stratus dashboard`, SkyPilot's `sky jobs dashboard`).
    Dashboard(dashboard::DashboardArgs),
}

#[derive(Debug, Subcommand)]
enum ApiCommand {
    /// Start the local control plane in the background (if it is not running).
    #[command(after_help = "Example:\n  stratus api start")]
    Start,
    /// Stop the local control plane. Jobs keep running; the next start picks them up.
    #[command(after_help = "Example:\n  stratus api stop")]
    Stop,
    /// Say whether the local control plane runs, and where (exit 1 when it does not).
    #[command(after_help = "Example:\n  stratus api status")]
    Status,
    /// Run the local control plane in the foreground.
    #[command(hide = true)]
    Serve,
    /// Print the URLs clouds push notices to (admins): GCE preemption notices reach a deployed
    /// stack through a log sink, a Pub/Sub topic and a push subscription to this URL.
    #[command(after_help = "Example (GCP preemption notices, see infra/README.md):
  stratus api hooks
  gcloud pubsub topics create stratus-preemptions
  gcloud logging sinks create stratus-preemptions pubsub.googleapis.com/projects/<p>/topics/stratus-preemptions \\
    --log-filter='protoPayload.methodName=\"compute.instances.preempted\"'
  gcloud pubsub subscriptions create stratus-preemptions --topic=stratus-preemptions --push-endpoint='<URL>'")]
    Hooks,
    /// Use a deployed Stratus (the `ApiUrl` output of the SAM stack) instead of the local
    /// control plane. Requests are signed with your AWS credentials (SigV4).
    #[command(
        after_help = "Example:\n  stratus api login --url https://abc123.execute-api.us-east-1.amazonaws.com"
    )]
    Login {
        /// The API's URL.
        #[arg(long)]
        url: String,
        /// The API's region (default: read from the URL).
        #[arg(long)]
        region: Option<String>,
    },
    /// Forget the deployed API and go back to the local control plane.
    #[command(after_help = "Example:\n  stratus api logout")]
    Logout,
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Take a job's current cluster back the way a spot reclaim would: its nodes are killed and
    /// the local cloud reports it preempted, so the job recovers on a new cluster.
    #[command(after_help = "Example:\n  stratus local preempt 3")]
    Preempt {
        /// The job whose cluster to reclaim.
        job_id: u64,
    },
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

fn api(command: &ApiCommand) -> Result<u8, Failure> {
    let home = home::stratus_home();
    match command {
        ApiCommand::Serve => local::serve(&home)?,
        ApiCommand::Start => {
            let client = local::ensure(&home)?;
            println!("Local control plane running at {}.", client.url);
        }
        ApiCommand::Stop => {
            if local::stop(&home)? {
                println!("Local control plane stopped.");
            } else {
                println!("Local control plane is not running.");
            }
        }
        ApiCommand::Login { url, region } => {
            let region = region
                .clone()
                .or_else(|| remote::region_of(url))
                .ok_or_else(|| {
                    Failure::input(anyhow::anyhow!(
                        "--region: the URL does not name one; pass --region"
                    ))
                })?;
            let client = client::Client::signed(url, &region, remote::credentials()?);
            let health = client.health()?;
            remote::save(
                &home,
                &remote::Remote {
                    url: url.trim_end_matches('/').to_owned(),
                    region,
                },
            )?;
            println!(
                "Logged in to the Stratus API at {url} (version {}); `stratus jobs` commands now use it.",
                health["version"].as_str().unwrap_or("?")
            );
        }
        ApiCommand::Hooks => {
            let hooks = local::ensure(&home)?.hooks()?;
            println!(
                "GCP preemption notices (push subscription endpoint):\n  {}",
                hooks["gcp_preemptions"].as_str().unwrap_or("?")
            );
        }
        ApiCommand::Logout => {
            if remote::forget(&home)? {
                println!("Logged out; the CLI uses the local control plane again.");
            } else {
                println!("Not logged in to a deployed API.");
            }
        }
        ApiCommand::Status => {
            let Some(info) = local::running(&home) else {
                println!("Local control plane is not running.");
                return Ok(1);
            };
            println!(
                "Local control plane running at {} (pid {}).",
                info.url, info.pid
            );
        }
    }
    Ok(0)
}

fn preempt(job_id: u64) -> Result<u8, Failure> {
    let client = local::ensure(&home::stratus_home())?;
    let answer = client.preempt(job_id)?;
    println!(
        "Preempted job {job_id}'s cluster {}; the job recovers on a new one.",
        answer["cluster"].as_str().unwrap_or("?")
    );
    Ok(0)
}

/// `stratus jobs queue | head` must not end in a panic message: when stdout is a closed pipe,
/// exit as a process killed by SIGPIPE would (141), without unsafe signal handling.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    // Node agents start their commands through their own binary, which is this one when the
    // agent runs as `stratus agent`.
    if let Some(code) = agent::exec_if_trampoline() {
        return code;
    }
    exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Agent) {
        return agent::main_from_env("stratus agent");
    }
    // The control plane logs what it does; commands only warn.
    let default = if matches!(cli.command, Command::Api(ApiCommand::Serve)) {
        "info"
    } else {
        "warn"
    };
    // `set_global_default`, not `init()`: `init()` would also route the `log` crate here, and
    // ureq's trace records carry the API token.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        // The control plane's stderr is its log file: colour codes only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    let result = match cli.command {
        Command::Jobs(JobsCommand::Launch(args)) => launch::run(&args),
        Command::Jobs(JobsCommand::Queue(args)) => jobs::queue(&args),
        Command::Jobs(JobsCommand::Logs(args)) => jobs::logs(&args),
        Command::Jobs(JobsCommand::Cancel(args)) => jobs::cancel(&args),
        Command::Jobs(JobsCommand::Dashboard(args)) | Command::Dashboard(args) => {
            dashboard::run(&args)
        }
        Command::Check => check::run().map_err(Failure::from),
        Command::Api(command) => api(&command),
        Command::Local(LocalCommand::Preempt { job_id }) => preempt(job_id),
        Command::Agent => unreachable!("handled above"),
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
