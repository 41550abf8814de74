//! The event-driven functions' handlers: plain async functions of a context and a JSON event,
//! which the binaries run under `lambda_runtime` and tests call with fixtures.

use serde_json::{Value, json};
use shared::bus::eventbridge;
use shared::cloud::Cloud;
use shared::control::webhooks::{self, Webhook, WebhookSender};
use shared::control::{self, Context};
use shared::job::transitions::StatusEvent;
use tracing::info;

/// The detail-type of the EC2 Spot interruption warning (two minutes before the reclaim).
pub const SPOT_WARNING: &str = "EC2 Spot Instance Interruption Warning";

/// `recover`: a `stratus.job-event` from the bus → advance that job.
pub async fn on_job_event(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    let envelope = eventbridge::envelope_from_event(&event)?;
    control::advance(ctx, envelope.job_id, envelope.event).await?;
    Ok(json!({ "job_id": envelope.job_id }))
}

/// `poll`: the schedule, an EC2 state change, or a Spot interruption warning.
///
/// A warning recovers the machine's job at once (the replacement is requested while the old
/// machine still runs); anything else runs the sweep, which re-reads every active job and the
/// regions they use (an EC2 state change only makes it run now rather than at the next tick).
pub async fn on_poll(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    if event["source"] == "aws.ec2" && event["detail-type"] == SPOT_WARNING {
        let region = event["region"].as_str().unwrap_or_default();
        let instance = event["detail"]["instance-id"].as_str().unwrap_or_default();
        info!(region, instance, "Spot interruption warning");
        let job = control::preemption_notice(ctx, Cloud::Aws, region, instance).await?;
        return Ok(json!({ "warning": instance, "job_id": job }));
    }
    if event["source"] == "aws.ec2" {
        info!(
            detail_type = %event["detail-type"],
            instance = %event["detail"]["instance-id"],
            state = %event["detail"]["state"],
            "EC2 event"
        );
    }
    let stats = control::poll(ctx).await?;
    Ok(json!({
        "active_jobs": stats.active_jobs,
        "describe_calls": stats.describe_calls,
        "events": stats.events,
        "orphans_terminated": stats.orphans_terminated,
        "cleanups": stats.cleanups,
    }))
}

/// `notify`: a `stratus.job-status` event → the stack's webhook, if it wants that status
/// (retried with backoff; a delivery given up on is a line in the job's controller log). A
/// failed delivery is not an error: EventBridge's retry would only post the others again.
pub async fn on_job_status(
    ctx: &Context,
    event: Value,
    hook: Option<&Webhook>,
    sender: &dyn WebhookSender,
) -> anyhow::Result<Value> {
    let status: StatusEvent = serde_json::from_value(event["detail"].clone())
        .map_err(|e| anyhow::anyhow!("not a job status event: {e}"))?;
    let Some(hook) = hook.filter(|h| h.wants(&status)) else {
        return Ok(json!({ "job_id": status.job_id, "delivered": false }));
    };
    let delivered = webhooks::deliver(ctx, hook, &status, sender).await;
    Ok(json!({ "job_id": status.job_id, "delivered": delivered }))
}

/// `cleanup`: a `stratus.job-ended` event → the job's finalizer.
pub async fn on_job_ended(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    let job_id = eventbridge::ended_job_from_event(&event)?;
    let cleaned = control::cleanup(ctx, job_id).await?;
    Ok(json!({
        "job_id": job_id,
        "clusters_terminated": cleaned.clusters_terminated,
        "files_deleted": cleaned.files_deleted,
    }))
}
