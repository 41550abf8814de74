//! [`Buckets`] on Cloud Storage, with the data identity from IAM Credentials and STS (feature
//! `gcp`).
//!
//! The control plane's own Google identity (the GCE provider's: Workload Identity Federation
//! or a key) gets, locates, creates and deletes buckets in the stack's project. Nodes get an
//! access token of the stack's node data service account (`generateAccessToken`, one hour),
//! exchanged at STS for one downscoped by a Credential Access Boundary ([`access_boundary`]):
//! what a node holds reaches the task's parts of its buckets and nothing else, and never
//! carries the control plane's permissions. Buckets Stratus creates carry the labels
//! `stratus-created-by-job` (the job id) and `stratus-owner` ([`owner_label`]: label values
//! cannot hold an arbitrary user name).

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{BucketError, Buckets, CREATED_BY_TAG, Grant, Located, OWNER_TAG, access_boundary};
use crate::agent_protocol::{DataCredentials, GcsCredentials};
use crate::job::JobId;
use crate::provider::{GceCredentials, ProviderError};

const STORAGE: &str = "https://storage.googleapis.com";
const IAM_CREDENTIALS: &str = "https://iamcredentials.googleapis.com";
const STS: &str = "https://sts.googleapis.com";
/// What the node data service account's token may do before the boundary narrows it.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Where the adapter works and with whom.
#[derive(Debug, Clone)]
pub struct GcsSettings {
    /// The project buckets are created in.
    pub project: String,
    /// Where created buckets live (`US`, `EU`, a region such as `us-central1`).
    pub location: String,
    /// The node data service account's e-mail; the control plane's identity needs
    /// `iam.serviceAccounts.getAccessToken` on it (Service Account Token Creator).
    pub node_service_account: String,
    /// One base URL serving Cloud Storage, IAM Credentials and STS in place of Google's (a
    /// fake), also handed to nodes.
    pub endpoint: Option<String>,
    pub credentials: GceCredentials,
}

/// Users' Cloud Storage buckets, and the service account nodes reach them with.
#[derive(Debug, Clone)]
pub struct GcsBuckets {
    http: reqwest::Client,
    credentials: Credentials,
    settings: GcsSettings,
}

/// The `stratus-owner` label of `owner`'s buckets: a digest, since label values take only
/// lowercase letters, digits, `_` and `-` (63 at most).
pub fn owner_label(owner: &str) -> String {
    hex::encode(Sha256::digest(owner.as_bytes()))[..32].to_owned()
}

/// One answer: its status and JSON body (`Value::Null` when it has none).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl GcsBuckets {
    pub fn new(settings: GcsSettings) -> Result<Self, ProviderError> {
        let credentials = match settings.credentials.build()? {
            Some(credentials) => credentials,
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| ProviderError::Auth {
                    message: format!("GCS: no application default credentials: {e}"),
                })?,
        };
        Ok(GcsBuckets {
            http: reqwest::Client::new(),
            credentials,
            settings,
        })
    }

    fn base<'a>(&'a self, google: &'a str) -> &'a str {
        self.settings
            .endpoint
            .as_deref()
            .unwrap_or(google)
            .trim_end_matches('/')
    }

    fn bucket_url(&self, bucket: &str) -> String {
        format!("{}/storage/v1/b/{bucket}", self.base(STORAGE))
    }

    /// Sends a request with the control plane's own credentials.
    async fn call(
        &self,
        operation: &'static str,
        bucket: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, BucketError> {
        let failed = |detail: String| BucketError::Backend {
            operation,
            bucket: bucket.to_owned(),
            detail,
        };
        let headers = match self
            .credentials
            .headers(axum::http::Extensions::new())
            .await
        {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => {
                return Err(failed("no credentials headers".into()));
            }
            Err(e) => {
                return Err(BucketError::Unavailable(format!(
                    "the Google credentials cannot be used: {e}"
                )));
            }
        };
        let response = request
            .headers(headers)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| failed(e.to_string()))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    fn backend(operation: &'static str, bucket: &str, answer: &Answer) -> BucketError {
        let message = answer.body["error"]["message"]
            .as_str()
            .map_or_else(|| answer.body.to_string(), str::to_owned);
        BucketError::Backend {
            operation,
            bucket: bucket.to_owned(),
            detail: format!("HTTP {}: {message}", answer.status.as_u16()),
        }
    }

    /// The bucket's resource, or `None` when there is none.
    async fn get(&self, bucket: &str) -> Result<Option<Value>, BucketError> {
        let answer = self
            .call(
                "buckets.get",
                bucket,
                self.http.get(self.bucket_url(bucket)),
            )
            .await?;
        match answer.status.as_u16() {
            200 => Ok(Some(answer.body)),
            404 => Ok(None),
            403 => Err(BucketError::Denied {
                bucket: bucket.to_owned(),
            }),
            // Our own token was refused: the stack's set-up, not the user's bucket.
            401 => Err(BucketError::Unavailable(format!(
                "Cloud Storage refused the control plane's Google credentials: {}",
                Self::backend("buckets.get", bucket, &answer)
            ))),
            _ => Err(Self::backend("buckets.get", bucket, &answer)),
        }
    }

    /// Every object name in `bucket`.
    async fn object_names(&self, bucket: &str) -> Result<Vec<String>, BucketError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("maxResults", "1000".to_owned())];
            if let Some(token) = &token {
                query.push(("pageToken", token.clone()));
            }
            let request = self
                .http
                .get(format!("{}/o", self.bucket_url(bucket)))
                .query(&query);
            let answer = self.call("objects.list", bucket, request).await?;
            if answer.status != StatusCode::OK {
                return Err(Self::backend("objects.list", bucket, &answer));
            }
            if let Some(items) = answer.body["items"].as_array() {
                names.extend(
                    items
                        .iter()
                        .filter_map(|i| i["name"].as_str().map(str::to_owned)),
                );
            }
            match answer.body["nextPageToken"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(names),
            }
        }
    }

    /// An access token of the node data service account (one hour, its full rights).
    async fn node_token(&self) -> Result<String, BucketError> {
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            self.base(IAM_CREDENTIALS),
            self.settings.node_service_account
        );
        let body = json!({ "scope": [SCOPE], "lifetime": "3600s" });
        let request = self
            .http
            .request(Method::POST, url)
            .header("content-type", "application/json")
            .body(body.to_string());
        let answer = self.call("generateAccessToken", "", request).await?;
        match (answer.status, answer.body["accessToken"].as_str()) {
            (StatusCode::OK, Some(token)) => Ok(token.to_owned()),
            _ => Err(BucketError::Unavailable(format!(
                "cannot act as the node data service account {}: {}",
                self.settings.node_service_account,
                Self::backend("generateAccessToken", "", &answer)
            ))),
        }
    }
}

