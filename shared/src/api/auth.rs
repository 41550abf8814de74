//! Who is calling, checked in one place: a user credential for the user routes
//! ([`Authenticator`]; a user reaches only their own jobs unless an admin), and the job's
//! agent token for the node routes (a token reaches only the job it was made for).

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::{ApiError, ApiResult};
use crate::job::{JobId, JobRecord};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Sees and cancels everyone's jobs.
    pub admin: bool,
}

/// Decides who a user request comes from.
pub trait Authenticator: Send + Sync {
    /// The caller, or `None` when the credentials are missing or wrong.
    fn user(&self, headers: &HeaderMap) -> Option<User>;
}

/// One bearer token for one user: the local control plane's credential, kept in a file only
/// that user can read.
pub struct TokenAuth {
    pub token: String,
    pub user: String,
}

impl Authenticator for TokenAuth {
    fn user(&self, headers: &HeaderMap) -> Option<User> {
        let given = bearer(headers)?;
        // Constant-time comparison of the digests, so timing says nothing about the token.
        let same = Sha256::digest(given.as_bytes()) == Sha256::digest(self.token.as_bytes());
        same.then(|| User {
            name: self.user.clone(),
            admin: true,
        })
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

impl ApiState {
    pub(super) fn user(&self, headers: &HeaderMap) -> ApiResult<User> {
        self.auth.user(headers).ok_or_else(ApiError::unauthorized)
    }

    /// The job, if `user` may see it (others' jobs look like missing ones).
    pub(super) async fn job_for(&self, user: &User, id: JobId) -> ApiResult<JobRecord> {
        let job = self.ctx.store.get_job(id).await?;
        if job.owner != user.name && !user.admin {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("job {id} not found"),
            ));
        }
        Ok(job)
    }

    pub(super) fn agent(&self, headers: &HeaderMap, job: JobId) -> ApiResult<()> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        if self.ctx.settings.secret.verify_agent(job, token) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token is not valid for this job",
            ))
        }
    }
}
