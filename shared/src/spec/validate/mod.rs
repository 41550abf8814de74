//! Mirror → domain: SkyPilot's rules for task files, with errors that name the field and the fix.
//!
//! # Layout
//! - this file: loading a file (documents, headers, names) and a task's own fields.
//! - `yaml_errors`: serde's errors made into ones that name the field and the fix.
//! - `envs`: `envs`, `secrets` and substitution.
//! - `mounts`: `file_mounts`, `storage`, bucket URLs.
//! - `resources`: `resources` and its alternatives, with the CLI's overrides.
//! - `infra`: `infra` strings.
//! - `scalars`: accelerators, quantities, disk sizes, choices, ports.
//! - `recovery`: `job_recovery`.

mod envs;
mod infra;
mod mounts;
mod recovery;
mod resources;
mod scalars;
mod yaml_errors;

use self::envs::values;
use self::mounts::file_mounts;
use self::resources::resource_spec;
use self::scalars::{positive_int, show};
use self::yaml_errors::{with_more_errors, yaml_error};
use super::error::{SpecError, Warning};
use super::yaml::{TaskYaml, WorkdirYaml};
use super::{Loaded, Overrides, Pipeline, Secret, Task, Workdir, check_name};

type Result<T> = std::result::Result<T, SpecError>;

const GENERATED_JOB_NAME: &str = "stratus-job";

const COMMAND_JOB_NAME: &str = "stratus-cmd";

pub(super) fn load(text: &str, overrides: &Overrides) -> Result<Loaded> {
    super::limits::check_text(text)?;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parsed: Option<TaskYaml> = serde_path_to_error::deserialize(document)
            .map_err(|e| with_more_errors(yaml_error(&e).in_document(index), text, index))?;
        if let Some(task) = parsed {
            documents.push((index, task));
        }
    }
    if documents.is_empty() {
        return Err(SpecError::new(
            "",
            "the file holds no task: write at least `run: <command>`",
        ));
    }

    let mut header_name = None;
    if is_header(&documents[0].1) {
        let (index, header) = documents.remove(0);
        if let Some(execution) = &header.execution {
            check_execution(execution).map_err(|e| e.in_document(index))?;
        }
        if header.primary_tasks.is_some() || header.termination_delay.is_some() {
            return Err(job_group_error("primary_tasks").in_document(index));
        }
        header_name = header.name;
    }

    let mut warnings = Vec::new();
    if documents.len() > 1 && overrides.touches_resources() {
        warnings.push(Warning {
            path: "--infra/--gpus/--cpus/...".into(),
            message: "resource overrides are ignored, since the file holds several tasks".into(),
        });
    }
    let single = documents.len() <= 1;
    let job_name = job_name(overrides, header_name.as_deref(), &documents)?;
    let max_cost =
        super::extensions::job_max_cost(documents.iter().map(|(i, d)| (*i, d)), overrides)?;

    let mut tasks = Vec::new();
    if documents.is_empty() {
        // A header alone still makes one (trivial) task, as in SkyPilot.
        let task = task(TaskYaml::default(), overrides, true, &mut warnings)?;
        tasks.push(task);
    }
    let count = documents.len();
    for (position, (index, yaml)) in documents.into_iter().enumerate() {
        let mut task =
            task(yaml, overrides, single, &mut warnings).map_err(|e| e.in_document(index))?;
        super::limits::check_task(&task).map_err(|e| e.in_document(index))?;
        if task.name.is_empty() {
            task.name = if count == 1 {
                job_name.clone()
            } else {
                format!("{job_name}-{position}")
            };
        }
        tasks.push(task);
    }
    // `-n` names a one-task job's task too (its log prefix, cluster and task name), as
    // SkyPilot's `jobs launch -n` does.
    if tasks.len() == 1 && (tasks[0].name.is_empty() || overrides.name.is_some()) {
        tasks[0].name.clone_from(&job_name);
    }
    Ok(Loaded {
        pipeline: Pipeline {
            name: job_name,
            tasks,
            max_cost,
        },
        warnings,
    })
}

