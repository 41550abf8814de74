//! `stratus jobs launch`: read the task, apply the flags, plan, and (with `--dry-run`) show the
//! plan without touching anything (what it prints of a plan: `plan_view`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use shared::catalog::Catalog;
use shared::cloud::Cloud;
use shared::credentials::{self, Environment};
use shared::optimizer::{self, TaskPlan};
use shared::spec::{self, Loaded, Overrides, Task};

use std::collections::BTreeMap;

use shared::control::SubmitRequest;
use shared::job::array::{ArrayMember, ArrayRequest};

use crate::home::stratus_home;
use crate::plan_view::{render_choices, render_dry_run, render_tables};
use crate::{Failure, client, jobs, local, pack};

/// Launch a managed job from a task YAML (or a command): choose the cheapest resources across
/// clouds and regions, run setup then run, recover from preemptions, tear down when done.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    stratus jobs launch task.yaml -y -d\n  \
    stratus jobs launch -y -n hello -- echo hello\n  \
    stratus jobs launch --dry-run task.yaml\n  \
    stratus jobs launch --dry-run -n train --env WANDB_API_KEY --gpus A100:8 task.yaml\n  \
    stratus jobs launch --dry-run --infra aws/us-east-1 --cpus 4+ -- python train.py --epochs 3\n  \
    stratus jobs launch --dry-run --max-cost 20 --max-duration 6h task.yaml\n  \
    stratus jobs launch -d -y --depends-on 1:afterok evaluate.yaml\n  \
    stratus jobs launch -y --num-jobs 20 --max-parallel 4 shard.yaml   # $SKYPILOT_JOB_RANK picks the shard")]
pub struct LaunchArgs {
    /// A task YAML file (a pipeline when it has several `---` documents), or a command to run
    /// (put it after `--` when it has flags of its own). Options may come before or after it,
    /// as in SkyPilot.
    #[arg(value_name = "FILE | -- CMD", allow_hyphen_values = false)]
    entrypoint: Vec<String>,

    /// The job name (overrides the YAML's `name`; a one-task job's task takes it too).
    /// `-c/--cluster` is SkyPilot's older spelling.
    #[arg(short = 'n', long, short_alias = 'c', alias = "cluster")]
    name: Option<String>,

    /// Show the plan (tasks, chosen resources, envs, recovery) and launch nothing.
    #[arg(long)]
    dry_run: bool,

    /// Skip the confirmation prompt.
    #[arg(short = 'y', long)]
    yes: bool,

    /// Return once the job is submitted instead of streaming its logs.
    #[arg(short = 'd', long)]
    detach_run: bool,

    /// Set an environment variable: KEY=VALUE, or KEY alone to copy it from your environment.
    /// Fills envs declared with no value in the YAML. Repeatable.
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    envs: Vec<String>,

    /// Read environment variables from a dotenv file (KEY=VALUE lines, `#` comments, quotes);
    /// `--env` wins over it.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,

    /// Like --env, for secrets: passed to the job, never printed. Repeatable.
    #[arg(long = "secret", value_name = "KEY[=VALUE]")]
    secrets: Vec<String>,

    /// Sync this local folder to each node (overrides the YAML's `workdir`).
    #[arg(long)]
    workdir: Option<String>,

    /// Where to run: cloud[/region[/zone]], e.g. aws, aws/us-east-1, gcp/*/us-central1-a, local.
    #[arg(long)]
    infra: Option<String>,

    /// SkyPilot's older spelling of --infra's cloud: `--cloud aws` is `--infra aws`.
    #[arg(long, conflicts_with = "infra")]
    cloud: Option<String>,

    /// SkyPilot's older spelling of --infra's region: `--cloud aws --region us-east-1` is
    /// `--infra aws/us-east-1`.
    #[arg(long, conflicts_with = "infra")]
    region: Option<String>,

    /// SkyPilot's older spelling of --infra's zone (`--infra gcp/*/us-central1-a`).
    #[arg(long, conflicts_with = "infra")]
    zone: Option<String>,

