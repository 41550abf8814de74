//! The event bus in AWS (feature `aws`): EventBridge for events now, EventBridge Scheduler for
//! events at a time.
//!
//! # Event format
//! Every event Stratus puts on its bus has source [`EVENT_SOURCE`] (`stratus`) and, as its detail,
//! JSON the Lambda functions read back:
//!
//! | detail-type | detail | read back with |
//! |---|---|---|
//! | [`JOB_EVENT_DETAIL_TYPE`] (`stratus.job-event`) | an [`Envelope`]: `{"job_id":7,"event":{"type":"cluster_launched","cluster":"..."}}` | [`envelope_from_event`] |
//! | [`JOB_ENDED_DETAIL_TYPE`] (`stratus.job-ended`) | `{"job_id":7}` | [`ended_job_from_event`] |
//! | [`JOB_STATUS_DETAIL_TYPE`] (`stratus.job-status`) | a `StatusEvent` (README, "Job events") | users' own rules |
//!
//! A scheduled event is a one-time schedule, `stratus-job-<id>-<at, ms>` (a backoff) or
//! `stratus-job-<id>-limit-<at, ms>` (a time or cost limit) in the configured group, whose target is the bus itself (`EventBridgeParameters` with the same source and
//! detail-type, `Input` = the envelope JSON), so it arrives exactly like a published one.
//!
//! # Guarantees
//! - Delivery is at least once (EventBridge's and the Scheduler's own guarantee): handlers are
//!   idempotent, and the state machine ignores stale events.
//! - A scheduled event is never delivered early: the Scheduler fires within the minute it is
//!   given (`1:00` fires between `1:00:00` and `1:00:59`), so `at` is rounded *up* to a whole
//!   minute. It may thus arrive up to about two minutes late; backoffs are 36 s to 7 min.
//! - An event whose time has come (`at <= now`) is published at once rather than scheduled.
//! - Scheduling is idempotent per (job, `at`): the schedule name is fixed by them, and a name
//!   that exists already (`ConflictException`) means the event is scheduled.
//! - Schedules delete themselves after firing (`ActionAfterCompletion: DELETE`), and the
//!   job's cleanup deletes the ones that never fired (`cancel_schedules`: `ListSchedules` by
//!   the `stratus-job-<id>-` prefix, then `DeleteSchedule` each).
//!
//! # Caveats
//! - Two events of one kind for one job at the same millisecond share a schedule name: the
//!   second is dropped. Both kinds (`BackoffElapsed`, `LimitDue`) carry no data, so they are
//!   the same event.
//! - `PutEvents` entries that fail (`FailedEntryCount > 0`) with a transient code
//!   (`ThrottlingException`, `InternalFailure`) are retried twice; other codes fail at once.
//!   The SDK retries whole requests that fail.
//! - The schedule group must exist (the deployment template creates it; `default` always
//!   does), and the Scheduler's role must allow `events:PutEvents` on the bus.
//! - A lost scheduled event costs time, not the job: the poll sweep re-sends a due backoff.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::error::{DisplayErrorContext, SdkError};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, EventBridgeParameters, FlexibleTimeWindow, FlexibleTimeWindowMode,
    Target,
};
use serde::{Deserialize, Serialize};

use super::{BusError, Envelope, EventBus};
use crate::clock::Timestamp;
use crate::job::transitions::StatusEvent;
use crate::job::{JobEvent, JobId};

/// The `source` of every event Stratus puts on its bus.
pub const EVENT_SOURCE: &str = "stratus";
/// The `detail-type` of a job event; its detail is an [`Envelope`].
pub const JOB_EVENT_DETAIL_TYPE: &str = "stratus.job-event";
/// The `detail-type` of "this job ended" (its cleanup should run); its detail is
/// `{"job_id": <id>}`.
pub const JOB_ENDED_DETAIL_TYPE: &str = "stratus.job-ended";

/// The detail-type of users' job events (`job::transitions::StatusEvent` as the detail):
/// Stratus's functions never read it; users' own rules may.
pub const JOB_STATUS_DETAIL_TYPE: &str = "stratus.job-status";

