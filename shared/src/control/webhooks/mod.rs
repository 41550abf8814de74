//! Webhooks: users' job events (`job::transitions`) posted to URLs they configured, each with a
//! status filter (`notify_on`), as the event's JSON or a Slack-compatible `{"text": ...}`.
//!
//! # Guarantees
//! - Never in the job's way: events go to a queue per webhook, drained by its own task; a slow
//!   or failing URL delays only its own later notices.
//! - In the order the control plane announced the changes (each write announces its changes
//!   before its actions run, so a launch's news cannot overtake it; two writes racing each
//!   other may arrive swapped: `record_version` sorts a job's events), each event once per
//!   webhook unless a delivery's answer was lost (then the retry delivers it again).
//! - At most once: a change whose announcement a crash interrupted is not sent.
//! - A failed delivery (a transport error or a non-2xx answer) is retried after 0.5, 1, 2 and
//!   4 s; after [`ATTEMPTS`] attempts it is dropped, and the job's controller log says so.
//! - A URL is never logged whole: only its scheme and host ([`redacted`]), since webhook
//!   URLs (Slack's) carry their secret in the path.
//!
//! # On AWS
//! The `notify` function gets each event from an EventBridge rule and calls [`deliver`]
//! (the webhook from the stack's parameters, [`from_parameters`]). No queue of its own:
//! EventBridge invokes it once per event, at least once, in no guaranteed order.
//!
//! # Caveats
//! - Only job-scope events are sent (the job's status, not each task's).
//! - Queues live in the local control plane's memory: notices not yet delivered when it stops
//!   are lost. A queue holds at most [`QUEUE`] notices; beyond, new ones are dropped (with a
//!   controller-log line).

mod http;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::Context;
use crate::job::cost::format_usd;
use crate::job::transitions::{Scope, StatusEvent};
use crate::job::{ControllerEvent, JobStatus};

pub use http::UreqSender;

/// Deliveries tried per event and webhook.
pub const ATTEMPTS: u32 = 5;

/// The first wait between attempts; each next one doubles.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Notices a webhook may have waiting; beyond them (a URL down for long) new ones are
/// dropped, with a line in the job's controller log.
pub const QUEUE: usize = 256;

/// One configured webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where to `POST`.
    pub url: String,
    /// The statuses to notify of; empty: every one.
    #[serde(default)]
    pub notify_on: Vec<JobStatus>,
    #[serde(default)]
    pub format: Format,
}

/// What the body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event itself (README, "Job events").
    #[default]
    Json,
    /// `{"text": "..."}`, which Slack's (and Mattermost's, Discord's `/slack`) incoming
    /// webhooks take.
    Slack,
}

impl Webhook {
    /// A problem with the configuration, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| format!("url: '{}' is not an http(s) URL", redacted(&self.url)))?;
        if rest.split('/').next().unwrap_or_default().is_empty() {
            return Err("url: no host".into());
        }
        Ok(())
    }

    /// Whether this webhook wants `event`.
    pub fn wants(&self, event: &StatusEvent) -> bool {
        event.scope == Scope::Job
            && (self.notify_on.is_empty() || self.notify_on.contains(&event.status))
    }

    /// The body to post for `event`.
    pub fn body(&self, event: &StatusEvent) -> String {
        match self.format {
            Format::Json => serde_json::to_string(event).unwrap_or_default(),
            Format::Slack => serde_json::json!({ "text": text(event) }).to_string(),
        }
    }
}

/// `Stratus job 7 (train) is FAILED (was RUNNING): <reason>. Cost so far: $0.12 (estimate).`
pub fn text(event: &StatusEvent) -> String {
    let mut text = format!(
        "Stratus job {} ({}) is {}",
        event.job_id, event.name, event.status
    );
    if let Some(previous) = event.previous_status {
        let _ = write!(text, " (was {previous})");
    }
    if let Some(reason) = &event.reason {
        let _ = write!(text, ": {reason}");
    }
    let _ = write!(
        text,
        ". Cost so far: {} (estimate).",
        format_usd(event.cost_usd)
    );
    text
}

/// `https://hooks.slack.com/…`: the scheme and host of `url`, never its path or query.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the authority (`user:pass@host`) stay out too.
    let host = host.rsplit('@').next().unwrap_or_default();
    if scheme.is_empty() {
        "<a URL>".to_owned()
    } else {
        format!("{scheme}://{host}/…")
    }
}

/// The side effect: one `POST`.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// Posts `body` (JSON) to `url`: the HTTP status, or why no answer came.
    async fn post(&self, url: &str, body: &str) -> Result<u16, String>;
}

/// Delivers every status event from `events` to the webhooks that want it, until `events`
/// closes. Spawns one task per webhook.
pub fn run(
    ctx: &Context,
    mut events: mpsc::UnboundedReceiver<StatusEvent>,
    hooks: Vec<Webhook>,
    sender: &Arc<dyn WebhookSender>,
) {
    let queues: Vec<(Webhook, mpsc::Sender<StatusEvent>)> = hooks
        .into_iter()
        .map(|hook| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(drain(ctx.clone(), hook.clone(), rx, sender.clone()));
            (hook, tx)
        })
        .collect();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            for (hook, queue) in &queues {
                if hook.wants(&event) && queue.try_send(event.clone()).is_err() {
                    let why = format!("{QUEUE} notices were already waiting");
                    log_dropped(&ctx, &event, &redacted(&hook.url), &why).await;
                }
            }
        }
    });
}

