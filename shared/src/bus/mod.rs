//! The event-bus port: deliver a job event now or at a time, at least once. EventBridge (and
//! its scheduler) in AWS ([`eventbridge`], feature `aws`); an in-process channel and timers
//! locally ([`LocalBus`], whose messages `control::run_local_loops` hands to the handlers).

#[cfg(feature = "aws")]
pub mod eventbridge;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clock::Timestamp;
use crate::job::transitions::StatusEvent;
use crate::job::{JobEvent, JobId};

/// An event for one job, as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub job_id: JobId,
    pub event: JobEvent,
}

/// What the local bus carries: job events, and "this job ended" for the cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalMessage {
    Event(Envelope),
    Ended(JobId),
}

#[derive(Debug, thiserror::Error)]
#[error("event bus: {message}")]
pub struct BusError {
    pub message: String,
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Delivers `event` to the job's handler soon.
    async fn publish(&self, job_id: JobId, event: JobEvent) -> Result<(), BusError>;
    /// Says that the job has just ended, so that its cleanup runs (the finalizer).
    async fn job_ended(&self, job_id: JobId) -> Result<(), BusError>;
    /// Delivers `event` at `at` (or soon after); `now` is the caller's reading of the clock.
    async fn schedule(
        &self,
        job_id: JobId,
        event: JobEvent,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), BusError>;
    /// Tells users that a job or task changed status (`job::transitions`): for their own
    /// rules and webhooks, never read back by Stratus.
    async fn status_changed(&self, event: &StatusEvent) -> Result<(), BusError>;
    /// Drops the job's scheduled events not yet delivered (its cleanup calls this: an ended
    /// job's timers have nothing left to do). Returns how many were dropped.
    async fn cancel_schedules(&self, job_id: JobId) -> Result<usize, BusError>;
}

/// The in-process bus of the local control plane: a channel its event loop drains, and tokio
/// timers for scheduled events. Scheduled events do not survive a restart; the poll sweep
/// re-derives them from the job records (a due backoff is re-sent), so nothing is lost.
#[derive(Debug, Clone)]
pub struct LocalBus {
    tx: mpsc::UnboundedSender<LocalMessage>,
    /// Each job's timers not yet fired, so that its cleanup can drop them.
    timers: Arc<Mutex<HashMap<JobId, Vec<tokio::task::AbortHandle>>>>,
    /// Who hears of status changes (the local plane's webhooks).
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<StatusEvent>>>>,
}

impl LocalBus {
    /// The bus and the receiving end its event loop reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<LocalMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                timers: Arc::default(),
                subscribers: Arc::default(),
            },
            rx,
        )
    }

    /// A receiver of every status change from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<StatusEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        rx
    }

    fn send(&self, message: LocalMessage) -> Result<(), BusError> {
        self.tx.send(message).map_err(|_| BusError {
            message: "the event loop has stopped".into(),
        })
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, job_id: JobId, event: JobEvent) -> Result<(), BusError> {
        self.send(LocalMessage::Event(Envelope { job_id, event }))
    }

    async fn job_ended(&self, job_id: JobId) -> Result<(), BusError> {
        self.send(LocalMessage::Ended(job_id))
    }

    async fn schedule(
        &self,
        job_id: JobId,
        event: JobEvent,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), BusError> {
        let bus = self.clone();
        let wait = at.since(now);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = bus.send(LocalMessage::Event(Envelope { job_id, event }));
        });
        let mut timers = self
            .timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = timers.entry(job_id).or_default();
        mine.retain(|t| !t.is_finished());
        mine.push(timer.abort_handle());
        Ok(())
    }

    async fn status_changed(&self, event: &StatusEvent) -> Result<(), BusError> {
        // A subscriber that has gone (its receiver dropped) is forgotten.
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|s| s.send(event.clone()).is_ok());
        Ok(())
    }

    async fn cancel_schedules(&self, job_id: JobId) -> Result<usize, BusError> {
        let mine = self
            .timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&job_id)
            .unwrap_or_default();
        let pending = mine.iter().filter(|t| !t.is_finished()).count();
        for timer in mine {
            timer.abort();
        }
        Ok(pending)
    }
}
