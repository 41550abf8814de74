//! Mirror → domain: SkyPilot's rules for task files, with errors that name the field and the fix.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::error::{Position, SpecError, Warning, join_path};
use super::resources::{
    Accelerator, Accelerators, DiskTier, ImageId, Infra, NetworkTier, PortRange, Preference,
    Quantity, RecoveryPolicy, RecoveryStrategy, ResourceSpec, Resources,
};
use super::yaml::{
    FileMountYaml, ImageIdYaml, JobRecoveryYaml, ResourcesYaml, StorageYaml, StringOrList,
    TaskYaml, WorkdirYaml,
};
use super::{
    BucketUrl, FileMount, Loaded, MountSource, Overrides, Pipeline, Secret, Storage, StorageMode,
    StorageSource, Store, Task, Workdir, check_name,
};
use crate::cloud::{self, CloudName};
use crate::suggest;

type Result<T> = std::result::Result<T, SpecError>;

/// GPU and accelerator names SkyPilot knows, in their canonical spelling. A name outside this
/// list is a typo; a name inside it that no catalog offers is a "no fit" for the optimizer.
pub const KNOWN_ACCELERATORS: &[&str] = &[
    "A10",
    "A10G",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "A40",
    "A6000",
    "B100",
    "B200",
    "GB200",
    "GH200",
    "H100",
    "H100-MEGA",
    "H200",
    "K80",
    "L4",
    "L40",
    "L40S",
    "M60",
    "P100",
    "P4",
    "P40",
    "RTX3090",
    "RTX4090",
    "RTX6000",
    "RTXPRO6000",
    "T4",
    "T4g",
    "V100",
    "V100-32GB",
    "MI300X",
    "MI325X",
    "Gaudi",
    "Inferentia",
    "Inferentia2",
    "Trainium",
    "Trainium2",
];

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

/// Turns a serde error into a `SpecError` with its path, position and a "did you mean".
fn yaml_error(error: &serde_path_to_error::Error<serde_yaml::Error>) -> SpecError {
    let inner = error.inner();
    let mut path = error.path().to_string();
    if path == "." {
        path.clear();
    }
    let raw = inner.to_string();
    // serde_yaml appends " at line L column C"; the position is reported on its own.
    let mut message = match raw.find(" at line ") {
        Some(cut) => raw[..cut].to_owned(),
        None => raw,
    };
    // serde_yaml also prefixes its own rendering of the path ("resources: unknown field ...").
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && !prefix.is_empty()
    {
        message = rest.to_string();
    }
    // serde names a key it could not read as text `?`: name the mapping instead.
    let key_not_text = path == "?" || path.ends_with(".?");
    if key_not_text {
        path.truncate(path.len().saturating_sub(2));
    }
    let message = if key_not_text {
        "a key here is a list or a mapping: keys must be plain text, e.g. `NAME: value`".to_owned()
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        unknown_field(rest, &mut path)
    } else if message.starts_with("data did not match any variant of untagged enum") {
        untagged_hint(&path)
    } else if let Some(fix) = type_fix(&path, &message) {
        format!("{message}; {fix}")
    } else {
        internal_names_out(&message)
    };
    SpecError {
        path,
        position: inner.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        }),
        message,
        document: 0,
        more: Vec::new(),
    }
}

/// A path as serde saw it, to take the bad value out and look for the next problem.
enum Step {
    Key(String),
    Index(usize),
}

