//! The local control plane's loops, doing the work of EventBridge rules and the sweep's
//! schedule: every [`LocalBus`](crate::bus::LocalBus) message goes to its handler, and `poll`
//! runs every interval. The bus only carries messages; this consumer decides what handles them.

use tokio::sync::mpsc;

use crate::bus::LocalMessage;

async fn handle_local(ctx: &super::Context, message: LocalMessage) {
    match message {
        LocalMessage::Event(envelope) => {
            if let Err(e) = super::advance(ctx, envelope.job_id, envelope.event.clone()).await {
                tracing::warn!(job_id = envelope.job_id, event = ?envelope.event, error = %e, "event failed; the poll sweep retries");
            }
        }
        LocalMessage::Ended(job_id) => {
            if let Err(e) = super::cleanup(ctx, job_id).await {
                tracing::warn!(job_id, error = %e, "cleanup failed");
            }
        }
    }
}

/// How many jobs' messages the local plane handles at once.
const LOCAL_WORKERS: u64 = 8;

/// The local control plane's loops, EventBridge's and the schedule's part: deliver each bus
/// message to its handler, and sweep every `interval`. Messages are handled by
/// [`LOCAL_WORKERS`] workers, each job's always by the same one, so a job's messages stay in
/// order while one job's slow teardown holds up no other. They run until the runtime stops.
pub fn run_local_loops(
    ctx: &super::Context,
    mut messages: mpsc::UnboundedReceiver<LocalMessage>,
    interval: std::time::Duration,
) {
    let workers: Vec<mpsc::UnboundedSender<LocalMessage>> = (0..LOCAL_WORKERS)
        .map(|_| {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    handle_local(&ctx, message).await;
                }
            });
            tx
        })
        .collect();
    tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            let job_id = match &message {
                LocalMessage::Event(envelope) => envelope.job_id,
                LocalMessage::Ended(job_id) => *job_id,
            };
            let worker = usize::try_from(job_id % LOCAL_WORKERS).unwrap_or_default();
            // A worker ends only with the runtime.
            let _ = workers[worker].send(message);
        }
    });
    let poll_ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = super::poll(&poll_ctx).await {
                tracing::warn!(error = %e, "poll sweep failed");
            }
            tokio::time::sleep(interval).await;
        }
    });
}
