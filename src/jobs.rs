//! Long operator jobs started over HTTP (reindex): their state and progress
//! for `GET /v1/admin/jobs/{id}`. In memory: a restart forgets them (and a
//! reindex interrupted by it left the old index serving).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// `running`, `done` or `failed`.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub done: u64,
    pub total: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// What a finished job produced (a reindex: the new generation).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The tenant whose key started it; none: the master key. A tenant's
    /// admin sees its own tenant's jobs only.
    #[serde(skip)]
    pub owner: Option<Uuid>,
}

#[derive(Debug, Default)]
pub struct Jobs(Mutex<HashMap<Uuid, Job>>);

impl Jobs {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, Job>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A new running job started by `owner` (a tenant; none: the master
    /// key); `None` when one of the same kind still runs.
    pub fn start(&self, kind: &'static str, owner: Option<Uuid>) -> Option<Uuid> {
        self.with(|jobs| {
            if jobs
                .values()
                .any(|j| j.kind == kind && j.state == "running")
            {
                return None;
            }
            let id = Uuid::new_v4();
            jobs.insert(
                id,
                Job {
                    id,
                    kind,
                    state: "running",
                    done: 0,
                    total: 0,
                    started_at: Utc::now(),
                    finished_at: None,
                    error: None,
                    result: None,
                    owner,
                },
            );
            Some(id)
        })
    }

    pub fn progress(&self, id: Uuid, done: u64, total: u64) {
        self.with(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                j.done = done;
                j.total = total.max(done);
            }
        });
    }

    pub fn finish(&self, id: Uuid, outcome: Result<serde_json::Value, String>) {
        self.with(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                j.finished_at = Some(Utc::now());
                match outcome {
                    Ok(v) => {
                        j.state = "done";
                        j.done = j.total.max(j.done);
                        j.result = Some(v);
                    }
                    Err(e) => {
                        j.state = "failed";
                        j.error = Some(e);
                    }
                }
            }
        });
    }

    /// Job `id` as `viewer` may see it: a tenant its own jobs, the master
    /// key (`None`) every job.
    pub fn get(&self, id: Uuid, viewer: Option<Uuid>) -> Option<Job> {
        self.with(|jobs| {
            jobs.get(&id)
                .filter(|j| viewer.is_none() || j.owner == viewer)
                .cloned()
        })
    }
}
