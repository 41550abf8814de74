//! The webhook sender (`WebhookSender`) of the local control plane and the `notify` function:
//! one `POST` with ureq, off the async threads, with a timeout.

use std::time::Duration;

use super::WebhookSender;
use async_trait::async_trait;

/// How long one delivery may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct UreqSender {
    agent: ureq::Agent,
}

impl Default for UreqSender {
    fn default() -> Self {
        Self::new()
    }
}

impl UreqSender {
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect would turn the POST into a GET without its body: a failure, not
            // a delivery.
            .max_redirects(0)
            .timeout_global(Some(TIMEOUT))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
        }
    }
}

#[async_trait]
impl WebhookSender for UreqSender {
    async fn post(&self, url: &str, body: &str) -> Result<u16, String> {
        let (agent, url, body) = (self.agent.clone(), url.to_owned(), body.to_owned());
        tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .content_type("application/json")
                .send(body)
                .map(|r| r.status().as_u16())
                // The error's text can hold the URL: say only what kind of failure it was.
                .map_err(|e| match e {
                    ureq::Error::Timeout(_) => "timed out".to_owned(),
                    ureq::Error::ConnectionFailed | ureq::Error::Io(_) => {
                        "connection failed".to_owned()
                    }
                    _ => "request failed".to_owned(),
                })
        })
        .await
        .map_err(|e| format!("the sender stopped: {e}"))?
    }
}
