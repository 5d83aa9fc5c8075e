//! `GET /api/identity-graph-backfill/failures.csv?job_key=…&class=…&q=…`:
//! a job's unresolved failures under a filter, streamed as CSV a keyset
//! page at a time, so a million rows take no more memory than one page.
//! The API's admission middleware admits it as it admits `job`.

use super::domain::{FailureFilter, FailureRecord};
use super::engine::Engine;
use crate::error::AppError;
use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    job_key: String,
    class: Option<String>,
    q: Option<String>,
}

pub async fn failures_csv(State(engine): State<Engine>, query: Query<ExportQuery>) -> Response {
    match export(&engine, &query).await {
        Ok(response) => response,
        Err(error) => {
            let status = StatusCode::from_u16(error.code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(error)).into_response()
        }
    }
}

async fn export(engine: &Engine, query: &ExportQuery) -> Result<Response, AppError> {
    let filter = FailureFilter::parse(query.class.as_deref(), query.q.as_deref())?;
    let pages = engine.export_failures(&query.job_key, filter).await?;
    let job_key = query.job_key.trim().to_string();
    let header_row = futures::stream::once(async { Ok::<_, sqlx::Error>(CSV_HEADER.to_string()) });
    let rows = pages.map_ok(|page| page.iter().map(csv_row).collect::<String>());
    let body = header_row.chain(rows).map_err(move |error| {
        // The status is sent; the body ends early, and the log says why.
        tracing::error!(job_key = %job_key, "failures export ended early: {error}");
        std::io::Error::other("the failures export ended early")
    });
    let filename = format!(
        "attachment; filename=\"{}-failures.csv\"",
        query.job_key.trim()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, filename),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

const CSV_HEADER: &str = "user_id,class,message,attempts,first_failed_at,last_failed_at\r\n";

/// One record, RFC 4180: every text field quoted, quotes doubled.
fn csv_row(failure: &FailureRecord) -> String {
    format!(
        "{},{},{},{},{},{}\r\n",
        failure.user_id,
        quoted(&failure.class),
        quoted(&failure.error),
        failure.attempts,
        failure.first_failed_at.to_rfc3339(),
        failure.last_failed_at.to_rfc3339(),
    )
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_quotes_commas_and_newlines_stays_one_field() {
        assert_eq!(quoted("a \"b\", c\nd"), "\"a \"\"b\"\", c\nd\"");
    }
}