    #[arg(
        long,
        value_name = "STRATEGY",
        help = "The recovery strategy from preemptions and lost machines (over the file's \
                `job_recovery`): EAGER_NEXT_REGION (default), FAILOVER or NO_RECOVERY."
    )]
    job_recovery: Option<String>,

    /// Accelerators per node, e.g. A100, A100:8, T4:1.
    #[arg(long)]
    gpus: Option<String>,

    /// vCPUs per node: N exactly or N+ at least.
    #[arg(long)]
    cpus: Option<String>,

    /// Memory per node in GB: N exactly or N+ at least.
    #[arg(long)]
    memory: Option<String>,

    /// An instance type, e.g. m6i.2xlarge or n2-standard-8.
    #[arg(short = 't', long)]
    instance_type: Option<String>,

    /// Number of nodes.
    #[arg(long)]
    num_nodes: Option<u32>,

    /// Use spot instances (and recover from preemptions).
    #[arg(long, overrides_with = "no_use_spot")]
    use_spot: bool,

    /// Use on-demand instances.
    #[arg(long, overrides_with = "use_spot")]
    no_use_spot: bool,

    /// Launch only after job ID ends, as TYPE says (Slurm's meanings): afterok (default:
    /// it SUCCEEDED), afternotok (it failed or was cancelled), afterany. A dependency that
    /// can never be met cancels this job. Repeatable.
    #[arg(long = "depends-on", value_name = "ID[:TYPE]", value_parser = parse_dependency)]
    depends_on: Vec<shared::job::dependencies::Dependency>,

    /// Stop the job (FAILED) once its machines have cost this many US dollars, all tasks
    /// and recoveries together (an estimate from catalog prices; over the file's
    /// `stratus.max_cost`).
    #[arg(long, value_name = "USD")]
    max_cost: Option<f64>,

    /// Stop each task (FAILED) this long after it started, recoveries included, e.g. `2h` or
    /// `90m` (over the file's `max_duration`).
    #[arg(long, value_name = "DURATION")]
    max_duration: Option<String>,

    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(shared::job::array::MAX_JOBS)),
        help = "Launch N jobs from this task (a job array, at most 1,000): each has its own ID \
                and gets $SKYPILOT_JOB_RANK (0..N-1) and $SKYPILOT_NUM_JOBS. Returns once they \
                are submitted (as --detach-run)."
    )]
    num_jobs: Option<u32>,

    /// With --num-jobs: at most M of the jobs have machines at once (default: all). Rank r
    /// launches once rank r-M has ended.
    #[arg(long, value_name = "M", requires = "num_jobs", value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel: Option<u32>,
}

pub fn run(args: &LaunchArgs) -> Result<u8, Failure> {
    let (loaded, source, yaml) = load(args)?;
    for warning in &loaded.warnings {
        eprintln!("Warning: {source}: {warning}");
    }
    let home = stratus_home();
    let catalog = Catalog::with_overrides(&home.join("catalogs")).map_err(Failure::input)?;
    known_places(&catalog, &loaded, &source)?;
    if args.dry_run {
        let enabled = credentials::enabled_clouds(&Environment::current());
        let plans: Vec<TaskPlan> = loaded
            .pipeline
            .tasks
            .iter()
            .map(|t| optimizer::plan_task(&catalog, t, &catalog.clouds()))
            .collect();
        print!(
            "{}",
            render_dry_run(&loaded, &plans, &enabled, Path::new("."))
        );
        return Ok(no_fit_code(&plans));
    }

    // The uploads must exist before anything starts.
    let paths = local_paths(&loaded, args.workdir.as_deref())?;
    let bucket = crate::config::Config::load(&home)
        .and_then(|c| c.jobs_bucket())
        .map_err(Failure::input)?;
    let client = local::ensure(&home)?;
    let clouds = server_clouds(&client)?;
    let plans: Vec<TaskPlan> = loaded
        .pipeline
        .tasks
        .iter()
        .map(|t| optimizer::plan_task(&catalog, t, &clouds))
        .collect();
    if !show_plan(args, &loaded, &plans, &catalog, &clouds) {
        return Ok(1);
    }
    let name = &loaded.pipeline.name;
    let what = match args.num_jobs {
        Some(n) => format!("{n} managed jobs '{name}' (a job array)"),
        None => format!("a managed job '{name}'"),
    };
    if !args.yes && !jobs::confirm(&format!("Launching {what}. Proceed?"))? {
        eprintln!("Aborted!");
        return Ok(1);
    }

    let uploads = upload(&client, paths, bucket.as_deref())?;
    let command_task = yaml.is_none();
    let request = SubmitRequest {
        // The text already checked above, read once: an edit in between cannot slip in.
        yaml,
        command: command_task.then(|| args.entrypoint.join(" ")),
        overrides: overrides(args).map(|o| Overrides {
            default_name: Some(name.clone()),
            ..o
        })?,
        uploads,
        depends_on: args.depends_on.clone(),
        array: args.num_jobs.map(|num_jobs| ArrayRequest {
            num_jobs,
            max_parallel: args.max_parallel,
        }),
    };
    if args.num_jobs.is_some() {
        println!("Launching {what}...");
    } else {
        println!("Launching managed job '{name}'...");
    }
    let job = client.submit(&request).map_err(|e| {
        if client::is_bad_request(&e) {
            Failure::input(e)
        } else {
            e.into()
        }
    })?;
    if let Some(array) = job.array {
        print!("{}", array_submitted(&array));
        return Ok(0);
    }
    follow_submitted(
        &client,
        &job,
        args.detach_run,
        loaded.pipeline.tasks[0].num_nodes,
    )
}