/// The first problem of document `index` with the others serde finds once each bad key is
/// taken out (up to `MAX_MORE`): two typos are reported together, not one fix at a time.
fn with_more_errors(mut first: SpecError, text: &str, index: usize) -> SpecError {
    use serde::Deserialize as _;
    let Some(document) = serde_yaml::Deserializer::from_str(text).nth(index) else {
        return first;
    };
    let Ok(mut value) = serde_yaml::Value::deserialize(document) else {
        return first;
    };
    let mut seen = vec![first.path.clone()];
    for _ in 0..=super::error::MAX_MORE {
        // Back to text: a scalar read from text may be a string or a number as the field
        // wants, one read from a `Value` may not.
        let Ok(again) = serde_yaml::to_string(&value) else {
            break;
        };
        let document = serde_yaml::Deserializer::from_str(&again);
        let Err(e) = serde_path_to_error::deserialize::<_, Option<TaskYaml>>(document) else {
            break;
        };
        let mut steps: Vec<Step> = Vec::new();
        for segment in e.path() {
            match segment {
                serde_path_to_error::Segment::Map { key } => steps.push(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => steps.push(Step::Index(*index)),
                // An `Option` or enum layer adds no step in the YAML.
                _ => {}
            }
        }
        let raw = e.inner().to_string();
        // The path usually ends at the unknown key already; when not, the message names it.
        if let Some(rest) = raw.split("unknown field `").nth(1) {
            let field = rest.split('`').next().unwrap_or("");
            if !matches!(steps.last(), Some(Step::Key(k)) if k == field) {
                steps.push(Step::Key(field.to_owned()));
            }
        }
        let error = SpecError {
            position: None,
            ..yaml_error(&e).in_document(index)
        };
        if !seen.contains(&error.path) {
            seen.push(error.path.clone());
            if first.more.len() < super::error::MAX_MORE {
                first.more.push(error);
            }
        } else if seen.len() > 1 && seen.last() == Some(&error.path) {
            // Taking it out did not help: stop rather than report it again.
            break;
        }
        if steps.is_empty() || !take_out(&mut value, &steps) {
            break;
        }
    }
    first
}

/// Removes the key (or empties the list item) at `steps`; false when it is not there.
fn take_out(value: &mut serde_yaml::Value, steps: &[Step]) -> bool {
    use serde_yaml::Value;
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        let next = match (step, at) {
            (Step::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Step::Index(i), Value::Sequence(s)) => s.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
    }
    match (last, at) {
        (Step::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        // Items keep their places, so that later paths still name the right ones.
        (Step::Index(i), Value::Sequence(s)) => {
            s.get_mut(*i).map(|item| *item = Value::Null).is_some()
        }
        _ => false,
    }
}

/// serde names the Rust type it wanted ("expected struct ResourcesYaml"): users wrote YAML.
fn internal_names_out(message: &str) -> String {
    match message.find("expected struct ") {
        Some(at) => format!("{}expected a mapping", &message[..at]),
        None => message.to_owned(),
    }
}

/// How to write a mapping field that was given as something else (`envs: [A=1]`).
fn type_fix(path: &str, message: &str) -> Option<String> {
    if !message.starts_with("invalid type") || !message.ends_with("expected a map") {
        return None;
    }
    let field = path.rsplit('.').next().unwrap_or(path);
    let example = match field {
        "envs" | "secrets" => "{A: 1, B: two}",
        "file_mounts" => "{/remote/path: ./local/path}",
        "labels" => "{team: ml}",
        _ => "{key: value}",
    };
    Some(format!(
        "write {field} as a mapping, one `KEY: value` per line or `{field}: {example}`, not a list of KEY=value"
    ))
}

/// "unknown field `acclerators`, expected one of `a`, `b`" → a message with a suggestion.
fn unknown_field(rest: &str, path: &mut String) -> String {
    let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
    let expected: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|f| !f.starts_with('_'))
        .collect();
    if !(path == field || path.ends_with(&format!(".{field}"))) {
        *path = join_path(path, field);
    }
    let hint = suggest::did_you_mean(field, expected.iter().copied());
    if hint.is_empty() {
        format!(
            "unknown field '{field}'; valid fields here: {}",
            expected.join(", ")
        )
    } else {
        format!("unknown field '{field}'{hint}")
    }
}

fn untagged_hint(path: &str) -> String {
    let last = path.rsplit(['.', '[']).next().unwrap_or(path);
    match last {
        "workdir" => "expected a local path or {url: <git url>, ref: <branch, tag or commit>}".into(),
        "image_id" => "expected an image (ami-..., docker:<image>, a GCE image) or a mapping {region: image}".into(),
        "job_recovery" | "spot_recovery" => "expected a strategy name (EAGER_NEXT_REGION, FAILOVER or NO_RECOVERY) or a mapping with strategy, max_restarts_on_errors, recover_on_exit_codes, max_recoveries".into(),
        "source" => "expected a path or URL, or a list of them".into(),
        _ if path.starts_with("file_mounts") => "expected a local path, a bucket URL (s3://..., gs://...), or a storage mapping {name, source, store, persistent, mode}".into(),
        _ => "this value has the wrong shape".into(),
    }
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

/// `envs` or `secrets` with CLI values applied; a null value must come from the CLI.
fn values(
    field: &str,
    from_file: BTreeMap<String, Option<String>>,
    from_cli: &[(String, String)],
    flag: &str,
) -> Result<BTreeMap<String, String>> {
    let mut merged = from_file;
    for (key, value) in from_cli {
        check_env_key(key).map_err(|m| SpecError::new(flag, m))?;
        merged.insert(key.clone(), Some(value.clone()));
    }
    let mut out = BTreeMap::new();
    for (key, value) in merged {
        check_env_key(&key).map_err(|m| SpecError::new(join_path(field, &key), m))?;
        let Some(value) = value else {
            return Err(SpecError::new(
                join_path(field, &key),
                format!(
                    "{key} has no value: pass it with `{flag} {key}=<value>` (or `{flag} {key}` to copy it from your environment)"
                ),
            ));
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn check_env_key(key: &str) -> std::result::Result<(), String> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{key}' is not a valid variable name: use letters, digits and '_', not starting with a digit"
        ))
    }
}

/// `${VAR}` and `$VAR` from the task's envs, as SkyPilot substitutes them in `file_mounts`.
fn substitute(text: &str, envs: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match envs.get(name) {
            Some(value) if !name.is_empty() => {
                out.push_str(value);
                rest = &after[consumed..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn file_mounts(
    yaml: BTreeMap<String, Option<FileMountYaml>>,
    envs: &BTreeMap<String, String>,
) -> Result<Vec<FileMount>> {
    let mut mounts = Vec::new();
    for (raw_destination, value) in yaml {
        let path = join_path("file_mounts", &raw_destination);
        let destination = substitute(&raw_destination, envs);
        if destination.contains("://") {
            return Err(SpecError::new(
                path,
                "the destination must be a path on the node, not a URL; put the URL on the right-hand side",
            ));
        }
        if destination.len() > 1 && destination.ends_with('/') {
            return Err(SpecError::new(
                path,
                format!("the destination '{destination}' must not end with '/'"),
            ));
        }
        let source = match value {
            None => {
                return Err(SpecError::new(
                    path,
                    "no source: give a local path, a bucket URL, or a storage mapping",
                ));
            }
            Some(FileMountYaml::Path(source)) => {
                let source = substitute(&source, envs);
                match bucket_url(&source).map_err(|m| SpecError::new(&path, m))? {
                    Some(url) => MountSource::Bucket(url),
                    None => MountSource::Local(source),
                }
            }
            Some(FileMountYaml::Storage(storage)) => {
                MountSource::Storage(storage_spec(*storage, envs).map_err(|e| e.under(&path))?)
            }
        };
        mounts.push(FileMount {
            destination,
            source,
        });
    }
    Ok(mounts)
}

/// `Some` for a supported bucket URL, `None` for a local path, an error for other URLs.
fn bucket_url(text: &str) -> std::result::Result<Option<BucketUrl>, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        if text.starts_with("https://") || text.starts_with("http://") {
            return Err(unsupported_store(text, "HTTP(S) (e.g. Azure Blob)"));
        }
        return Ok(None);
    };
    let store = match scheme.to_ascii_lowercase().as_str() {
        "s3" => Store::S3,
        "gs" | "gcs" => Store::Gcs,
        "r2" => return Err(unsupported_store(text, "Cloudflare R2")),
        "cos" => return Err(unsupported_store(text, "IBM COS")),
        "oci" => return Err(unsupported_store(text, "OCI Object Storage")),
        "nebius" => return Err(unsupported_store(text, "Nebius Object Storage")),
        "https" | "http" => return Err(unsupported_store(text, "HTTP(S) (e.g. Azure Blob)")),
        other => {
            return Err(format!(
                "unknown bucket URL scheme '{other}://' in '{text}': use s3:// or gs://"
            ));
        }
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("'{text}' has no bucket name"));
    }
    Ok(Some(BucketUrl {
        store,
        bucket: bucket.to_owned(),
        key: key.trim_end_matches('/').to_owned(),
    }))
}

fn unsupported_store(url: &str, what: &str) -> String {
    format!("'{url}': {what} buckets are not supported by Stratus; use an s3:// or gs:// bucket")
}

fn storage_spec(yaml: StorageYaml, envs: &BTreeMap<String, String>) -> Result<Storage> {
    let name = yaml.name.map(|n| substitute(&n, envs));
    let raw_sources = match yaml.source {
        None => vec![],
        Some(StringOrList::One(s)) => vec![s],
        Some(StringOrList::Many(v)) => v,
    };
    let mut sources = Vec::new();
    for (i, raw) in raw_sources.into_iter().enumerate() {
        let text = substitute(&raw, envs);
        let source =
            match bucket_url(&text).map_err(|m| SpecError::new(format!("source[{i}]"), m))? {
                Some(url) => StorageSource::Bucket(url),
                None => StorageSource::Local(text),
            };
        sources.push(source);
    }
    if name.is_none() && sources.is_empty() {
        return Err(SpecError::new(
            "",
            "a storage mount needs a `name` (a bucket to create or use) or a `source`",
        ));
    }
    let store_text = yaml
        .store
        .map(|s| substitute(&s, envs).to_ascii_lowercase());
    let mode_text = yaml.mode.map(|m| substitute(&m, envs).to_ascii_uppercase());
    let store = match store_text.as_deref() {
        None => None,
        Some("s3") => Some(Store::S3),
        Some("gcs" | "gs") => Some(Store::Gcs),
        Some(other) => {
            let known = ["s3", "gcs", "azure", "r2", "ibm", "oci", "nebius", "volume"];
            let message = if known.contains(&other) {
                format!(
                    "'{other}' storage is not supported by Stratus; use `store: s3` or `store: gcs`"
                )
            } else {
                format!(
                    "unknown store '{other}'{}: use s3 or gcs",
                    suggest::did_you_mean(other, ["s3", "gcs"])
                )
            };
            return Err(SpecError::new("store", message));
        }
    };
    let mode = match mode_text.as_deref() {
        None | Some("MOUNT") => StorageMode::Mount,
        Some("COPY") => StorageMode::Copy,
        Some("MOUNT_CACHED") => StorageMode::MountCached,
        Some(other) => {
            return Err(SpecError::new(
                "mode",
                format!(
                    "unknown mode '{other}'{}: use MOUNT, COPY or MOUNT_CACHED",
                    suggest::did_you_mean(other, ["MOUNT", "COPY", "MOUNT_CACHED"])
                ),
            ));
        }
    };
    Ok(Storage {
        name,
        sources,
        store,
        persistent: yaml.persistent.unwrap_or(true),
        mode,
    })
}

/// Resource fields as given, before `any_of`/`ordered` entries are merged over the defaults.
#[derive(Debug, Clone, Default)]
struct Partial {
    infra: Option<Infra>,
    accelerators: Option<Accelerators>,
    cpus: Option<Quantity>,
    memory: Option<Quantity>,
    instance_type: Option<String>,
    use_spot: Option<bool>,
    disk_size_gb: Option<u32>,
    disk_tier: Option<DiskTier>,
    network_tier: Option<NetworkTier>,
    /// `Some(None)`: reset to no image (`image_id: null` in an alternative).
    #[allow(clippy::option_option)]
    image_id: Option<Option<ImageId>>,
    ports: Option<Vec<PortRange>>,
    labels: Option<BTreeMap<String, String>>,
}

impl Partial {
    fn over(&self, base: &Partial) -> Partial {
        Partial {
            infra: self.infra.clone().or_else(|| base.infra.clone()),
            accelerators: self
                .accelerators
                .clone()
                .or_else(|| base.accelerators.clone()),
            cpus: self.cpus.or(base.cpus),
            memory: self.memory.or(base.memory),
            instance_type: self
                .instance_type
                .clone()
                .or_else(|| base.instance_type.clone()),
            use_spot: self.use_spot.or(base.use_spot),
            disk_size_gb: self.disk_size_gb.or(base.disk_size_gb),
            disk_tier: self.disk_tier.or(base.disk_tier),
            network_tier: self.network_tier.or(base.network_tier),
            image_id: self.image_id.clone().or_else(|| base.image_id.clone()),
            ports: self.ports.clone().or_else(|| base.ports.clone()),
            labels: self.labels.clone().or_else(|| base.labels.clone()),
        }
    }

    fn finish(self) -> Resources {
        Resources {
            infra: self.infra.unwrap_or_default(),
            accelerators: self.accelerators,
            cpus: self.cpus,
            memory: self.memory,
            instance_type: self.instance_type,
            use_spot: self.use_spot.unwrap_or(false),
            disk_size_gb: self.disk_size_gb,
            disk_tier: self.disk_tier,
            network_tier: self.network_tier,
            image_id: self.image_id.flatten(),
            ports: self.ports.unwrap_or_default(),
            labels: self.labels.unwrap_or_default(),
        }
    }
}

/// Why an `infra` could not be used: unsupported clouds may be skipped among alternatives.
enum InfraError {
    Unsupported(SpecError),
    Invalid(SpecError),
}

impl From<InfraError> for SpecError {
    fn from(e: InfraError) -> Self {
        match e {
            InfraError::Unsupported(e) | InfraError::Invalid(e) => e,
        }
    }
}

fn resource_spec(
    yaml: &ResourcesYaml,
    overrides: &Overrides,
    single: bool,
    warnings: &mut Vec<Warning>,
) -> Result<ResourceSpec> {
    let mut recovery = recovery(yaml, warnings)?;
    if let Some(strategy) = &overrides.job_recovery {
        recovery.strategy = strategy_of(strategy, "--job-recovery".to_owned())?;
    }
    if yaml.any_of.is_some() && yaml.ordered.is_some() {
        return Err(SpecError::new(
            "resources.ordered",
            "use either any_of or ordered, not both",
        ));
    }
    let base = partial(yaml, "resources", warnings).map_err(SpecError::from)?;
    let (entries, preference, list_name) = match (&yaml.any_of, &yaml.ordered) {
        (Some(list), _) => (list.clone(), Preference::Cheapest, "any_of"),
        (None, Some(list)) => (list.clone(), Preference::Ordered, "ordered"),
        (None, None) => (vec![], Preference::Cheapest, ""),
    };

    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("resources.{list_name}[{i}]");
        if entry.any_of.is_some() || entry.ordered.is_some() {
            return Err(SpecError::new(path, "any_of and ordered cannot be nested"));
        }
        if entry.job_recovery.is_some() || entry.spot_recovery.is_some() {
            return Err(SpecError::new(
                format!("{path}.job_recovery"),
                "job_recovery applies to the whole task: move it up to `resources`",
            ));
        }
        match partial(entry, &path, warnings) {
            Ok(p) => candidates.push(p.over(&base)),
            Err(InfraError::Unsupported(e)) => skipped.push(e),
            Err(InfraError::Invalid(e)) => return Err(e),
        }
    }
    if entries.is_empty() {
        candidates.push(base);
    } else if candidates.is_empty() {
        // Every alternative names an unsupported cloud: report the first.
        return Err(skipped.remove(0));
    }
    for e in skipped {
        warnings.push(Warning {
            path: e.path,
            message: format!("{}; this alternative is skipped", e.message),
        });
    }

    if single {
        let forced = override_partial(overrides)?;
        candidates = candidates.iter().map(|c| forced.over(c)).collect();
    }
    Ok(ResourceSpec {
        candidates: candidates.into_iter().map(Partial::finish).collect(),
        preference,
        recovery,
    })
}

fn override_partial(o: &Overrides) -> Result<Partial> {
    let mut p = Partial::default();
    if let Some(infra) = &o.infra {
        p.infra = Some(parse_infra(infra).map_err(|m| SpecError::new("--infra", m.message()))?);
    }
    if let Some(gpus) = &o.gpus {
        p.accelerators = Some(
            accelerators(&Value::String(gpus.clone())).map_err(|m| SpecError::new("--gpus", m))?,
        );
    }
    if let Some(cpus) = &o.cpus {
        p.cpus = Some(quantity(cpus, false).map_err(|m| SpecError::new("--cpus", m))?);
    }
    if let Some(memory) = &o.memory {
        p.memory = Some(quantity(memory, true).map_err(|m| SpecError::new("--memory", m))?);
    }
    p.instance_type.clone_from(&o.instance_type);
    p.use_spot = o.use_spot;
    Ok(p)
}

// One block per field; splitting it would only move the field list elsewhere.
#[allow(clippy::too_many_lines)]
fn partial(
    y: &ResourcesYaml,
    path: &str,
    warnings: &mut Vec<Warning>,
) -> std::result::Result<Partial, InfraError> {
    let at = |field: &str| join_path(path, field);
    let invalid =
        |field: &str, message: String| InfraError::Invalid(SpecError::new(at(field), message));

    for (present, field, message) in [
        (
            y.autostop.is_some(),
            "autostop",
            "ignored: a managed job's cluster is torn down as soon as its task ends",
        ),
        (
            y.accelerator_args.is_some(),
            "accelerator_args",
            "ignored: only used for TPUs",
        ),
        (
            y.priority.is_some(),
            "priority",
            "ignored: Stratus starts every job as soon as resources are found",
        ),
        (
            y.ephemeral_storage.is_some(),
            "ephemeral_storage",
            "ignored: Kubernetes only",
        ),
        (
            y.docker_login_config.is_some(),
            "_docker_login_config",
            "ignored: internal SkyPilot field",
        ),
        (
            y.requires_fuse.is_some(),
            "_requires_fuse",
            "ignored: internal SkyPilot field",
        ),
    ] {
        if present {
            warnings.push(Warning {
                path: at(field),
                message: message.into(),
            });
        }
    }

    let infra = match (&y.infra, &y.cloud, &y.region, &y.zone) {
        (Some(_), Some(_), _, _) | (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) => {
            return Err(invalid(
                "infra",
                "use either infra or the legacy cloud/region/zone keys, not both".into(),
            ));
        }
        (Some(infra), None, None, None) => Some(parse_infra(infra).map_err(|e| e.at(at("infra")))?),
        (None, None, None, None) => None,
        (None, cloud, region, zone) => {
            let text = format!(
                "{}/{}/{}",
                cloud.as_deref().unwrap_or("*"),
                region.as_deref().unwrap_or("*"),
                zone.as_deref().unwrap_or("*")
            );
            let field = if cloud.is_some() {
                "cloud"
            } else if region.is_some() {
                "region"
            } else {
                "zone"
            };
            Some(parse_infra(&text).map_err(|e| e.at(at(field)))?)
        }
    };

    let accelerators = y
        .accelerators
        .as_ref()
        .map(accelerators)
        .transpose()
        .map_err(|m| invalid("accelerators", m))?;
    let cpus = y
        .cpus
        .as_deref()
        .map(|c| quantity(c, false))
        .transpose()
        .map_err(|m| invalid("cpus", m))?;
    let memory = y
        .memory
        .as_deref()
        .map(|m| quantity(m, true))
        .transpose()
        .map_err(|m| invalid("memory", m))?;
    let disk_size_gb = y
        .disk_size
        .as_deref()
        .map(disk_size)
        .transpose()
        .map_err(|m| invalid("disk_size", m))?;
    let disk_tier = y
        .disk_tier
        .as_deref()
        .map(|t| {
            choice(
                t,
                &[
                    ("low", DiskTier::Low),
                    ("medium", DiskTier::Medium),
                    ("high", DiskTier::High),
                    ("ultra", DiskTier::Ultra),
                    ("best", DiskTier::Best),
                ],
            )
        })
        .transpose()
        .map_err(|m| invalid("disk_tier", m))?;
    let network_tier = y
        .network_tier
        .as_deref()
        .map(|t| {
            choice(
                t,
                &[
                    ("standard", NetworkTier::Standard),
                    ("best", NetworkTier::Best),
                ],
            )
        })
        .transpose()
        .map_err(|m| invalid("network_tier", m))?;
    let image_id = y.image_id.as_ref().map(|i| {
        i.as_ref().map(|i| match i {
            ImageIdYaml::One(s) => ImageId::One(s.clone()),
            ImageIdYaml::PerRegion(m) => ImageId::PerRegion(m.clone()),
        })
    });
    let ports = y
        .ports
        .as_ref()
        .map(ports)
        .transpose()
        .map_err(|m| invalid("ports", m))?;
    if let Some(instance_type) = &y.instance_type
        && instance_type.trim().is_empty()
    {
        return Err(invalid(
            "instance_type",
            "is empty: name an instance type such as m6i.2xlarge".into(),
        ));
    }

    Ok(Partial {
        infra,
        accelerators,
        cpus,
        memory,
        instance_type: y.instance_type.clone(),
        use_spot: y.use_spot,
        disk_size_gb,
        disk_tier,
        network_tier,
        image_id,
        ports,
        labels: y.labels.clone(),
    })
}

/// A problem with an infra string; `at` gives it its YAML path.
enum InfraProblem {
    Unsupported(String),
    Invalid(String),
}

impl InfraProblem {
    fn message(self) -> String {
        match self {
            InfraProblem::Unsupported(m) | InfraProblem::Invalid(m) => m,
        }
    }

    fn at(self, path: String) -> InfraError {
        match self {
            InfraProblem::Unsupported(m) => InfraError::Unsupported(SpecError::new(path, m)),
            InfraProblem::Invalid(m) => InfraError::Invalid(SpecError::new(path, m)),
        }
    }
}

fn parse_infra(text: &str) -> std::result::Result<Infra, InfraProblem> {
    let parts: Vec<&str> = text.trim().split('/').collect();
    let cloud_part = parts[0].trim();
    if cloud_part.is_empty() {
        return Err(InfraProblem::Invalid(format!(
            "'{text}' is empty; write cloud[/region[/zone]], e.g. aws/us-east-1"
        )));
    }
    let cloud = if cloud_part == "*" {
        None
    } else {
        match cloud::classify(cloud_part) {
            CloudName::Supported(c) => Some(c),
            CloudName::Unsupported(name) => {
                return Err(InfraProblem::Unsupported(format!(
                    "cloud '{cloud_part}' ({name}) is not supported by Stratus; supported clouds: aws, gcp, local"
                )));
            }
            CloudName::Unknown => {
                return Err(InfraProblem::Invalid(format!(
                    "unknown cloud '{cloud_part}'{}; supported clouds: aws, gcp, local",
                    suggest::did_you_mean(cloud_part, cloud::known_names())
                )));
            }
        }
    };
    if parts.len() > 3 {
        return Err(InfraProblem::Invalid(format!(
            "'{text}' has too many parts; write cloud[/region[/zone]]"
        )));
    }
    let part = |i: usize| {
        parts
            .get(i)
            .map(|p| p.trim())
            .filter(|p| !p.is_empty() && *p != "*")
            .map(str::to_owned)
    };
    Ok(Infra {
        cloud,
        region: part(1),
        zone: part(2),
    })
}

/// Every accepted form: `V100`, `V100:2`, `{A100: 8}`, `{'A100:1', 'T4:1'}`, `[A100:1, T4:1]`.
fn accelerators(value: &Value) -> std::result::Result<Accelerators, String> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            if s.contains(',') {
                let options = s
                    .split(',')
                    .map(|p| accelerator(p.trim(), None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                return Ok(Accelerators::AnyOf(options));
            }
            accelerator(s, None).map(Accelerators::One)
        }
        Value::Mapping(map) => {
            let mut options = Vec::new();
            for (key, count) in map {
                let name =
                    scalar_text(key).ok_or("each key must be an accelerator name such as A100")?;
                options.push(accelerator(&name, Some(count))?);
            }
            match options.len() {
                0 => Err("is empty: name an accelerator such as A100:1".into()),
                1 => Ok(Accelerators::One(options.remove(0))),
                _ => Ok(Accelerators::AnyOf(options)),
            }
        }
        Value::Sequence(items) => {
            let mut options = Vec::new();
            for item in items {
                match item {
                    Value::Mapping(_) => match accelerators(item)? {
                        Accelerators::One(a) => options.push(a),
                        _ => return Err("each list item names one accelerator, e.g. A100:1".into()),
                    },
                    other => {
                        let name = scalar_text(other)
                            .ok_or("each list item must be NAME or NAME:COUNT")?;
                        options.push(accelerator(&name, None)?);
                    }
                }
            }
            match options.len() {
                0 => Err("is empty: name an accelerator such as A100:1".into()),
                1 => Ok(Accelerators::One(options.remove(0))),
                _ => Ok(Accelerators::Ordered(options)),
            }
        }
        other => Err(format!(
            "{} is not an accelerator: write NAME or NAME:COUNT, e.g. V100:2",
            show(other)
        )),
    }
}

