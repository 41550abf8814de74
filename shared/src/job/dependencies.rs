//! Dependencies between jobs, with Slurm's meanings (`--dependency=afterok:ID`):
//! - `afterok`: start once the job SUCCEEDED; if it ended any other way, never (CANCELLED).
//! - `afternotok`: start once the job ended in any other way (a failure or a cancel); if it
//!   SUCCEEDED, never.
//! - `afterany`: start once the job ended, whatever its status.
//!
//! [`verdict`] is pure: the handler reads the jobs depended on and asks it; a job waits in
//! PENDING (re-asked at every sweep) until every dependency is met, and is CANCELLED, naming
//! the dependency, as soon as one can never be.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{JobId, JobStatus};

/// The most dependencies a job may have (AWS Batch's `dependsOn` limit).
pub const MAX_DEPENDENCIES: usize = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    AfterOk,
    AfterNotOk,
    AfterAny,
}

/// `ID[:afterok|afterany|afternotok]` (afterok when the kind is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub job: JobId,
    #[serde(default)]
    pub kind: Kind,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::AfterOk => "afterok",
            Kind::AfterNotOk => "afternotok",
            Kind::AfterAny => "afterany",
        })
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.job, self.kind)
    }
}

impl FromStr for Dependency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (id, kind) = text.split_once(':').unwrap_or((text, "afterok"));
        let job = id.trim().parse::<JobId>().map_err(|_| {
            format!("'{text}': '{id}' is not a job ID: write ID[:afterok|afterany|afternotok], e.g. 12:afterok")
        })?;
        let kind = match kind.trim().to_ascii_lowercase().as_str() {
            "afterok" => Kind::AfterOk,
            "afternotok" => Kind::AfterNotOk,
            "afterany" => Kind::AfterAny,
            other => {
                return Err(format!(
                    "'{text}': unknown dependency type '{other}'{}: use afterok, afterany or afternotok",
                    crate::suggest::did_you_mean(other, ["afterok", "afterany", "afternotok"])
                ));
            }
        };
        Ok(Dependency { job, kind })
    }
}

/// What the jobs depended on say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every dependency is met: launch.
    Ready,
    /// Some have not ended yet.
    Wait,
    /// One can never be met: the reason, naming it.
    Never(String),
}

/// The verdict for `deps`, given the status of each job depended on (in the same order;
/// `None` for a job that no longer exists, which can never be met).
pub fn verdict(deps: &[Dependency], statuses: &[Option<JobStatus>]) -> Verdict {
    let mut waiting = false;
    for (dep, status) in deps.iter().zip(statuses) {
        let Some(status) = status else {
            return Verdict::Never(format!(
                "Job {} it depends on ({}) does not exist.",
                dep.job, dep.kind
            ));
        };
        if !status.is_terminal() {
            waiting = true;
            continue;
        }
        let ok = *status == JobStatus::Succeeded;
        let met = match dep.kind {
            Kind::AfterOk => ok,
            Kind::AfterNotOk => !ok,
            Kind::AfterAny => true,
        };
        if !met {
            return Verdict::Never(format!(
                "Job {} it depends on ended {status}, so its {} dependency can never be met.",
                dep.job, dep.kind
            ));
        }
    }
    if waiting {
        Verdict::Wait
    } else {
        Verdict::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(text: &str) -> Dependency {
        text.parse().unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(
            dep("12"),
            Dependency {
                job: 12,
                kind: Kind::AfterOk
            }
        );
        assert_eq!(dep("3:afterany").kind, Kind::AfterAny);
        assert_eq!(dep("3:AfterNotOk").kind, Kind::AfterNotOk);
        assert_eq!(dep("3:afternotok").to_string(), "3:afternotok");
        assert!(
            "x:afterok"
                .parse::<Dependency>()
                .unwrap_err()
                .contains("not a job ID")
        );
        let err = "3:aftrok".parse::<Dependency>().unwrap_err();
        assert!(err.contains("did you mean 'afterok'"), "{err}");
    }

    #[test]
    #[rustfmt::skip]
    fn slurms_meanings_one_row_per_rule() {
        use JobStatus::{Cancelled, Failed, Running, Succeeded};
        let never = |v: &Verdict| matches!(v, Verdict::Never(_));
        let rows: [(&str, &[Option<JobStatus>], bool, bool); 10] = [
            // deps, statuses, ready, never
            ("1:afterok", &[Some(Succeeded)], true, false),
            ("1:afterok", &[Some(Failed)], false, true),
            ("1:afterok", &[Some(Cancelled)], false, true),
            ("1:afterok", &[Some(Running)], false, false),
            ("1:afternotok", &[Some(Failed)], true, false),
            ("1:afternotok", &[Some(Cancelled)], true, false),
            ("1:afternotok", &[Some(Succeeded)], false, true),
            ("1:afterany", &[Some(Failed)], true, false),
            ("1:afterany", &[None], false, true),
            ("1:afterany", &[Some(Running)], false, false),
        ];
        for (deps, statuses, ready, cancelled) in rows {
            let v = verdict(&[dep(deps)], statuses);
            assert_eq!((v == Verdict::Ready, never(&v)), (ready, cancelled), "{deps} {statuses:?}: {v:?}");
        }
        // Several: one that can never be met wins over one still running.
        let two = [dep("1:afterok"), dep("2:afterok")];
        assert!(never(&verdict(&two, &[Some(Running), Some(Failed)])));
        assert_eq!(verdict(&two, &[Some(Succeeded), Some(Running)]), Verdict::Wait);
        assert_eq!(
            verdict(&two, &[Some(Succeeded), Some(Failed)]),
            Verdict::Never("Job 2 it depends on ended FAILED, so its afterok dependency can never be met.".into())
        );
    }
}
