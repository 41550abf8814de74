//! The agent's configuration: the environment variables a provider sets on every node
//! (`shared::agent_protocol::env`), read once at start.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use shared::agent_protocol::{AgentCadence, DEFAULT_LOG_QUOTA_BYTES, MAX_LOG_CHUNK_BYTES, env};

/// The cadence when the provider sets none: the local cloud's.
pub const DEFAULT_CADENCE: AgentCadence = AgentCadence::LOCAL;

/// Everything the agent needs to know about its node, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the Stratus API, without a trailing `/`.
    pub api_url: String,
    /// The per-job bearer token. Never logged: `Debug` prints `<redacted>`.
    pub token: String,
    pub job_id: u64,
    pub cluster: String,
    pub rank: u32,
    /// An absolute path: the node's home (`~`) and the parent of `sky_workdir`.
    pub node_dir: PathBuf,
    /// How often to talk to the control plane (see `AgentCadence`).
    pub cadence: AgentCadence,
    /// Most bytes of output kept of one phase.
    pub log_quota: u64,
    /// The user the commands run as (`env::TASK_USER`), on a cloud VM.
    pub task_user: Option<String>,
}

impl Config {
    /// First delay between polls while waiting.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.cadence.poll_ms)
    }

    /// Delay between polls while a command runs.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.cadence.heartbeat_ms)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("job_id", &self.job_id)
            .field("cluster", &self.cluster)
            .field("rank", &self.rank)
            .field("node_dir", &self.node_dir)
            .field("cadence", &self.cadence)
            .field("log_quota", &self.log_quota)
            .field("task_user", &self.task_user)
            .finish()
    }
}

/// A missing or malformed variable. The token's value is never part of a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{var} is not set: the agent is started by a Stratus provider, which sets \
         {API_URL}, {TOKEN}, {JOB_ID}, {CLUSTER}, {NODE_RANK} and {NODE_DIR}",
        API_URL = env::API_URL,
        TOKEN = env::TOKEN,
        JOB_ID = env::JOB_ID,
        CLUSTER = env::CLUSTER,
        NODE_RANK = env::NODE_RANK,
        NODE_DIR = env::NODE_DIR
    )]
    Missing { var: &'static str },
    #[error("{var}='{value}' is not valid: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the variables through `get` (the environment, or a map in tests). An empty value
    /// counts as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let required = |var: &'static str| {
            get(var)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
                .ok_or(ConfigError::Missing { var })
        };
        let invalid = |var, value: String, expected| ConfigError::Invalid {
            var,
            value,
            expected,
        };

        let api_url = required(env::API_URL)?;
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(invalid(
                env::API_URL,
                api_url,
                "an http:// or https:// URL such as http://127.0.0.1:46580",
            ));
        }
        let api_url = api_url.trim_end_matches('/').to_owned();
        let token = required(env::TOKEN)?;
        let job_id = required(env::JOB_ID)?;
        let job_id = job_id
            .parse()
            .map_err(|_| invalid(env::JOB_ID, job_id, "a job id (a whole number)"))?;
        let cluster = required(env::CLUSTER)?;
        if cluster.contains(['/', '?', '#', ' ']) {
            return Err(invalid(
                env::CLUSTER,
                cluster,
                "a cluster name without '/', '?', '#' or spaces",
            ));
        }
        let rank = required(env::NODE_RANK)?;
        let rank = rank
            .parse()
            .map_err(|_| invalid(env::NODE_RANK, rank, "a node rank (0, 1, 2, ...)"))?;
        let node_dir = required(env::NODE_DIR)?;
        let node_dir = std::path::absolute(&node_dir)
            .map_err(|_| invalid(env::NODE_DIR, node_dir, "a folder path"))?;
        let millis =
            |var: &'static str, default: u64| match get(var).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(ms) => match ms.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(ms),
                    _ => Err(invalid(
                        var,
                        ms,
                        "a whole number of milliseconds, greater than 0",
                    )),
                },
            };
        let d = DEFAULT_CADENCE;
        let mut cadence = AgentCadence {
            poll_ms: millis(env::POLL_MS, d.poll_ms)?,
            heartbeat_ms: millis(env::HEARTBEAT_MS, d.heartbeat_ms)?,
            log_flush_ms: millis(env::LOG_FLUSH_MS, d.log_flush_ms)?,
            log_live_ms: millis(env::LOG_LIVE_MS, d.log_live_ms)?,
            log_chunk_bytes: d.log_chunk_bytes,
        };
        if let Some(bytes) = get(env::LOG_CHUNK_BYTES).filter(|v| !v.trim().is_empty()) {
            cadence.log_chunk_bytes = match bytes.trim().parse::<usize>() {
                Ok(n) if (1024..=MAX_LOG_CHUNK_BYTES).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        env::LOG_CHUNK_BYTES,
                        bytes,
                        "a chunk size in bytes from 1024 to 524288",
                    ));
                }
            };
        }
        let log_quota = match get(env::LOG_QUOTA_BYTES).filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_LOG_QUOTA_BYTES,
            Some(bytes) => bytes
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| invalid(env::LOG_QUOTA_BYTES, bytes, "a number of bytes"))?,
        };
        // Waiting never polls slower than the heartbeat.
        cadence.heartbeat_ms = cadence.heartbeat_ms.max(cadence.poll_ms);
        Ok(Config {
            api_url,
            token,
            job_id,
            cluster,
            rank,
            node_dir,
            cadence,
            log_quota,
            task_user: get(env::TASK_USER)
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, String> {
        let mut map: BTreeMap<String, String> = [
            (env::API_URL, "http://127.0.0.1:8080/"),
            (env::TOKEN, "s3cret"),
            (env::JOB_ID, "7"),
            (env::CLUSTER, "train-7-1"),
            (env::NODE_RANK, "1"),
            (env::NODE_DIR, "/tmp/node"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in vars {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        Config::from_lookup(|var| map.get(var).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_variable() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.api_url, "http://127.0.0.1:8080");
        assert_eq!((config.job_id, config.rank), (7, 1));
        assert_eq!(config.node_dir, PathBuf::from("/tmp/node"));
        assert_eq!(config.cadence, DEFAULT_CADENCE);
        let cloud = parse(
            &AgentCadence::CLOUD
                .env()
                .map(|(k, v)| (k, v.leak() as &str)),
        )
        .unwrap();
        assert_eq!(cloud.cadence, AgentCadence::CLOUD);
        assert_eq!(
            parse(&[(env::POLL_MS, "50")]).unwrap().poll(),
            Duration::from_millis(50)
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_the_variable_and_the_fix() {
        let err = parse(&[(env::JOB_ID, "")]).unwrap_err();
        assert!(err.starts_with("STRATUS_JOB_ID is not set: "), "{err}");
        assert_eq!(
            parse(&[(env::NODE_RANK, "-1")]).unwrap_err(),
            "STRATUS_NODE_RANK='-1' is not valid: expected a node rank (0, 1, 2, ...)"
        );
        assert!(
            parse(&[(env::API_URL, "127.0.0.1:1")])
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse(&[(env::POLL_MS, "0")])
                .unwrap_err()
                .contains("greater than 0")
        );
        assert!(
            parse(&[(env::LOG_CHUNK_BYTES, "9999999")])
                .unwrap_err()
                .contains("1024 to 524288")
        );
        assert!(parse(&[(env::CLUSTER, "a/b")]).is_err());
    }
}
