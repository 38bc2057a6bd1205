//! What every page shares: the request's context, the frame around a page,
//! its buttons and pager, a failed request as an error page, and how times
//! are written for people.
//!
//! Pages are `maud` templates: every value spliced into a page is
//! HTML-escaped by the template engine (job args, logs, error messages and
//! payloads are hostile input), and no page carries inline script or style, so
//! the Content-Security-Policy can forbid both.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::{App, session};
use crate::queue;

/// What every page needs to know about the request.
pub struct Ctx {
    /// The session's CSRF token, when a browser is logged in (forms are shown
    /// only then).
    pub csrf: Option<String>,
    /// The request's path and query: where an action sends the browser back.
    pub here: String,
    /// Redis time, ms since the epoch.
    pub now_ms: u64,
}

/// A page's request context.
pub(super) async fn ctx(app: &App, headers: &HeaderMap, here: String) -> Result<Ctx, Error> {
    let now_ms = queue::redis_now_ms(&mut app.conn.clone()).await?;
    Ok(Ctx {
        csrf: session(app, headers).map(|(_, s)| s.csrf),
        here,
        now_ms,
    })
}

/// A failed request, as a page.
pub(super) enum Error {
    Redis(redis::RedisError),
    NotFound(String),
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        Error::Redis(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Error::Redis(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis failed",
                e.to_string(),
            ),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            Error::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "Log in first", m),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m),
        };
        let ctx = Ctx {
            csrf: None,
            here: "/".into(),
            now_ms: 0,
        };
        (status, Html(error(&ctx, title, &message).into_string())).into_response()
    }
}

/// A page, or the page of what went wrong.
pub(super) type Page = Result<Html<String>, Error>;

/// The request's path and query, as a page's `here`.
pub(super) fn uri_of(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// A page of a paged list: `?page=N&per=M`.
#[derive(Deserialize)]
pub(super) struct PageQuery {
    pub(super) page: Option<usize>,
    pub(super) per: Option<usize>,
}

/// The frame around every page.
pub fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Stoker" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "Stoker" }
                        a href="/" { "Overview" }
                        a href="/busy" { "Busy" }
                        a href="/batches" { "Batches" }
                        a href="/classes" { "Classes" }
                        a href="/limits" { "Limits" }
                        span.grow {}
                        label.live { input #live type="checkbox"; " live" }
                        @if let Some(csrf) = &ctx.csrf {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Log out" }
                            }
                        } @else {
                            a href={ "/login?next=" (urlencode(&ctx.here)) } { "Log in" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A POST button carrying the CSRF token, or nothing when not logged in.
pub(super) fn action(
    ctx: &Ctx,
    path: &str,
    label: &str,
    fields: &[(&str, &str)],
    confirm: Option<&str>,
) -> Markup {
    html! {
        @if let Some(csrf) = &ctx.csrf {
            form.inline method="post" action=(path) data-confirm=[confirm] {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="back" value=(ctx.here);
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" { (label) }
            }
        }
    }
}

/// A link to log in, for the pages whose buttons need a session.
pub(super) fn login_hint(ctx: &Ctx) -> Markup {
    html! {
        @if ctx.csrf.is_none() {
            p.hint { a href={ "/login?next=" (urlencode(&ctx.here)) } { "Log in" } " with the dashboard token to retry, delete, pause or resume." }
        }
    }
}

/// Links to the first, previous, next and last of `pages` pages of `per` rows.
pub(super) fn pager(base: &str, page: usize, pages: usize, per: usize) -> Markup {
    let link = |n: usize| format!("{base}?page={n}&per={per}");
    html! {
        nav.pager {
            @if page > 1 {
                a href=(link(1)) { "« first" }
                a rel="prev" href=(link(page - 1)) { "‹ previous" }
            }
            span { "page " (page) " of " (pages) }
            @if page < pages {
                a rel="next" href=(link(page + 1)) { "next ›" }
                a href=(link(pages)) { "last »" }
            }
        }
    }
}

/// A job's progress: a bar when the total is known, else the count done.
pub(super) fn progress(p: Option<(u64, Option<u64>)>) -> Markup {
    html! {
        @match p {
            Some((done, Some(total))) if total > 0 => {
                progress value=(done.min(total)) max=(total) {}
                " " (done) "/" (total) " (" (format!("{:.1}", 100.0 * done as f64 / total as f64)) "%)"
            }
            Some((done, _)) => { (done) " done" }
            None => { "-" }
        }
    }
}

/// An error page.
pub fn error(ctx: &Ctx, title: &str, message: &str) -> Markup {
    layout(ctx, title, html! { p.error { (message) } })
}

/// The page of a path no route takes.
pub(super) async fn not_found() -> Error {
    Error::NotFound("no such page".into())
}

/// "3 s ago" / "in 5 min", by Redis time.
pub fn ago(now_ms: u64, t_ms: u64) -> String {
    if t_ms > now_ms {
        format!("in {}", duration(t_ms - now_ms))
    } else {
        format!("{} ago", duration(now_ms - t_ms))
    }
}

/// A duration in ms, for people: `850 ms`, `12.3 s`, `4 min`, `2 h 5 min`, `3 d`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..86_400_000 => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{} d {} h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(240_000), "4 min");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(ago(1000, 500), "500 ms ago");
        assert_eq!(ago(500, 1000), "in 500 ms");
        assert_eq!(urlencode("/q/a b?x=1&y"), "/q/a%20b%3Fx%3D1%26y");
    }
}
