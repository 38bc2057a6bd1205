//! A queue's jobs: its pending, scheduled, retry and dead sets, a page at a
//! time, with the retry and delete buttons on the sets that have them.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{Markup, html};

use super::App;
use super::data;
use super::pages::{
    Ctx, Error, Page, PageQuery, action, ago, ctx, layout, login_hint, pager, uri_of,
};
use crate::queue::manage::Set;

/// `GET /queues/{queue}/{set}?page=N&per=M`.
pub(super) async fn set(
    State(app): State<Arc<App>>,
    Path((queue, set)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let set = Set::parse(&set).ok_or_else(|| {
        Error::NotFound(format!(
            "no list `{set}`: pending, scheduled, retry or dead"
        ))
    })?;
    let mut conn = app.conn.clone();
    if !data::known_queue(&mut conn, &queue).await? {
        return Err(Error::NotFound(format!("no queue `{queue}`")));
    }
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let page = data::page(
        &mut conn,
        &queue,
        set,
        q.page.unwrap_or(1),
        q.per.unwrap_or(data::PER_PAGE),
    )
    .await?;
    let paused: bool = redis::AsyncCommands::exists(
        &mut conn,
        crate::queue::keys::QueueKeys::new(&queue).paused(),
    )
    .await?;
    Ok(Html(
        set_page(&ctx, &queue, set, &page, paused).into_string(),
    ))
}

/// One page of a queue's set.
pub fn set_page(ctx: &Ctx, queue: &str, set: Set, page: &data::Page, paused: bool) -> Markup {
    let base = format!("/queues/{queue}/{}", set.as_str());
    let when = match set {
        Set::Pending => None,
        Set::Scheduled | Set::Retry => Some("Due"),
        Set::Dead => Some("Died"),
    };
    let body = html! {
        nav.tabs {
            @for s in Set::ALL {
                a.current[s == set] href={ "/queues/" (queue) "/" (s.as_str()) } { (s.as_str()) }
            }
            @if paused { span.badge.paused { "paused" } }
        }
        p { (page.total) " jobs · page " (page.page) " of " (page.pages()) }
        (login_hint(ctx))
        table #jobs {
            thead { tr {
                th { "Job" } th { "Class" }
                @if let Some(w) = when { th { (w) } }
                th.n { "Retries" } th { "Error" } th { "Args" }
                @if set.has_actions() { th {} }
            } }
            tbody {
                @for r in &page.rows {
                    tr {
                        td {
                            @if r.id.is_empty() { em { "(not a job)" } }
                            @else { a href={ "/jobs/" (r.id) "?queue=" (queue) } { (r.id) } }
                        }
                        td { (r.class) }
                        @if when.is_some() { td { (r.at_ms.map_or("-".into(), |t| ago(ctx.now_ms, t))) } }
                        td.n { (r.retry_count) }
                        td { @if let Some((kind, message)) = &r.error { b { (kind) } " " (data::preview(message, 120)) } }
                        td { code { (r.args) } }
                        @if set.has_actions() {
                            td.actions {
                                (action(ctx, &format!("{base}/retry"), "Retry now", &[("member", &r.member)], None))
                                (action(ctx, &format!("{base}/delete"), "Delete", &[("member", &r.member)], Some("Delete this job?")))
                            }
                        }
                    }
                }
            }
        }
        (pager(&base, page.page, page.pages(), page.per))
    };
    layout(ctx, &format!("{queue} · {}", set.as_str()), body)
}