fn accelerator(text: &str, count: Option<&Value>) -> std::result::Result<Accelerator, String> {
    let (name, count_text) = match text.split_once(':') {
        Some((n, c)) => (n.trim(), Some(c.trim().to_owned())),
        None => (text.trim(), None),
    };
    let count_text = match (count_text, count) {
        (Some(_), Some(v)) if !v.is_null() => {
            return Err(format!("'{text}' gives its count twice"));
        }
        (Some(c), _) => c,
        (None, Some(v)) if !v.is_null() => {
            scalar_text(v).ok_or_else(|| format!("the count of {name} must be a number"))?
        }
        (None, _) => "1".to_owned(),
    };
    let count: f64 = count_text
        .parse()
        .ok()
        .filter(|c: &f64| *c > 0.0 && c.is_finite())
        .ok_or_else(|| format!("'{count_text}' is not a valid count for {name}: use a positive number, e.g. {name}:1"))?;
    if name.to_ascii_lowercase().starts_with("tpu-") {
        return Err(format!(
            "TPUs ('{name}') are not supported by Stratus, which launches Compute Engine VMs, not Cloud TPU VMs; use a GPU such as A100 or H100"
        ));
    }
    let canonical = KNOWN_ACCELERATORS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            format!(
                "unknown accelerator '{name}'{}; known: {}",
                suggest::did_you_mean(name, KNOWN_ACCELERATORS.iter().copied()),
                "T4, L4, A10G, L40S, V100, A100, A100-80GB, H100, H200, ..."
            )
        })?;
    Ok(Accelerator {
        name: (*canonical).to_owned(),
        count,
    })
}