/// A place the task names that does not exist is bad input, not a lack of capacity.
fn known_places(catalog: &Catalog, loaded: &Loaded, source: &str) -> Result<(), Failure> {
    let unknown: Vec<String> = loaded
        .pipeline
        .tasks
        .iter()
        .flat_map(|t| optimizer::unknown_places(catalog, t))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Failure::input(anyhow!("{source}: {}", unknown.join("; "))))
}

/// Prints the plan; false (after saying why, and which disabled cloud would do) when a task
/// fits nowhere the control plane can launch.
fn show_plan(
    args: &LaunchArgs,
    loaded: &Loaded,
    plans: &[TaskPlan],
    catalog: &Catalog,
    clouds: &[Cloud],
) -> bool {
    // `-y` asks no question, so the table it would be asked about shrinks to the choice.
    if args.yes && plans.iter().all(|p| p.chosen().is_some()) {
        print!("{}", render_choices(loaded, plans));
    } else {
        print!("{}", render_tables(loaded, plans));
    }
    if no_fit_code(plans) == 0 {
        return true;
    }
    for task in &loaded.pipeline.tasks {
        if let Some(hint) = disabled_hint(catalog, task, clouds) {
            eprintln!("{hint}");
        }
    }
    false
}

/// What a launched array is and how to see it.
fn array_submitted(array: &ArrayMember) -> String {
    let (id, last) = (array.id, array.id + u64::from(array.size) - 1);
    format!(
        "Managed job array {id}: {size} jobs, IDs {id}-{last}, at most {m} at once.\n\
         📋 Useful Commands\n\
         ├── To see the array's jobs:          stratus jobs queue --array {id}\n\
         ├── To stream one job's logs:         stratus jobs logs {id} --rank RANK\n\
         ├── To cancel the whole array:        stratus jobs cancel --array {id}\n\
         └── To view all managed jobs:         stratus jobs queue\n",
        size = array.size,
        m = array.max_parallel,
    )
}

/// Streams a submitted job's logs until it ends (or, detached, says how to).
fn follow_submitted(
    client: &client::Client,
    job: &shared::api::JobView,
    detach: bool,
    nodes: u32,
) -> Result<u8, Failure> {
    let id = job.id;
    if detach {
        println!("Managed Job ID: {id}");
        print!("{}", jobs::useful_commands(id));
        return Ok(0);
    }
    println!("⚙︎ Job submitted, ID: {id}");
    println!(
        "├── Waiting for task resources on {nodes} node{}.",
        if nodes == 1 { "" } else { "s" }
    );
    let status = jobs::follow(
        client,
        job,
        jobs::Follow {
            until_done: true,
            progress: jobs::Progress::Launch,
            all_attempts: false,
        },
    )?;
    print!("{}", jobs::finished_lines(client, id, status));
    println!("\nManaged Job ID: {id}");
    print!("{}", jobs::useful_commands(id));
    Ok(jobs::exit_code(status))
}

/// A fresh id grouping this launch's uploads (so the job's cleanup deletes exactly them).
fn upload_session() -> String {
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (now.as_nanos() as u64 ^ u64::from(std::process::id())).to_be_bytes();
    }
    hex::encode(bytes)
}

fn no_fit_code(plans: &[TaskPlan]) -> u8 {
    let unplanned = plans.iter().filter(|p| p.chosen().is_none()).count();
    if unplanned > 0 {
        eprintln!(
            "error: no resource satisfies {unplanned} of the job's tasks (see above); change their resources"
        );
        return 1;
    }
    0
}

