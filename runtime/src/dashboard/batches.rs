//! The batches pages: every batch of the last 30 days, newest first, and one
//! batch with its members.
//!
//! The list pages through the batch index (`stoker:{stoker}:batches`, see
//! [`crate::batch`]) with `ZREVRANGE`, and reads its page's batches in one
//! pipelined round trip (a hash and three `SCARD`s each), so a page costs the
//! same with ten batches or a million. A batch's members are a set: they are
//! paged with `SSCAN`'s cursor (about [`PER_PAGE`] a page; a small set comes
//! whole), and a page's jobs are read in one round trip (their outcome in the
//! batch, and their record in each queue).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{Markup, html};
use serde::Deserialize;

use super::App;
use super::data::{MAX_PER_PAGE, PER_PAGE, preview};
use super::pages::{Ctx, Error, Page, PageQuery, ago, ctx, layout, pager, progress, uri_of};
use crate::batch::{BatchStatus, CallbackStatus};
use crate::queue::Conn;
use crate::queue::keys::{self, BatchKeys, QueueKeys};

/// Characters of a description shown in the list (the batch's page shows all).
pub const DESCRIPTION_PREVIEW: usize = 120;

/// One row of the list: a batch id from the index, and the batch (none when
/// its keys are gone).
#[derive(Clone, Debug)]
pub struct Listed {
    /// The batch id.
    pub id: String,
    /// Created, ms since the epoch (the index's score).
    pub created_ms: u64,
    /// The batch, as `stoker batch status` reads it.
    pub status: Option<BatchStatus>,
}

/// One page of the list.
#[derive(Clone, Debug)]
pub struct List {
    /// The batches on this page, newest first.
    pub rows: Vec<Listed>,
    /// Batches in the index.
    pub total: u64,
    /// The page number, from 1.
    pub page: usize,
    /// Rows per page.
    pub per: usize,
}

impl List {
    /// How many pages the index fills (at least 1).
    pub fn pages(&self) -> usize {
        (self.total as usize).div_ceil(self.per).max(1)
    }
}

/// Reads page `page` (from 1) of the batch index, `per` rows a page: two
/// round trips.
pub async fn list(conn: &mut Conn, page: usize, per: usize) -> redis::RedisResult<List> {
    let per = per.clamp(1, MAX_PER_PAGE);
    let page = page.max(1);
    let start = ((page - 1) * per) as isize;
    let (total, ids): (u64, Vec<(String, f64)>) = redis::pipe()
        .zcard(keys::batches())
        .zrevrange_withscores(keys::batches(), start, start + per as isize - 1)
        .query_async(conn)
        .await?;
    let names: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    let statuses = crate::batch::statuses(conn, &names).await?;
    let rows = ids
        .into_iter()
        .zip(statuses)
        .map(|((id, score), status)| Listed {
            id,
            created_ms: score as u64,
            status,
        })
        .collect();
    Ok(List {
        rows,
        total,
        page,
        per,
    })
}

/// Which of a batch's members a page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Every job.
    All,
    /// Its done jobs.
    Done,
    /// Its dead jobs.
    Dead,
}

impl Show {
    /// Every choice, in the order the tabs show them.
    pub const ALL: [Show; 3] = [Show::All, Show::Done, Show::Dead];

    /// Its name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Show::All => "all",
            Show::Done => "done",
            Show::Dead => "dead",
        }
    }

    /// Parses a name from a URL.
    pub fn parse(s: &str) -> Option<Show> {
        Show::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where a member stands in its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Neither done nor dead (as applied to the batch so far).
    Pending,
    /// Done.
    Done,
    /// Dead.
    Dead,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Done => "done",
            Outcome::Dead => "dead",
        }
    }
}

/// One job of a batch.
#[derive(Clone, Debug)]
pub struct Member {
    /// The job id.
    pub id: String,
    /// Its outcome in the batch.
    pub outcome: Outcome,
    /// The queue holding its record, and the record's class and state; none
    /// when the record is gone (done records are kept 24 h).
    pub record: Option<(String, String, String)>,
}

/// One page of a batch's members.
#[derive(Clone, Debug)]
pub struct Members {
    /// The jobs on this page, by id.
    pub rows: Vec<Member>,
    /// The cursor of the next page; 0 when this is the last.
    pub next: u64,
}