/// The Scheduler's precision: a schedule fires within the minute it names.
const MINUTE_MS: i64 = 60_000;
/// `PutEvents` attempts for entries that failed with a transient code.
const PUT_ATTEMPTS: u32 = 3;

/// Where the bus and the Scheduler's schedules live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBridgeConfig {
    /// The Stratus event bus (name or ARN), the `EventBusName` of `PutEvents`.
    pub bus_name: String,
    /// The bus's ARN: the target of scheduled events.
    pub bus_arn: String,
    /// The Scheduler's schedule group (`default` unless set).
    pub schedule_group: String,
    /// The role the Scheduler assumes to put scheduled events on the bus.
    pub scheduler_role_arn: String,
}

impl EventBridgeConfig {
    /// A config using the `default` schedule group.
    pub fn new(
        bus_name: impl Into<String>,
        bus_arn: impl Into<String>,
        scheduler_role_arn: impl Into<String>,
    ) -> Self {
        Self {
            bus_name: bus_name.into(),
            bus_arn: bus_arn.into(),
            schedule_group: "default".to_owned(),
            scheduler_role_arn: scheduler_role_arn.into(),
        }
    }

    pub fn with_schedule_group(mut self, group: impl Into<String>) -> Self {
        self.schedule_group = group.into();
        self
    }
}

/// The [`EventBus`] on EventBridge and EventBridge Scheduler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    events: aws_sdk_eventbridge::Client,
    scheduler: aws_sdk_scheduler::Client,
    config: EventBridgeConfig,
}

/// The detail of a [`JOB_ENDED_DETAIL_TYPE`] event.
#[derive(Debug, Serialize, Deserialize)]
struct JobEnded {
    job_id: JobId,
}

impl EventBridgeBus {
    pub fn new(
        events: aws_sdk_eventbridge::Client,
        scheduler: aws_sdk_scheduler::Client,
        config: EventBridgeConfig,
    ) -> Self {
        Self {
            events,
            scheduler,
            config,
        }
    }

    /// A bus whose clients are built from `sdk` (credentials, region, endpoint URL).
    pub fn from_sdk_config(sdk: &SdkConfig, config: EventBridgeConfig) -> Self {
        Self::new(
            aws_sdk_eventbridge::Client::new(sdk),
            aws_sdk_scheduler::Client::new(sdk),
            config,
        )
    }

    pub fn config(&self) -> &EventBridgeConfig {
        &self.config
    }

    pub fn events_client(&self) -> &aws_sdk_eventbridge::Client {
        &self.events
    }

    pub fn scheduler_client(&self) -> &aws_sdk_scheduler::Client {
        &self.scheduler
    }

    /// The name of the schedule that delivers a job's event at `at`: fixed by the two, so
    /// scheduling again is a no-op (at most 46 of the 64 characters allowed).
    pub fn schedule_name(job_id: JobId, at: Timestamp) -> String {
        format!("stratus-job-{job_id}-{}", at.as_millis())
    }

    /// The name of the schedule that delivers `event` at `at`: [`Self::schedule_name`], with
    /// `limit-` before the time for a `LimitDue` (at most 52 characters).
    pub fn schedule_name_of(job_id: JobId, event: &JobEvent, at: Timestamp) -> String {
        match event {
            JobEvent::LimitDue => format!("stratus-job-{job_id}-limit-{}", at.as_millis()),
            _ => Self::schedule_name(job_id, at),
        }
    }

