//! The job-control API: typed server functions at stable endpoints under
//! `/api/identity-graph-backfill/`. Each one calls `require_allowed_admin()` first.

use super::domain::*;
use crate::error::AppError;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

#[cfg(feature = "ssr")]
use crate::{
    access::ssr::require_allowed_admin, backfill::engine::Engine, request_context::shared,
};

#[server(prefix = "/api/identity-graph-backfill", endpoint = "list", input = Json)]
pub async fn list() -> Result<ListResponse, AppError> {
    require_allowed_admin().await?;
    shared::<Engine>()?.list().await
}

#[server(prefix = "/api/identity-graph-backfill", endpoint = "start", input = Json)]
pub async fn start(#[server(flatten)] options: StartRequest) -> Result<StartResponse, AppError> {
    let admin = require_allowed_admin().await?;
    shared::<Engine>()?.start(&options, &admin.email).await
}

#[server(prefix = "/api/identity-graph-backfill", endpoint = "stop", input = Json)]
pub async fn stop(job_key: String) -> Result<StopResponse, AppError> {
    let admin = require_allowed_admin().await?;
    shared::<Engine>()?.stop(&job_key, &admin.email).await
}

/// Changes a running job's `max_rate`, `concurrency` or `sleep_ms`.
#[server(prefix = "/api/identity-graph-backfill", endpoint = "tune", input = Json)]
pub async fn tune(#[server(flatten)] request: TuneRequest) -> Result<TuneResponse, AppError> {
    let admin = require_allowed_admin().await?;
    shared::<Engine>()?.tune(&request, &admin.email).await
}

#[server(name = GetJob, prefix = "/api/identity-graph-backfill", endpoint = "job", input = Json)]
pub async fn job(job_key: String) -> Result<JobDetail, AppError> {
    require_allowed_admin().await?;
    shared::<Engine>()?.detail(&job_key).await
}

/// A keyset page of a job's unresolved failures, filtered by class and/or a
/// search in the message or the user id.
#[server(prefix = "/api/identity-graph-backfill", endpoint = "failures", input = Json)]
pub async fn failures(
    #[server(flatten)] request: FailuresRequest,
) -> Result<FailuresPage, AppError> {
    require_allowed_admin().await?;
    shared::<Engine>()?.failures(&request).await
}

/// "Check again": recomputes the job's coverage (in the background on the
/// engine's pool), stores it on the job and answers it. Two requests for the
/// same job while a check runs wait for the same check.
#[server(prefix = "/api/identity-graph-backfill", endpoint = "check_coverage", input = Json)]
pub async fn check_coverage(job_key: String) -> Result<Coverage, AppError> {
    require_allowed_admin().await?;
    shared::<Engine>()?.check_coverage(&job_key).await
}