/// Reads a page of batch `b`'s members (`show`), from `cursor` (0: the
/// first page): two round trips.
pub async fn members(
    conn: &mut Conn,
    b: &BatchKeys,
    show: Show,
    cursor: u64,
    per: usize,
) -> redis::RedisResult<Members> {
    let set = match show {
        Show::All => b.jobs(),
        Show::Done => b.done(),
        Show::Dead => b.dead(),
    };
    let ((next, mut ids), mut queues): ((u64, Vec<String>), Vec<String>) = redis::pipe()
        .cmd("SSCAN")
        .arg(&set)
        .arg(cursor)
        .arg("COUNT")
        .arg(per.clamp(1, MAX_PER_PAGE))
        .smembers(keys::queues())
        .query_async(conn)
        .await?;
    ids.sort();
    ids.dedup();
    queues.sort();
    if ids.is_empty() {
        return Ok(Members {
            rows: Vec::new(),
            next,
        });
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.sismember(b.done(), id).sismember(b.dead(), id);
        for q in &queues {
            pipe.cmd("HMGET")
                .arg(QueueKeys::new(q).job(id))
                .arg(&["class", "state"]);
        }
    }
    let mut replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    replies.reverse();
    let mut take = || replies.pop().unwrap_or(redis::Value::Nil);
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let done: bool = redis::from_redis_value(take()).unwrap_or(false);
        let dead: bool = redis::from_redis_value(take()).unwrap_or(false);
        let mut record = None;
        for q in &queues {
            let (class, state): (Option<String>, Option<String>) =
                redis::from_redis_value(take()).unwrap_or((None, None));
            if record.is_none() && (class.is_some() || state.is_some()) {
                record = Some((
                    q.clone(),
                    class.unwrap_or_default(),
                    state.unwrap_or_default(),
                ));
            }
        }
        let outcome = if done {
            Outcome::Done
        } else if dead {
            Outcome::Dead
        } else {
            Outcome::Pending
        };
        rows.push(Member {
            id,
            outcome,
            record,
        });
    }
    Ok(Members { rows, next })
}

/// `GET /batches?page=N&per=M`.
pub(super) async fn batch_list(
    State(app): State<Arc<App>>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let list = list(
        &mut app.conn.clone(),
        q.page.unwrap_or(1),
        q.per.unwrap_or(PER_PAGE),
    )
    .await?;
    Ok(Html(list_page(&ctx, &list).into_string()))
}

/// A page of a batch's members: `?show=S&cursor=C&per=M`.
#[derive(Deserialize)]
pub(super) struct MembersQuery {
    show: Option<String>,
    cursor: Option<u64>,
    per: Option<usize>,
}

/// `GET /batches/{id}?show=S&cursor=C&per=M`.
pub(super) async fn batch(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<MembersQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let show = q.show.as_deref().unwrap_or("all");
    let show = Show::parse(show).ok_or_else(|| {
        Error::NotFound(format!(
            "no list `{show}` of a batch's jobs: all, done or dead"
        ))
    })?;
    let mut conn = app.conn.clone();
    let status = crate::batch::status(&mut conn, &id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "no batch `{id}` (a finished batch is kept 30 days)"
        ))
    })?;
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let cursor = q.cursor.unwrap_or(0);
    let members = members(
        &mut conn,
        &crate::queue::keys::BatchKeys::new(&status.id),
        show,
        cursor,
        q.per.unwrap_or(PER_PAGE),
    )
    .await?;
    Ok(Html(
        batch_page(&ctx, &status, show, cursor, &members).into_string(),
    ))
}

/// The list of batches.
pub fn list_page(ctx: &Ctx, list: &List) -> Markup {
    let body = html! {
        p { (list.total) @if list.total == 1 { " batch" } @else { " batches" } " of the last " (crate::batch::INDEXED_FOR.as_secs() / 86_400) " days, newest first · page " (list.page) " of " (list.pages()) }
        table #batches {
            thead { tr {
                th { "Batch" } th { "Description" } th { "Created" } th.n { "Jobs" } th.n { "Pending" }
                th.n { "Done" } th.n { "Dead" } th { "Finished" } th { "Callbacks" }
            } }
            tbody {
                @for row in &list.rows {
                    tr {
                        td { a href={ "/batches/" (row.id) } { (row.id) } }
                        @match &row.status {
                            Some(s) => {
                                td { (s.description.as_deref().map_or(String::new(), |d| preview(d, DESCRIPTION_PREVIEW))) }
                                td { (ago(ctx.now_ms, s.created_at_ms.unwrap_or(row.created_ms))) }
                                td.n { (s.total) }
                                td.n { (s.pending) }
                                td.n { (s.done) }
                                td.n { (s.dead) }
                                td { (finished(s)) }
                                td { (callbacks(ctx, s)) }
                            }
                            None => {
                                td {}
                                td { (ago(ctx.now_ms, row.created_ms)) }
                                td colspan="6" { span.badge { "expired" } " its keys are gone" }
                            }
                        }
                    }
                }
            }
        }
        (pager("/batches", list.page, list.pages(), list.per))
    };
    layout(ctx, "Batches", body)
}

