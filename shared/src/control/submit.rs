//! Submit: validate the task, plan every task, store the job, and start it.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::uploads::{self, Uploads};
use super::{Context, HandlerError, SubmitError};
use crate::clock::Timestamp;
use crate::job::array::{ArrayMember, ArrayRequest};
use crate::job::{JobEvent, JobRecord};
use crate::optimizer;
use crate::spec::{self, MountSource, Overrides, StorageSource};

/// What a client sends to launch a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The task file's text (one or more YAML documents).
    #[serde(default)]
    pub yaml: Option<String>,
    /// Or a command to run as a one-task job.
    #[serde(default)]
    pub command: Option<String>,
    /// Flags that override the file, with env and secret values already resolved.
    #[serde(default)]
    pub overrides: Overrides,
    /// Local paths (as written in the task) the client uploaded, and their blob keys.
    #[serde(default)]
    pub uploads: BTreeMap<String, String>,
    /// Jobs (the caller's own) that must end first, as each says (`--depends-on`). Left out
    /// when empty, so that a server older than the field still takes other launches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<crate::job::dependencies::Dependency>,
    /// Many jobs from this one task (`--num-jobs`, `--max-parallel`); left out for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArrayRequest>,
}

/// Validates and plans `request`, stores the job (PENDING) and emits `Submitted`, so the launch
/// starts at once rather than at the next poll. For an array, stores every member (consecutive
/// IDs) and returns the first.
#[tracing::instrument(name = "submit", skip_all, fields(owner = owner))]
pub async fn submit(
    ctx: &Context,
    owner: &str,
    request: SubmitRequest,
) -> Result<JobRecord, SubmitError> {
    // Parsing is CPU work of its own (bounded by `spec::limits`): off the async threads, so
    // a large file never holds up other requests.
    let (yaml, command, overrides) = (
        request.yaml.clone(),
        request.command.clone(),
        request.overrides.clone(),
    );
    let loaded = tokio::task::spawn_blocking(move || match (yaml, command) {
        (Some(yaml), None) => spec::load(&yaml, &overrides).map_err(SubmitError::from),
        (None, Some(command)) => {
            spec::load_command(&command, &overrides).map_err(SubmitError::from)
        }
        _ => Err(SubmitError::BadRequest(
            "give exactly one of `yaml` (a task file's text) or `command`".into(),
        )),
    })
    .await
    .map_err(|e| SubmitError::BadRequest(format!("the task file could not be read: {e}")))??;
    let pipeline = loaded.pipeline;
    let session =
        uploads::check_request(owner, &request.uploads).map_err(SubmitError::BadRequest)?;
    // Archives in a user's bucket: the bucket is checked again here, whoever made the keys.
    if let Some((_, Some(bucket))) = &session {
        super::buckets::check_intermediate(ctx, bucket, owner).await?;
    }
    let session = session.map(|(session, _)| session);
    let mut candidates = Vec::new();
    for task in &pipeline.tasks {
        check_uploads(task, &request.uploads)?;
        super::buckets::check(ctx, task, owner).await?;
        let plan = optimizer::plan_task(&ctx.catalog, task, &ctx.settings.enabled_clouds);
        if plan.ranked.is_empty() {
            return Err(SubmitError::NoResources {
                task: task.name.clone(),
                explanation: plan.explain_no_fit(),
            });
        }
        check_ports(task, &plan.ranked)?;
        candidates.push(plan.ranked);
    }

    let (size, max_parallel) = match request.array {
        Some(array) => {
            super::buckets::refuse_ephemeral_in_array(&pipeline)?;
            array.checked().map_err(SubmitError::BadRequest)?
        }
        None => (1, 1),
    };
    check_dependencies(ctx, owner, &request.depends_on).await?;
    super::budget::check_cap(&pipeline, &candidates)?;
    super::budget::check_monthly(ctx, owner).await?;

    let id = ctx.store.next_job_ids(size).await?;
    let now = ctx.clock.now();
    super::buckets::create(ctx, id, owner, &pipeline).await?;
    if let Some(session) = session {
        // The session's archives become this job's alone: its cleanup deletes them.
        let name = format!("{}/{session}", crate::blob::keys::owner_space(owner));
        match ctx.store.claim(&name, id).await {
            Err(crate::store::StoreError::Conflict { .. }) => {
                return Err(SubmitError::BadRequest(format!(
                    "uploads: session '{session}' belongs to another job; upload again under a new session"
                )));
            }
            other => other?,
        }
    }
    let members: Vec<Option<ArrayMember>> = if request.array.is_some() {
        ArrayMember::all(id, size, max_parallel).map(Some).collect()
    } else {
        vec![None]
    };
    let jobs: Vec<JobRecord> = members
        .into_iter()
        .map(|member| {
            let job_id = member.map_or(id, |m| m.job_id());
            let mut job = JobRecord::new(job_id, owner, pipeline.clone(), candidates.clone(), now);
            job.depends_on.clone_from(&request.depends_on);
            job.array = member;
            job
        })
        .collect();
    let mut created = store_all(ctx, &jobs, Uploads(request.uploads)).await?;
    info!(
        job_id = id,
        name = created[0].name(),
        owner,
        tasks = created[0].tasks.len(),
        jobs = created.len(),
        "job submitted"
    );
    // An array's members are started 16 at a time: each is a log line and an announcement (a
    // table write and a `PutEvents` on AWS), which one after another would take a 1,000-job
    // request past API Gateway's 29 s.
    let starts: Vec<_> = created.iter().map(|job| start(ctx, job, now)).collect();
    futures_util::stream::iter(starts)
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
    Ok(created.swap_remove(0))
}

/// How many members' writes and announcements run at once.
const PARALLEL: usize = 16;