    /// The one-time expression for `at`, in UTC, rounded up to the whole minute so that the
    /// Scheduler (which fires anywhere in the minute it names) is never early.
    pub fn schedule_expression(at: Timestamp) -> String {
        let minute = Timestamp::from_millis(
            at.as_millis()
                .div_euclid(MINUTE_MS)
                .saturating_add(i64::from(at.as_millis().rem_euclid(MINUTE_MS) > 0))
                .saturating_mul(MINUTE_MS),
        );
        let c = minute.civil();
        format!(
            "at({:04}-{:02}-{:02}T{:02}:{:02}:{:02})",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }

    /// Puts one event on the bus, retrying an entry that failed with a transient code.
    async fn put(&self, job_id: JobId, detail_type: &str, detail: String) -> Result<(), BusError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.config.bus_name)
            .source(EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        let mut attempt = 1;
        loop {
            let output = self
                .events
                .put_events()
                .entries(entry.clone())
                .send()
                .await
                .map_err(|e| {
                    sdk_failure(
                        &format!(
                            "PutEvents ({detail_type}) for job {job_id} to bus {}",
                            self.config.bus_name
                        ),
                        &e,
                    )
                })?;
            if output.failed_entry_count() == 0 {
                tracing::debug!(job_id, detail_type, bus = %self.config.bus_name, "put event");
                return Ok(());
            }
            let failed = output.entries().first();
            let code = failed.and_then(|e| e.error_code()).unwrap_or("unknown");
            let message = failed.and_then(|e| e.error_message()).unwrap_or_default();
            let transient = matches!(code, "ThrottlingException" | "InternalFailure");
            if !transient || attempt >= PUT_ATTEMPTS {
                return Err(BusError {
                    message: format!(
                        "PutEvents ({detail_type}) for job {job_id} to bus {}: the entry failed \
                         with {code}: {message} (attempt {attempt})",
                        self.config.bus_name
                    ),
                });
            }
            tracing::warn!(
                job_id,
                code,
                message,
                attempt,
                "PutEvents entry failed; retrying"
            );
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, job_id: JobId, event: JobEvent) -> Result<(), BusError> {
        let detail = envelope_json(&Envelope { job_id, event })?;
        self.put(job_id, JOB_EVENT_DETAIL_TYPE, detail).await
    }

    async fn job_ended(&self, job_id: JobId) -> Result<(), BusError> {
        let detail = serde_json::to_string(&JobEnded { job_id }).map_err(|e| BusError {
            message: format!("cannot serialize the end of job {job_id}: {e}"),
        })?;
        self.put(job_id, JOB_ENDED_DETAIL_TYPE, detail).await
    }

    async fn schedule(
        &self,
        job_id: JobId,
        event: JobEvent,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), BusError> {
        if at <= now {
            tracing::debug!(job_id, %at, %now, "scheduled event is due: publishing it now");
            return self.publish(job_id, event).await;
        }
        let name = Self::schedule_name_of(job_id, &event, at);
        let expression = Self::schedule_expression(at);
        let input = envelope_json(&Envelope { job_id, event })?;
        let build = |e: aws_sdk_scheduler::error::BuildError| BusError {
            message: format!("schedule {name}: {e}"),
        };
        let target = Target::builder()
            .arn(&self.config.bus_arn)
            .role_arn(&self.config.scheduler_role_arn)
            .event_bridge_parameters(
                EventBridgeParameters::builder()
                    .detail_type(JOB_EVENT_DETAIL_TYPE)
                    .source(EVENT_SOURCE)
                    .build()
                    .map_err(build)?,
            )
            .input(input)
            .build()
            .map_err(build)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(build)?;
        let result = self
            .scheduler
            .create_schedule()
            .name(&name)
            .group_name(&self.config.schedule_group)
            .schedule_expression(&expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(job_id, schedule = %name, expression, "scheduled event");
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(CreateScheduleError::is_conflict_exception) =>
            {
                tracing::debug!(job_id, schedule = %name, "event already scheduled");
                Ok(())
            }
            Err(e) => Err(sdk_failure(
                &format!(
                    "CreateSchedule {name} ({expression}) in group {} for job {job_id}",
                    self.config.schedule_group
                ),
                &e,
            )),
        }
    }

    async fn status_changed(&self, event: &StatusEvent) -> Result<(), BusError> {
        let detail = serde_json::to_string(event).map_err(|e| BusError {
            message: format!(
                "cannot serialize a status event of job {}: {e}",
                event.job_id
            ),
        })?;
        self.put(event.job_id, JOB_STATUS_DETAIL_TYPE, detail).await
    }

    async fn cancel_schedules(&self, job_id: JobId) -> Result<usize, BusError> {
        let prefix = format!("stratus-job-{job_id}-");
        let group = &self.config.schedule_group;
        let mut names = Vec::new();
        let mut pages = self
            .scheduler
            .list_schedules()
            .group_name(group)
            .name_prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                sdk_failure(&format!("ListSchedules {prefix}* in group {group}"), &e)
            })?;
            // Filtered again here: the prefix must not match job 12's for job 1.
            names.extend(
                page.schedules()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter(|n| n.starts_with(&prefix))
                    .map(ToOwned::to_owned),
            );
        }
        for name in &names {
            match self
                .scheduler
                .delete_schedule()
                .name(name)
                .group_name(group)
                .send()
                .await
            {
                Ok(_) => tracing::debug!(job_id, schedule = %name, "deleted a schedule that never fired"),
                // It fired (and deleted itself) meanwhile.
                Err(e)
                    if e.as_service_error().is_some_and(
                        aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError::is_resource_not_found_exception,
                    ) => {}
                Err(e) => {
                    return Err(sdk_failure(
                        &format!("DeleteSchedule {name} in group {group} for job {job_id}"),
                        &e,
                    ));
                }
            }
        }
        Ok(names.len())
    }
}