/// `8`, `8+`; memory also `32GB`, `1TB+`, `4x` (times vCPUs).
fn quantity(text: &str, memory: bool) -> std::result::Result<Quantity, String> {
    let original = text;
    let mut text = text.trim();
    let at_least = text.ends_with('+');
    text = text.trim_end_matches('+').trim();
    let mut per_cpu = false;
    let mut scale = 1.0;
    if memory {
        if let Some(t) = text.strip_suffix(['x', 'X']) {
            per_cpu = true;
            text = t;
        } else {
            let lower = text.to_ascii_lowercase();
            for (suffix, factor) in [
                ("tib", 1024.0),
                ("tb", 1024.0),
                ("gib", 1.0),
                ("gb", 1.0),
                ("mib", 1.0 / 1024.0),
                ("mb", 1.0 / 1024.0),
            ] {
                if lower.ends_with(suffix) {
                    text = text[..text.len() - suffix.len()].trim();
                    scale = factor;
                    break;
                }
            }
        }
    }
    let value: f64 = text
        .parse()
        .ok()
        .filter(|v: &f64| *v > 0.0 && v.is_finite())
        .ok_or_else(|| {
            if memory {
                format!("'{original}' is not a memory size: write GB as N (exactly) or N+ (at least), e.g. 32+")
            } else {
                format!("'{original}' is not a vCPU count: write N (exactly) or N+ (at least), e.g. 8+")
            }
        })?;
    Ok(Quantity {
        value: value * scale,
        at_least,
        per_cpu,
    })
}

