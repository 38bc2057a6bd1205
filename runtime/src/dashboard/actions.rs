//! The actions: retry now and delete (a job of a queue's scheduled, retry or
//! dead set), pause and resume (a queue). Each is a `POST` that passes
//! [`authorize`](super::authorize) first, then sends the browser back to the
//! page it came from.

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::data;
use super::pages::Error;
use super::{App, authorize};
use crate::queue;
use crate::queue::manage::{self, Acted, Set};

/// The form of every action: its CSRF token, the page to go back to, and
/// the job it acts on.
#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    pub(super) back: String,
    #[serde(default)]
    pub(super) member: String,
}

/// Where an action sends the browser: its page, if it is a path here.
pub(super) fn back_to(back: &str, default: &str) -> Redirect {
    let ok = back.starts_with('/') && !back.starts_with("//") && !back.contains('\\');
    Redirect::to(if ok { back } else { default })
}

/// `POST /queues/{queue}/{set}/retry` or `/delete`: the form's `member` is
/// the job.
pub(super) async fn act(
    State(app): State<Arc<App>>,
    Path((queue, set, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    authorize(&app, &headers, &form.csrf)?;
    let set = Set::parse(&set)
        .filter(|s| s.has_actions())
        .ok_or_else(|| Error::NotFound(format!("no actions on `{set}`")))?;
    crate::job::check_name("queue", &queue).map_err(Error::BadRequest)?;
    let mut conn = app.conn.clone();
    let acted = match action.as_str() {
        "retry" => manage::retry_now(&mut conn, &queue, set, &form.member).await?,
        "delete" => manage::delete(&mut conn, &queue, set, &form.member).await?,
        other => return Err(Error::NotFound(format!("no action `{other}`"))),
    };
    tracing::info!(%queue, set = set.as_str(), %action, done = acted == Acted::Done, "dashboard action");
    if let Acted::Refused(why) = acted {
        return Ok((StatusCode::CONFLICT, format!("{why}\n")).into_response());
    }
    if acted == Acted::Gone && form.back.is_empty() {
        return Ok((StatusCode::CONFLICT, "the job is no longer there\n").into_response());
    }
    let default = format!("/queues/{queue}/{}", set.as_str());
    Ok(back_to(&form.back, &default).into_response())
}

/// `POST /queues/{queue}/pause`.
pub(super) async fn pause(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    set_paused(app, queue, headers, form, true).await
}

/// `POST /queues/{queue}/resume`.
pub(super) async fn resume(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    set_paused(app, queue, headers, form, false).await
}

/// Pauses or resumes `queue`, for a request that may act.
async fn set_paused(
    app: Arc<App>,
    queue: String,
    headers: HeaderMap,
    form: ActionForm,
    paused: bool,
) -> Result<Response, Error> {
    authorize(&app, &headers, &form.csrf)?;
    crate::job::check_name("queue", &queue).map_err(Error::BadRequest)?;
    let mut conn = app.conn.clone();
    if !data::known_queue(&mut conn, &queue).await? {
        return Err(Error::NotFound(format!("no queue `{queue}`")));
    }
    queue::set_paused(&mut conn, &queue, paused).await?;
    tracing::info!(%queue, paused, "dashboard action");
    Ok(back_to(&form.back, "/").into_response())
}