#[async_trait]
impl Buckets for GcsBuckets {
    /// The deployment keeps nothing in Cloud Storage.
    fn is_reserved(&self, _bucket: &str) -> bool {
        false
    }

    async fn locate(&self, bucket: &str) -> Result<Option<Located>, BucketError> {
        Ok(self.get(bucket).await?.map(|b| Located {
            region: b["location"].as_str().unwrap_or("US").to_lowercase(),
        }))
    }

    async fn owned_by_another(&self, bucket: &str, owner: &str) -> Result<bool, BucketError> {
        let Some(resource) = self.get(bucket).await? else {
            return Ok(false);
        };
        Ok(resource["labels"][OWNER_TAG]
            .as_str()
            .is_some_and(|label| label != owner_label(owner)))
    }

    async fn create(&self, bucket: &str, job: JobId, owner: &str) -> Result<bool, BucketError> {
        let body = json!({
            "name": bucket,
            "location": self.settings.location,
            "labels": { CREATED_BY_TAG: job.to_string(), OWNER_TAG: owner_label(owner) },
        });
        let request = self
            .http
            .post(format!("{}/storage/v1/b", self.base(STORAGE)))
            .query(&[("project", self.settings.project.as_str())])
            .header("content-type", "application/json")
            .body(body.to_string());
        let answer = self.call("buckets.insert", bucket, request).await?;
        match answer.status.as_u16() {
            200 => Ok(true),
            // Names are global: it exists. Ours to use when we can see it; else someone
            // else's. Never labelled, so never deleted as this job's.
            409 => match self.get(bucket).await {
                Ok(Some(_)) => Ok(false),
                Ok(None) => Err(Self::backend("buckets.insert", bucket, &answer)),
                Err(BucketError::Denied { .. }) => Err(BucketError::Taken {
                    bucket: bucket.to_owned(),
                }),
                Err(e) => Err(e),
            },
            403 => Err(BucketError::Denied {
                bucket: bucket.to_owned(),
            }),
            _ => Err(Self::backend("buckets.insert", bucket, &answer)),
        }
    }

    async fn delete_created(&self, bucket: &str, job: JobId) -> Result<bool, BucketError> {
        let Some(resource) = self.get(bucket).await? else {
            return Ok(false);
        };
        if resource["labels"][CREATED_BY_TAG].as_str() != Some(job.to_string().as_str()) {
            return Ok(false);
        }
        for name in self.object_names(bucket).await? {
            let url = format!(
                "{}/o/{}",
                self.bucket_url(bucket),
                form_urlencoded::byte_serialize(name.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20")
            );
            let answer = self
                .call("objects.delete", bucket, self.http.delete(url))
                .await?;
            if !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND) {
                return Err(Self::backend("objects.delete", bucket, &answer));
            }
        }
        let answer = self
            .call(
                "buckets.delete",
                bucket,
                self.http.delete(self.bucket_url(bucket)),
            )
            .await?;
        match answer.status.as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(Self::backend("buckets.delete", bucket, &answer)),
        }
    }

    /// Uploads go to buckets by signed URLs, which Cloud Storage signs only with a
    /// service-account key the stack does not hold: GCS intermediate buckets are not served.
    async fn objects(
        &self,
        _bucket: &str,
    ) -> Result<Option<std::sync::Arc<dyn crate::blob::BlobStore>>, BucketError> {
        Ok(None)
    }

    async fn credentials(
        &self,
        _job: JobId,
        grants: &[Grant],
        _regions: &std::collections::BTreeMap<String, String>,
    ) -> Result<DataCredentials, BucketError> {
        let subject = self.node_token().await?;
        let options = json!({ "accessBoundary": access_boundary(grants) }).to_string();
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            )
            .append_pair("subject_token_type", TOKEN_TYPE)
            .append_pair("requested_token_type", TOKEN_TYPE)
            .append_pair("subject_token", &subject)
            .append_pair("options", &options)
            .finish();
        // STS takes the token to narrow as the subject; no credentials of ours go with it.
        let response = self
            .http
            .post(format!("{}/v1/token", self.base(STS)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| BucketError::Unavailable(format!("STS token exchange: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let (Some(token), true) = (answer["access_token"].as_str(), status.is_success()) else {
            return Err(BucketError::Unavailable(format!(
                "STS refused to downscope the node data token (HTTP {}): {text}",
                status.as_u16()
            )));
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let lifetime_ms = answer["expires_in"].as_u64().unwrap_or(3600) * 1000;
        Ok(DataCredentials {
            s3: None,
            gcs: Some(GcsCredentials {
                access_token: token.to_owned(),
                expires_at_ms: now_ms + lifetime_ms,
                endpoint: self.settings.endpoint.clone(),
            }),
        })
    }
}