fn disk_size(text: &str) -> std::result::Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, factor) = [("tb", 1024.0), ("t", 1024.0), ("gb", 1.0), ("g", 1.0)]
        .iter()
        .find_map(|(suffix, factor)| {
            lower
                .strip_suffix(suffix)
                .map(|n| (n.trim().to_owned(), *factor))
        })
        .unwrap_or((lower.clone(), 1.0));
    number
        .parse::<f64>()
        .ok()
        .filter(|v| *v >= 1.0)
        .map(|v| (v * factor) as u32)
        .ok_or_else(|| format!("'{text}' is not a disk size: write GB as a whole number, e.g. 256"))
}

fn choice<T: Copy>(text: &str, options: &[(&str, T)]) -> std::result::Result<T, String> {
    let lower = text.to_ascii_lowercase();
    options
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown value '{text}'{}: use one of {}",
                suggest::did_you_mean(text, names.iter().copied()),
                names.join(", ")
            )
        })
}

fn ports(value: &Value) -> std::result::Result<Vec<PortRange>, String> {
    let items: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|item| {
            let text =
                scalar_text(item).ok_or("each port must be a number or a range like 8080-8090")?;
            let parse = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        format!("'{text}' is not a port: use 1-65535 or a range like 8080-8090")
                    })
            };
            let (first, last) = if let Some((a, b)) = text.split_once('-') {
                (parse(a)?, parse(b)?)
            } else {
                let p = parse(&text)?;
                (p, p)
            };
            if first > last {
                return Err(format!(
                    "'{text}': the range's first port is above its last"
                ));
            }
            Ok(PortRange { first, last })
        })
        .collect()
}