/// A notice given up on, in the job's controller log (the URL redacted).
async fn log_dropped(ctx: &Context, event: &StatusEvent, shown: &str, why: &str) {
    let line = ControllerEvent {
        at: ctx.clock.now(),
        task: event.task,
        status: event.status,
        message: format!(
            "Notification of {} to {shown} {why}; dropped.",
            event.status
        ),
    };
    if let Err(e) = ctx.store.append_events(event.job_id, &[line]).await {
        tracing::warn!(job_id = event.job_id, error = %e, "could not log a dropped notification");
    }
}

async fn drain(
    ctx: Context,
    hook: Webhook,
    mut queue: mpsc::Receiver<StatusEvent>,
    sender: Arc<dyn WebhookSender>,
) {
    while let Some(event) = queue.recv().await {
        deliver(&ctx, &hook, &event, sender.as_ref()).await;
    }
}

/// Posts `event` to `hook`, retrying after 0.5, 1, 2 and 4 s; after [`ATTEMPTS`] failures
/// the job's controller log says so. Returns whether it was delivered.
pub async fn deliver(
    ctx: &Context,
    hook: &Webhook,
    event: &StatusEvent,
    sender: &dyn WebhookSender,
) -> bool {
    let shown = redacted(&hook.url);
    let body = hook.body(event);
    let mut wait = FIRST_RETRY;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match sender.post(&hook.url, &body).await {
            Ok(code) if (200..300).contains(&code) => return true,
            Ok(code) => last = format!("HTTP {code}"),
            Err(e) => last = e,
        }
        tracing::info!(job_id = event.job_id, webhook = %shown, attempt, error = %last, "webhook delivery failed");
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    let why = format!("failed after {ATTEMPTS} attempts ({last})");
    log_dropped(ctx, event, &shown, &why).await;
    false
}

/// The webhook a deployment's stack parameters configure (`WebhookUrl`, `WebhookNotifyOn`,
/// `WebhookFormat`, as the `notify` function's environment): `None` without a URL. A bad
/// value is an error naming the parameter.
pub fn from_parameters(
    url: &str,
    notify_on: &str,
    format: &str,
) -> Result<Option<Webhook>, String> {
    if url.trim().is_empty() {
        return Ok(None);
    }
    let notify_on = notify_on
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<JobStatus>().map_err(|_| {
                format!("WebhookNotifyOn: '{s}' is not a job status (e.g. SUCCEEDED,FAILED)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let format = match format.trim() {
        "" | "json" => Format::Json,
        "slack" => Format::Slack,
        other => return Err(format!("WebhookFormat: '{other}'; use json or slack")),
    };
    let hook = Webhook {
        url: url.trim().to_owned(),
        notify_on,
        format,
    };
    hook.check().map_err(|e| format!("WebhookUrl: {e}"))?;
    Ok(Some(hook))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::job::JobRecord;
    use crate::job::transitions::created;

    #[test]
    fn stack_parameters_make_one_webhook_or_name_what_is_wrong() {
        assert_eq!(from_parameters("", "FAILED", "slack"), Ok(None));
        let hook = from_parameters(
            " https://hooks.slack.com/services/T/B/x ",
            "SUCCEEDED, FAILED",
            "slack",
        )
        .unwrap()
        .unwrap();
        assert_eq!(hook.url, "https://hooks.slack.com/services/T/B/x");
        assert_eq!(hook.notify_on, [JobStatus::Succeeded, JobStatus::Failed]);
        assert_eq!(hook.format, Format::Slack);
        assert_eq!(
            from_parameters("http://h/x", "", "")
                .unwrap()
                .unwrap()
                .format,
            Format::Json
        );
        let bad = |url, on, format| from_parameters(url, on, format).unwrap_err();
        assert!(bad("http://h/x", "DONE", "json").starts_with("WebhookNotifyOn: 'DONE'"));
        assert!(bad("http://h/x", "", "xml").starts_with("WebhookFormat: 'xml'"));
        let url = bad("ftp://h/the-secret", "", "json");
        assert!(
            url.starts_with("WebhookUrl: url:") && !url.contains("the-secret"),
            "{url}"
        );
    }

    #[test]
    fn urls_are_shown_without_their_secret() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/XYZ?x=1"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted("http://user:pw@127.0.0.1:8080/h"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(redacted("nonsense"), "<a URL>");
    }

    #[test]
    fn filters_formats_and_checks() {
        let event = created(&JobRecord::test().id(7), Timestamp::from_secs(1));
        let all = Webhook {
            url: "http://127.0.0.1:1/h".into(),
            notify_on: vec![],
            format: Format::Slack,
        };
        assert!(all.wants(&event));
        assert_eq!(
            all.body(&event),
            r#"{"text":"Stratus job 7 (train) is PENDING. Cost so far: $0.00 (estimate)."}"#
        );
        let failures = Webhook {
            notify_on: vec![JobStatus::Failed],
            ..all.clone()
        };
        assert!(!failures.wants(&event));
        assert!(all.check().is_ok());
        let bad = Webhook {
            url: "ftp://x/secret".into(),
            ..all
        };
        assert_eq!(
            bad.check().unwrap_err(),
            "url: 'ftp://x/…' is not an http(s) URL"
        );
    }
}