/// The [`Envelope`] an EventBridge event of detail-type [`JOB_EVENT_DETAIL_TYPE`] carries, as a
/// Lambda function receives it (`{"version":"0","id":..,"detail-type":..,"source":"stratus",
/// "detail":{...}}`), whether it was published or scheduled.
pub fn envelope_from_event(event: &serde_json::Value) -> Result<Envelope, BusError> {
    let detail = stratus_detail(event, JOB_EVENT_DETAIL_TYPE)?;
    Envelope::deserialize(detail).map_err(|e| BusError {
        message: format!(
            "event {}: the detail is not a job event envelope: {e}",
            event_id(event)
        ),
    })
}

/// The job a [`JOB_ENDED_DETAIL_TYPE`] event says has ended.
pub fn ended_job_from_event(event: &serde_json::Value) -> Result<JobId, BusError> {
    let detail = stratus_detail(event, JOB_ENDED_DETAIL_TYPE)?;
    JobEnded::deserialize(detail)
        .map(|ended| ended.job_id)
        .map_err(|e| BusError {
            message: format!(
                "event {}: the detail is not {{\"job_id\": <id>}}: {e}",
                event_id(event)
            ),
        })
}

/// The detail of a Stratus event of `detail_type`, or an error naming what the event is.
fn stratus_detail<'a>(
    event: &'a serde_json::Value,
    detail_type: &str,
) -> Result<&'a serde_json::Value, BusError> {
    let field = |name: &str| event.get(name).and_then(serde_json::Value::as_str);
    let fail = |message: String| BusError {
        message: format!("event {}: {message}", event_id(event)),
    };
    match field("source") {
        Some(EVENT_SOURCE) => {}
        other => {
            return Err(fail(format!(
                "source is {other:?}, expected \"{EVENT_SOURCE}\" (is this an EventBridge event from \
                 the Stratus bus?)"
            )));
        }
    }
    match field("detail-type") {
        Some(found) if found == detail_type => {}
        other => {
            return Err(fail(format!(
                "detail-type is {other:?}, expected \"{detail_type}\""
            )));
        }
    }
    event
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or_else(|| fail("has no detail object".to_owned()))
}

fn event_id(event: &serde_json::Value) -> &str {
    event
        .get("id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("<no id>")
}

fn envelope_json(envelope: &Envelope) -> Result<String, BusError> {
    serde_json::to_string(envelope).map_err(|e| BusError {
        message: format!(
            "cannot serialize the event for job {}: {e}",
            envelope.job_id
        ),
    })
}

fn sdk_failure<E, R>(what: &str, e: &SdkError<E, R>) -> BusError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    BusError {
        message: format!("{what}: {}", DisplayErrorContext(e)),
    }
}

#[cfg(test)]
mod tests;
