//! Per-job agent tokens: HMAC-SHA256 of the job id under the control plane's secret, so a
//! token is valid for its job only and nothing needs to be stored to check it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::job::JobId;

/// The control plane's signing secret (32 random bytes, kept beside the state table).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    fn mac(&self, purpose: &str, job_id: JobId) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(purpose.as_bytes());
        mac.update(&job_id.to_be_bytes());
        mac
    }

    /// The token the job's node agents present.
    pub fn agent_token(&self, job_id: JobId) -> String {
        hex::encode(self.mac("agent", job_id).finalize().into_bytes())
    }

    /// Whether `token` is the agent token of `job_id` (constant-time).
    pub fn verify_agent(&self, job_id: JobId, token: &str) -> bool {
        hex::decode(token).is_ok_and(|bytes| self.mac("agent", job_id).verify_slice(&bytes).is_ok())
    }

    fn hook_mac(&self, hook: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(b"hook\0");
        mac.update(hook.as_bytes());
        mac
    }

    /// The token a cloud's push subscription presents to the hook named `hook` (e.g.
    /// `gcp-preemptions`): derived from the secret, so nothing is stored, and a different
    /// purpose from any agent token.
    pub fn hook_token(&self, hook: &str) -> String {
        hex::encode(self.hook_mac(hook).finalize().into_bytes())
    }

    /// Whether `token` is `hook`'s token (constant-time).
    pub fn verify_hook(&self, hook: &str, token: &str) -> bool {
        hex::decode(token).is_ok_and(|bytes| self.hook_mac(hook).verify_slice(&bytes).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_tokens_are_per_hook_and_never_an_agent_token() {
        let secret = SigningKey::new(b"k".to_vec());
        let token = secret.hook_token("gcp-preemptions");
        assert!(secret.verify_hook("gcp-preemptions", &token));
        assert!(!secret.verify_hook("other", &token));
        assert!(!secret.verify_hook("gcp-preemptions", "zz"));
        assert!(!SigningKey::new(b"other".to_vec()).verify_hook("gcp-preemptions", &token));
        assert!((0..100).all(|job| !secret.verify_agent(job, &token)));
    }

    #[test]
    fn tokens_are_per_job() {
        let secret = SigningKey::new(b"k".to_vec());
        let t1 = secret.agent_token(1);
        assert!(secret.verify_agent(1, &t1));
        assert!(!secret.verify_agent(2, &t1));
        assert!(!SigningKey::new(b"other".to_vec()).verify_agent(1, &t1));
        assert!(!secret.verify_agent(1, "not hex"));
    }
}