fn strategy_of(s: &str, path: String) -> Result<RecoveryStrategy> {
    match s.to_ascii_uppercase().replace('-', "_").as_str() {
        "EAGER_NEXT_REGION" => Ok(RecoveryStrategy::EagerNextRegion),
        "FAILOVER" => Ok(RecoveryStrategy::Failover),
        "NO_RECOVERY" => Ok(RecoveryStrategy::NoRecovery),
        _ => Err(SpecError::new(
            path,
            format!(
                "unknown recovery strategy '{s}'{}: use EAGER_NEXT_REGION, FAILOVER or NO_RECOVERY",
                suggest::did_you_mean(s, ["EAGER_NEXT_REGION", "FAILOVER", "NO_RECOVERY"])
            ),
        )),
    }
}

fn recovery(yaml: &ResourcesYaml, warnings: &mut Vec<Warning>) -> Result<RecoveryPolicy> {
    let (value, field) = match (&yaml.job_recovery, &yaml.spot_recovery) {
        (Some(_), Some(_)) => {
            return Err(SpecError::new(
                "resources.spot_recovery",
                "spot_recovery is the old name of job_recovery: keep only job_recovery",
            ));
        }
        (Some(v), None) => (v, "resources.job_recovery"),
        (None, Some(v)) => {
            warnings.push(Warning {
                path: "resources.spot_recovery".into(),
                message: "deprecated: use job_recovery".into(),
            });
            (v, "resources.spot_recovery")
        }
        (None, None) => return Ok(RecoveryPolicy::default()),
    };
    match value {
        JobRecoveryYaml::Strategy(s) => Ok(RecoveryPolicy {
            strategy: strategy_of(s, field.to_owned())?,
            ..RecoveryPolicy::default()
        }),
        JobRecoveryYaml::Full(full) => {
            let strategy = full
                .strategy
                .as_deref()
                .map(|s| strategy_of(s, format!("{field}.strategy")))
                .transpose()?
                .unwrap_or_default();
            let max_restarts_on_errors = match &full.max_restarts_on_errors {
                None => 0,
                Some(v) => non_negative_int(v).ok_or_else(|| {
                    SpecError::new(
                        format!("{field}.max_restarts_on_errors"),
                        format!("{} is not a whole number of restarts (0 or more)", show(v)),
                    )
                })?,
            };
            let recover_on_exit_codes = match &full.recover_on_exit_codes {
                None => vec![],
                Some(v) => exit_codes(v)
                    .map_err(|m| SpecError::new(format!("{field}.recover_on_exit_codes"), m))?,
            };
            let max_recoveries = full
                .max_recoveries
                .as_ref()
                .map(|v| {
                    non_negative_int(v).ok_or_else(|| {
                        SpecError::new(
                            format!("{field}.max_recoveries"),
                            format!(
                                "{} is not a whole number of recoveries (0 or more)",
                                show(v)
                            ),
                        )
                    })
                })
                .transpose()?;
            Ok(RecoveryPolicy {
                strategy,
                max_restarts_on_errors,
                recover_on_exit_codes,
                max_recoveries,
            })
        }
    }
}

fn exit_codes(value: &Value) -> std::result::Result<Vec<i32>, String> {
    let items: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|v| {
            v.as_i64()
                .filter(|c| (0..=255).contains(c))
                .map(|c| c as i32)
                .ok_or_else(|| {
                    format!(
                        "{} is not an exit code: use whole numbers from 0 to 255",
                        show(v)
                    )
                })
        })
        .collect()
}

fn positive_int(value: &Value) -> Option<u32> {
    non_negative_int(value).filter(|n| *n > 0)
}

fn non_negative_int(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        other => format!("'{}'", scalar_text(other).unwrap_or_default()),
    }
}