/// Records the uploads of every job (before it exists, so a node never asks for uploads that
/// are not recorded; none recorded reads as none), then stores the jobs. If an array's store
/// fails part-way, the members that were stored are cancelled before the error is answered,
/// so a retried request leaves no second array running.
async fn store_all(
    ctx: &Context,
    jobs: &[JobRecord],
    uploads: Uploads,
) -> Result<Vec<JobRecord>, SubmitError> {
    if !uploads.0.is_empty() {
        let writes: Vec<_> = jobs
            .iter()
            .map(|job| uploads::write(ctx.blobs.as_ref(), job.id, &uploads))
            .collect();
        let written: Vec<Result<(), HandlerError>> = futures_util::stream::iter(writes)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        written.into_iter().collect::<Result<Vec<()>, _>>()?;
    }
    match ctx.store.create_jobs(jobs).await {
        Ok(created) => Ok(created),
        Err(e) if jobs.len() > 1 => {
            for job in jobs {
                let stored = ctx.store.get_job(job.id).await.is_ok();
                if stored
                    && let Err(cancel) =
                        super::advance(ctx, job.id, JobEvent::CancelRequested).await
                {
                    warn!(job_id = job.id, error = %cancel, "could not cancel a member of an array whose submit failed");
                }
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Logs what a new job waits for, announces it, and starts it. The job exists: nothing here
/// may fail the request (a retry would make a second job); the sweep starts any job left
/// PENDING without a launch.
async fn start(ctx: &Context, job: &JobRecord, now: Timestamp) {
    let id = job.id;
    let mut waits: Vec<String> = job.depends_on.iter().map(ToString::to_string).collect();
    let before = job.array.and_then(|a| a.waits_for());
    if let Some(before) = before {
        waits.push(format!("{before} (the previous in its array's lane)"));
    }
    if !waits.is_empty() {
        let line = crate::job::ControllerEvent {
            at: now,
            task: 0,
            status: job.status(),
            message: format!("Waiting for job(s) {} before launching.", waits.join(", ")),
        };
        if let Err(e) = ctx.store.append_events(id, &[line]).await {
            warn!(job_id = id, error = %e, "could not log what the job waits for");
        }
    }
    if let Err(e) = ctx
        .bus
        .status_changed(&crate::job::transitions::created(job, now))
        .await
    {
        warn!(job_id = id, error = %e, "could not announce the new job");
    }
    // An array's member that waits for another is woken by that one's cleanup: asking now
    // would only read the other job to hear "not yet".
    if before.is_some() {
        return;
    }
    if let Err(e) = ctx.bus.publish(id, JobEvent::Submitted).await {
        warn!(job_id = id, error = %e, "could not publish Submitted; the sweep starts the job");
    }
}

/// Each job depended on must be the caller's own (one that does not exist and another user's
/// get the same answer, so nothing is learnt of others' jobs); at most
/// `dependencies::MAX_DEPENDENCIES`.
async fn check_dependencies(
    ctx: &Context,
    owner: &str,
    deps: &[crate::job::dependencies::Dependency],
) -> Result<(), SubmitError> {
    let max = crate::job::dependencies::MAX_DEPENDENCIES;
    if deps.len() > max {
        return Err(SubmitError::BadRequest(format!(
            "--depends-on: {} jobs; at most {max}",
            deps.len()
        )));
    }
    for dep in deps {
        let mine = match ctx.store.get_job(dep.job).await {
            Ok(job) => job.owner == owner,
            Err(crate::store::StoreError::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if !mine {
            return Err(SubmitError::BadRequest(format!(
                "--depends-on: job {} is not one of your jobs (see `stratus jobs queue`)",
                dep.job
            )));
        }
    }
    Ok(())
}

/// `ports` would need a security group or firewall rule per cluster, which Stratus does not
/// make yet: refused where a candidate is a cloud (its nodes accept no inbound traffic but
/// their own cluster's), rather than silently ignored. The local cloud's nodes listen on this
/// machine, so ports need nothing there.
fn check_ports(task: &spec::Task, ranked: &[optimizer::Candidate]) -> Result<(), SubmitError> {
    let ports: Vec<String> = task
        .resources
        .candidates
        .iter()
        .flat_map(|r| r.ports.iter().map(ToString::to_string))
        .collect();
    if ports.is_empty() {
        return Ok(());
    }
    if let Some(cloud) = ranked
        .iter()
        .map(|c| c.cloud)
        .find(|c| *c != crate::cloud::Cloud::Local)
    {
        return Err(SubmitError::BadRequest(format!(
            "resources.ports: opening ports ({}) is not supported on {} yet: a Stratus \
             cluster takes no inbound traffic but its own nodes'; remove `ports` (the job can \
             still reach out), or run on `infra: local`",
            ports.join(", "),
            cloud.display_name()
        )));
    }
    Ok(())
}

/// Every local path a task syncs to its nodes must have been uploaded by the client.
fn check_uploads(task: &spec::Task, uploads: &BTreeMap<String, String>) -> Result<(), SubmitError> {
    for mount in &task.file_mounts {
        if let MountSource::Storage(storage) = &mount.source
            && storage
                .sources
                .iter()
                .any(|s| matches!(s, StorageSource::Local(_)))
        {
            return Err(SubmitError::BadRequest(format!(
                "file_mounts.{}: uploading local files into a bucket is not supported yet; \
                 mount the folder directly (`{}: <local path>`) or use an existing bucket",
                mount.destination, mount.destination
            )));
        }
    }
    for (field, path) in task.local_paths() {
        if !uploads.contains_key(path) {
            return Err(SubmitError::BadRequest(format!(
                "{field}: '{path}' was not uploaded with the job (the CLI uploads local paths before submitting)"
            )));
        }
    }
    Ok(())
}