/// A progress bar of the finished jobs, or why the batch cannot finish.
fn finished(s: &BatchStatus) -> Markup {
    html! {
        @if !s.sealed {
            span.badge.dead title="its creation did not finish: it never fires" { "not sealed" }
        } @else {
            (progress(Some((s.done + s.dead, Some(s.total)))))
        }
    }
}

/// Each callback: its class, and when it fired, with a link to its job.
fn callbacks(ctx: &Ctx, s: &BatchStatus) -> Markup {
    html! {
        @if s.on_success.is_none() && s.on_complete.is_none() { "none" }
        @for (name, cb) in [("on_success", &s.on_success), ("on_complete", &s.on_complete)] {
            @if let Some(cb) = cb {
                div.callback {
                    code { (name) } " " (cb.class) " "
                    (fired(ctx, cb))
                }
            }
        }
    }
}

fn fired(ctx: &Ctx, cb: &CallbackStatus) -> Markup {
    html! {
        @match cb.fired_at_ms {
            Some(at) => {
                span.badge.done { "fired" } " " (ago(ctx.now_ms, at)) " "
                a href={ "/jobs/" (cb.job_id) "?queue=" (cb.queue) } { "job" }
                @if !cb.enqueued { " (being enqueued)" }
            }
            None => span.badge { "not fired" },
        }
    }
}

/// One batch, and a page of its members.
pub fn batch_page(
    ctx: &Ctx,
    s: &BatchStatus,
    show: Show,
    cursor: u64,
    members: &Members,
) -> Markup {
    let base = format!("/batches/{}", s.id);
    let body = html! {
        table.fields #batch {
            @if let Some(d) = &s.description { tr { th { "Description" } td #description { (d) } } }
            tr { th { "Created" } td { (s.created_at_ms.map_or("-".into(), |t| ago(ctx.now_ms, t))) } }
            @if let Some(p) = &s.parent { tr { th { "Created by" } td { a href={ "/jobs/" (p) } { (p) } } } }
            tr { th { "Jobs" } td #counts { (s.total) " total, " (s.pending) " pending, " (s.done) " done, " (s.dead) " dead" } }
            tr { th { "Finished" } td { (finished(s)) } }
            @for (name, cb) in [("on_success", &s.on_success), ("on_complete", &s.on_complete)] {
                @if let Some(cb) = cb {
                    tr { th { (name) } td { (cb.class) " (job " code { (cb.job_id) } ") " (fired(ctx, cb)) } }
                }
            }
        }
        h2 { "Jobs" }
        nav.tabs {
            @for v in Show::ALL {
                a.current[v == show] href={ (base) "?show=" (v.as_str()) } { (v.as_str()) }
            }
        }
        p.hint { "In no particular order, about " (PER_PAGE) " a page (a small batch comes whole)." }
        table #members {
            thead { tr { th { "Job" } th { "In the batch" } th { "Class" } th { "Queue" } th { "State" } } }
            tbody {
                @for m in &members.rows {
                    tr {
                        @match &m.record {
                            Some((queue, class, state)) => {
                                td { a href={ "/jobs/" (m.id) "?queue=" (queue) } { (m.id) } }
                                td { span class={ "badge " (m.outcome.as_str()) } { (m.outcome.as_str()) } }
                                td { (class) }
                                td { (queue) }
                                td { (state) }
                            }
                            None => {
                                td { (m.id) }
                                td { span class={ "badge " (m.outcome.as_str()) } { (m.outcome.as_str()) } }
                                td colspan="3" { "record expired (done jobs are kept 24 h)" }
                            }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if cursor != 0 {
                a href={ (base) "?show=" (show.as_str()) } { "« first" }
            }
            @if members.next != 0 {
                a rel="next" href={ (base) "?show=" (show.as_str()) "&cursor=" (members.next) } { "next ›" }
            }
        }
    };
    layout(ctx, &format!("Batch {}", s.id), body)
}