/// When a task fits nowhere the control plane can launch but would fit on a cloud it has not
/// enabled: which cloud, and how to enable it.
fn disabled_hint(catalog: &Catalog, task: &Task, enabled: &[Cloud]) -> Option<String> {
    if optimizer::plan_task(catalog, task, enabled)
        .chosen()
        .is_some()
    {
        return None;
    }
    let disabled: Vec<Cloud> = catalog
        .clouds()
        .into_iter()
        .filter(|c| !enabled.contains(c))
        .collect();
    let plan = optimizer::plan_task(catalog, task, &disabled);
    let could: Vec<String> = plan
        .ranked
        .iter()
        .map(|c| c.cloud.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if could.is_empty() {
        return None;
    }
    Some(format!(
        "hint: task '{}' fits on {}, which the control plane cannot use: no credentials for it were found. Run `stratus check` to see how to enable it.",
        task.name,
        could.join(" and ")
    ))
}

/// The clouds the control plane can launch on.
fn server_clouds(client: &client::Client) -> Result<Vec<Cloud>, Failure> {
    let health = client.health()?;
    let clouds = health["clouds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str())
                .filter_map(|c| match shared::cloud::classify(c) {
                    shared::cloud::CloudName::Supported(cloud) => Some(cloud),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(clouds)
}

/// Every local path the job syncs to its nodes (workdir, local file mounts), as written and
/// resolved against this directory; each must exist.
fn local_paths(
    loaded: &Loaded,
    flag_workdir: Option<&str>,
) -> Result<BTreeMap<String, PathBuf>, Failure> {
    let mut paths = BTreeMap::new();
    for task in &loaded.pipeline.tasks {
        for (field, written) in task.local_paths() {
            // Name what the user wrote: the flag, or the file's field.
            let field = if field == "workdir" && flag_workdir == Some(written) {
                "--workdir"
            } else {
                field
            };
            let resolved = expand(Path::new("."), written);
            if !resolved.exists() {
                return Err(Failure::input(anyhow!(
                    "{field}: '{written}' does not exist (resolved to {})",
                    resolved.display()
                )));
            }
            paths.insert(written.to_owned(), resolved);
        }
    }
    Ok(paths)
}

/// Packs and uploads each local path of one launch (into `bucket`, the user's `jobs.bucket`,
/// or the deployment's store): local path as written -> archive key.
fn upload(
    client: &crate::client::Client,
    paths: BTreeMap<String, PathBuf>,
    bucket: Option<&str>,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut uploads = BTreeMap::new();
    let session = upload_session();
    for (written, resolved) in paths {
        match bucket {
            Some(bucket) => eprintln!("Uploading {written} to {bucket}/job-{session}/ ..."),
            None => eprintln!("Uploading {written} ..."),
        }
        let archive = pack::archive(&resolved)
            .map_err(|e| Failure::input(e.context(format!("packing {written}"))))?;
        uploads.insert(written, client.upload(&session, bucket, &archive)?);
    }
    Ok(uploads)
}

/// A path as the user wrote it: `~/` is their home, relative paths are from `cwd`.
pub(crate) fn expand(cwd: &Path, path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(path), |h| PathBuf::from(h).join(rest)),
        None if path == "~" => {
            std::env::var_os("HOME").map_or_else(|| PathBuf::from(path), PathBuf::from)
        }
        None => cwd.join(path),
    }
}

/// Reads the file (or builds the command task) with the flags applied: the task, where it
/// came from, and the file's text (sent as is to `submit`).
fn load(args: &LaunchArgs) -> Result<(Loaded, String, Option<String>), Failure> {
    let overrides = overrides(args)?;
    match args.entrypoint.as_slice() {
        [] => Err(Failure::input(anyhow!(
            "give a task YAML file or a command, e.g. `stratus jobs launch task.yaml` or `stratus jobs launch -- python train.py`"
        ))),
        [file] if is_task_file(file) => {
            let path = PathBuf::from(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read task file {file}"))
                .map_err(Failure::input)?;
            let overrides = Overrides {
                default_name: path.file_stem().map(|s| {
                    s.to_string_lossy().replace(
                        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_' && c != '.',
                        "-",
                    )
                }),
                ..overrides
            };
            let loaded = spec::load(&text, &overrides)
                .map_err(|e| Failure::input(anyhow!("{file}: {e}")))?;
            Ok((loaded, file.clone(), Some(text)))
        }
        words => {
            let command = words.join(" ");
            let loaded = spec::load_command(&command, &overrides)
                .map_err(|e| Failure::input(anyhow!("{e}")))?;
            Ok((loaded, "command".into(), None))
        }
    }
}

/// Whether a lone entrypoint word names a task file rather than a command: a `.yaml`/`.yml`
/// name (read, so that a missing one is an error, not a command), or, as SkyPilot decides,
/// an existing file that holds a YAML mapping (`task` with no extension; not `train.sh`).
fn is_task_file(word: &str) -> bool {
    if word.contains(char::is_whitespace) {
        return false;
    }
    let yaml = Path::new(word)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    // Bounded: a task file is small, and a big file named as a command is not read whole.
    let small_file = std::fs::metadata(word).is_ok_and(|m| m.is_file() && m.len() <= 1 << 20);
    // The first document: a pipeline file holds several.
    yaml || small_file
        && std::fs::read_to_string(word).is_ok_and(|text| {
            serde_yaml::Deserializer::from_str(&text)
                .next()
                .is_some_and(|doc| {
                    serde::Deserialize::deserialize(doc)
                        .is_ok_and(|v: serde_yaml::Value| v.is_mapping())
                })
        })
}

fn overrides(args: &LaunchArgs) -> Result<Overrides, Failure> {
    let mut envs = match &args.env_file {
        Some(path) => env_file(path)?,
        None => Vec::new(),
    };
    envs.extend(key_values("--env", &args.envs)?);
    Ok(Overrides {
        name: args.name.clone(),
        default_name: None,
        envs,
        secrets: key_values("--secret", &args.secrets)?,
        workdir: args.workdir.clone(),
        use_spot: match (args.use_spot, args.no_use_spot) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        infra: args.infra.clone().or_else(|| old_infra(args)),
        gpus: args.gpus.clone(),
        cpus: args.cpus.clone(),
        memory: args.memory.clone(),
        instance_type: args.instance_type.clone(),
        num_nodes: args.num_nodes,
        max_cost: args.max_cost,
        max_duration: args.max_duration.clone(),
        job_recovery: args.job_recovery.clone(),
    })
}

/// `--cloud`/`--region`/`--zone` as one `--infra` value (`*` for what is not given).
fn old_infra(args: &LaunchArgs) -> Option<String> {
    if args.cloud.is_none() && args.region.is_none() && args.zone.is_none() {
        return None;
    }
    let star = || "*".to_owned();
    let mut parts = vec![
        args.cloud.clone().unwrap_or_else(star),
        args.region.clone().unwrap_or_else(star),
        args.zone.clone().unwrap_or_else(star),
    ];
    while parts.len() > 1 && parts.last().is_some_and(|p| p == "*") {
        parts.pop();
    }
    Some(parts.join("/"))
}

/// `--env-file`: its variables in order (a later line wins, and `--env` after them).
fn env_file(path: &Path) -> Result<Vec<(String, String)>, Failure> {
    let shown = path.display();
    let lines = dotenvy::from_path_iter(path)
        .map_err(|e| Failure::input(anyhow!("--env-file {shown}: {e}")))?;
    lines
        .map(|line| line.map_err(|e| Failure::input(anyhow!("--env-file {shown}: {e}"))))
        .collect()
}

fn parse_dependency(text: &str) -> Result<shared::job::dependencies::Dependency, String> {
    text.parse()
}

/// `KEY=VALUE`, or `KEY` with the value taken from this process's environment.
fn key_values(flag: &str, items: &[String]) -> Result<Vec<(String, String)>, Failure> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
            None => match std::env::var(item) {
                Ok(value) => Ok((item.clone(), value)),
                Err(std::env::VarError::NotUnicode(_)) => Err(Failure::input(anyhow!(
                    "{flag} {item}: the value of {item} in your environment is not UTF-8 text; pass {flag} {item}=<value>"
                ))),
                Err(std::env::VarError::NotPresent) => Err(Failure::input(anyhow!(
                    "{flag} {item}: {item} is not set in your environment; pass {flag} {item}=<value>"
                ))),
            },
        })
        .collect()
}