pub(super) fn load_command(command: &str, overrides: &Overrides) -> Result<Loaded> {
    if command.trim().is_empty() {
        return Err(SpecError::new(
            "",
            "the command is empty: give a task file or a command after `--`",
        ));
    }
    let mut warnings = Vec::new();
    let yaml = TaskYaml {
        run: Some(command.to_owned()),
        ..TaskYaml::default()
    };
    if command.len() > super::limits::MAX_YAML_BYTES {
        return Err(SpecError::new(
            "",
            format!(
                "the command has {} KiB; at most {} KiB (put a longer script in a file and run that)",
                command.len() / 1024,
                super::limits::MAX_YAML_BYTES / 1024
            ),
        ));
    }
    let mut task = task(yaml, overrides, true, &mut warnings)?;
    super::limits::check_task(&task)?;
    let name = match &overrides.name {
        Some(name) => {
            check_name(name).map_err(|m| SpecError::new("--name", m))?;
            name.clone()
        }
        None => COMMAND_JOB_NAME.to_owned(),
    };
    task.name.clone_from(&name);
    Ok(Loaded {
        pipeline: Pipeline {
            name,
            tasks: vec![task],
            max_cost: super::extensions::job_max_cost([], overrides)?,
        },
        warnings,
    })
}

/// A first document holding only `name` (and maybe `execution` or job-group keys) names the
/// pipeline rather than being a task.
fn is_header(doc: &TaskYaml) -> bool {
    let TaskYaml {
        name,
        execution,
        primary_tasks,
        termination_delay,
        ..
    } = doc;
    let header_keys = [
        name.is_some(),
        execution.is_some(),
        primary_tasks.is_some(),
        termination_delay.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    name.is_some() && header_keys == present_keys(doc)
}

fn present_keys(doc: &TaskYaml) -> usize {
    let TaskYaml {
        name,
        workdir,
        num_nodes,
        resources,
        envs,
        secrets,
        file_mounts,
        setup,
        run,
        config,
        max_duration,
        stratus,
        execution,
        primary_tasks,
        termination_delay,
        service,
        pool,
        volumes,
        volume_mounts,
        inputs,
        outputs,
        event_callback,
        file_mounts_mapping,
        api_server_access,
        metadata,
    } = doc;
    [
        name.is_some(),
        workdir.is_some(),
        num_nodes.is_some(),
        resources.is_some(),
        envs.is_some(),
        secrets.is_some(),
        file_mounts.is_some(),
        setup.is_some(),
        run.is_some(),
        config.is_some(),
        max_duration.is_some(),
        stratus.is_some(),
        execution.is_some(),
        primary_tasks.is_some(),
        termination_delay.is_some(),
        service.is_some(),
        pool.is_some(),
        volumes.is_some(),
        volume_mounts.is_some(),
        inputs.is_some(),
        outputs.is_some(),
        event_callback.is_some(),
        file_mounts_mapping.is_some(),
        api_server_access.is_some(),
        metadata.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count()
}

fn check_execution(execution: &str) -> Result<()> {
    match execution {
        "serial" => Ok(()),
        "parallel" => Err(job_group_error("execution")),
        other => Err(SpecError::new(
            "execution",
            format!(
                "'{other}' is not an execution mode: pipelines use `execution: serial` (or omit it)"
            ),
        )),
    }
}

fn job_group_error(path: &str) -> SpecError {
    SpecError::new(
        path,
        "job groups (`execution: parallel`) are not supported by Stratus: a pipeline's tasks run \
         one after another; remove the job-group keys to run the tasks serially, or launch each \
         task as its own job",
    )
}

fn job_name(
    overrides: &Overrides,
    header: Option<&str>,
    documents: &[(usize, TaskYaml)],
) -> Result<String> {
    if let Some(name) = &overrides.name {
        check_name(name).map_err(|m| SpecError::new("--name", m))?;
        return Ok(name.clone());
    }
    let from_file = header.map(str::to_owned).or_else(|| match documents {
        [(_, only)] => only.name.clone(),
        _ => None,
    });
    if let Some(name) = from_file {
        let document = if header.is_some() { 0 } else { documents[0].0 };
        check_name(&name).map_err(|m| SpecError::new("name", m).in_document(document))?;
        return Ok(name);
    }
    Ok(overrides
        .default_name
        .clone()
        .filter(|n| check_name(n).is_ok())
        .unwrap_or_else(|| GENERATED_JOB_NAME.to_owned()))
}

fn task(
    yaml: TaskYaml,
    overrides: &Overrides,
    single: bool,
    warnings: &mut Vec<Warning>,
) -> Result<Task> {
    reject_unsupported(&yaml)?;
    warn_ignored(&yaml, warnings);
    let limits = super::extensions::task_limits(&yaml, overrides)?;
    if yaml.execution.is_some() || yaml.primary_tasks.is_some() || yaml.termination_delay.is_some()
    {
        return Err(SpecError::new(
            "execution",
            "execution, primary_tasks and termination_delay belong in the first (header) document of a pipeline",
        ));
    }

    let name = match yaml.name {
        Some(name) => {
            check_name(&name).map_err(|m| SpecError::new("name", m))?;
            name
        }
        None => String::new(),
    };

    let envs = values(
        "envs",
        yaml.envs.unwrap_or_default(),
        &overrides.envs,
        "--env",
    )?;
    let secrets = values(
        "secrets",
        yaml.secrets.unwrap_or_default(),
        &overrides.secrets,
        "--secret",
    )?
    .into_iter()
    .map(|(k, v)| (k, Secret::new(v)))
    .collect();

    let workdir = match (&overrides.workdir, yaml.workdir) {
        (Some(dir), _) => Some(Workdir::Local(dir.clone())),
        (None, Some(WorkdirYaml::Path(p))) => Some(Workdir::Local(p)),
        (None, Some(WorkdirYaml::Git(g))) => Some(Workdir::Git {
            url: g.url,
            reference: g.reference,
        }),
        (None, None) => None,
    };

    let mut num_nodes = match &yaml.num_nodes {
        None => 1,
        Some(v) => positive_int(v).ok_or_else(|| {
            SpecError::new(
                "num_nodes",
                format!(
                    "{} is not a positive integer: write e.g. `num_nodes: 2`",
                    show(v)
                ),
            )
        })?,
    };
    if single && let Some(n) = overrides.num_nodes {
        if n == 0 {
            return Err(SpecError::new("--num-nodes", "must be at least 1"));
        }
        num_nodes = n;
    }

    let file_mounts = file_mounts(yaml.file_mounts.unwrap_or_default(), &envs)?;
    let resources = resource_spec(
        &yaml.resources.unwrap_or_default(),
        overrides,
        single,
        warnings,
    )?;
    let config = yaml
        .config
        .map(|v| serde_json::to_value(v).map_err(|e| SpecError::new("config", e.to_string())))
        .transpose()?;
    if let Some(config) = &config {
        super::config::check(config, warnings)?;
    }

    Ok(Task {
        name,
        workdir,
        num_nodes,
        envs,
        secrets,
        file_mounts,
        setup: yaml.setup,
        run: yaml.run,
        resources,
        config,
        limits,
    })
}

fn reject_unsupported(yaml: &TaskYaml) -> Result<()> {
    if yaml.service.is_some() {
        return Err(SpecError::new(
            "service",
            "SkyPilot services (`sky serve`) are not supported by Stratus, which runs managed batch \
             jobs; remove the `service` section to run the task as a job",
        ));
    }
    if yaml.pool.is_some() {
        return Err(SpecError::new(
            "pool",
            "job pools (`sky jobs pool`) are not supported by Stratus: every managed job gets its own cluster",
        ));
    }
    for (present, field) in [
        (yaml.volumes.is_some(), "volumes"),
        (yaml.volume_mounts.is_some(), "volume_mounts"),
    ] {
        if present {
            return Err(SpecError::new(
                field,
                "SkyPilot volumes (Kubernetes PVCs, network filesystems) are not supported by Stratus; \
                 mount a bucket with file_mounts (s3:// or gs://) instead",
            ));
        }
    }
    Ok(())
}

fn warn_ignored(yaml: &TaskYaml, warnings: &mut Vec<Warning>) {
    let ignored = [
        (
            yaml.inputs.is_some(),
            "inputs",
            "ignored: experimental SkyPilot field for egress estimates",
        ),
        (
            yaml.outputs.is_some(),
            "outputs",
            "ignored: experimental SkyPilot field for egress estimates",
        ),
        (
            yaml.event_callback.is_some(),
            "event_callback",
            "ignored: status changes are in `stratus jobs logs --controller`",
        ),
        (
            yaml.file_mounts_mapping.is_some(),
            "file_mounts_mapping",
            "ignored: internal SkyPilot field",
        ),
        (
            yaml.api_server_access.is_some(),
            "api_server_access",
            "ignored: Stratus gives jobs no API credentials",
        ),
        (
            yaml.metadata.is_some(),
            "_metadata",
            "ignored: internal SkyPilot field",
        ),
    ];
    for (present, path, message) in ignored {
        if present {
            warnings.push(Warning {
                path: path.into(),
                message: message.into(),
            });
        }
    }
}
