//! One job's page: its record (state, timings, args, result, error, log),
//! its failed attempts, what its last attempt used against its class's
//! limits, and its checkpoints.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::App;
use super::pages::{
    Ctx, Error, Page, action, ago, ctx, duration, layout, login_hint, progress, uri_of,
};
use crate::registry::Class;
use crate::render::bytes;

/// `?queue=Q`: where the job is, to read it without a search.
#[derive(Deserialize)]
pub(super) struct JobQuery {
    queue: Option<String>,
}

/// `GET /jobs/{id}?queue=Q`.
pub(super) async fn job(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let mut conn = app.conn.clone();
    let record = match q
        .queue
        .filter(|q| crate::job::check_name("queue", q).is_ok())
    {
        Some(queue) if crate::job::check_id(&id).is_ok() => {
            let fields: std::collections::HashMap<String, String> = redis::AsyncCommands::hgetall(
                &mut conn,
                crate::queue::keys::QueueKeys::new(&queue).job(&id),
            )
            .await?;
            (!fields.is_empty()).then_some(crate::inspect::JobRecord { queue, fields })
        }
        _ => crate::inspect::find_job(&mut conn, &id).await?,
    };
    let record = record.ok_or_else(|| {
        Error::NotFound(format!(
            "no job `{id}` (done jobs are kept 24 h, dead ones 180 days)"
        ))
    })?;
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let doc = record.to_json();
    let class = match doc["class"].as_str() {
        Some(c) => crate::registry::class(&mut conn, c).await?,
        None => None,
    };
    let dead = record.state() == Some(crate::job::State::Dead);
    let member = dead.then_some(id.as_str());
    Ok(Html(
        job_page(&ctx, &doc, class.as_ref(), member).into_string(),
    ))
}

/// A job's page, from its `stoker job --json` document and its class.
pub fn job_page(
    ctx: &Ctx,
    doc: &Value,
    class: Option<&Class>,
    dead_member: Option<&str>,
) -> Markup {
    let id = doc["id"].as_str().unwrap_or("");
    let queue = doc["queue"].as_str().unwrap_or("");
    let state = doc["state"].as_str().unwrap_or("unknown");
    let t = &doc["timings"];
    let time = |v: &Value| v.as_u64().map_or("-".into(), |ms| ago(ctx.now_ms, ms));
    let latency = match (t["started_at_ms"].as_u64(), t["due_at_ms"].as_u64()) {
        (Some(s), Some(d)) => Some(s.saturating_sub(d)),
        _ => None,
    };
    let limits = class.map(|c| &c.limits);
    let body = html! {
        p.state {
            span class={ "badge " (state) } #state { (state) }
            @if let Some(member) = dead_member {
                " " (action(ctx, &format!("/queues/{queue}/dead/retry"), "Retry now", &[("member", member)], None))
                " " (action(ctx, &format!("/queues/{queue}/dead/delete"), "Delete", &[("member", member)], Some("Delete this job?")))
            }
        }
        (login_hint(ctx))
        table.fields {
            tr { th { "Class" } td { (doc["class"].as_str().unwrap_or("-")) } }
            tr { th { "Queue" } td { a href={ "/queues/" (queue) "/pending" } { (queue) } } }
            tr { th { "Attempts" } td { (doc["attempts"]) " (failed " (doc["retry_count"]) ", recovered " (doc["recovered"]) ")" } }
            @if let Some(p) = doc["parent"].as_str() { tr { th { "Parent" } td { a href={ "/jobs/" (p) } { (p) } } } }
            @if let Some(b) = doc["batch"].as_str() { tr { th { "Batch" } td { a href={ "/batches/" (b) } { (b) } } } }
            @if let Some(w) = doc["worker"].as_str() { tr { th { "Worker" } td { (w) } } }
            @if let Some(d) = doc["module_digest"].as_str() { tr { th { "Module" } td { code { "sha256:" (d) } } } }
            tr { th { "Enqueued" } td { (time(&t["enqueued_at_ms"])) } }
            tr { th { "Due" } td { (time(&t["due_at_ms"])) } }
            tr { th { "Started" } td { (time(&t["started_at_ms"])) } }
            tr { th { "Finished" } td { (time(&t["finished_at_ms"])) } }
            @if let Some(by) = doc["collapsed_by"].as_str() { tr { th { "Collapsed by" } td { a href={ "/jobs/" (by) "?queue=" (queue) } { (by) } } } }
            @if let Some(n) = doc["parked"].as_u64() { tr { th { "Parked" } td { (n) " times" @if let Some(b) = doc["parked_by"].as_str() { " (last by " (b) ")" } } } }
        }
        h2 { "Args" }
        pre #args { (pretty(&doc["args"])) }
        @if !doc["result"].is_null() {
            h2 { "Result" }
            pre #result { (pretty(&doc["result"])) }
        }
        @if let Some(e) = doc["error"].as_object() {
            h2 { "Error" }
            p #error { b { (e.get("kind").and_then(Value::as_str).unwrap_or("")) } ": " (e.get("message").and_then(Value::as_str).unwrap_or("")) }
            @if let Some(bt) = e.get("backtrace").and_then(Value::as_str) {
                h3 { "Guest backtrace" }
                pre #backtrace { (bt) }
            }
        }
        (failures(ctx, &doc["failures"]))
        h2 { "Measured (last attempt)" }
        table.fields #measured {
            tr { th {} th { "used" } th { "class limit" } }
            tr { th { "Run time" } td { (us(&t["run_time_us"])) } td { (limits.map_or("-".into(), |l| duration(l.timeout_ms))) } }
            tr { th { "CPU time" } td { (us(&doc["cpu_time_us"])) } td { (limits.map_or("-".into(), |l| duration(l.cpu_ms))) } }
            tr { th { "Fuel" } td { (doc["fuel_used"].as_u64().map_or("-".into(), |f| f.to_string())) } td { (limits.and_then(|l| l.fuel).map_or("-".into(), |f| f.to_string())) } }
            tr { th { "Peak memory" } td { (doc["peak_memory_bytes"].as_u64().map_or("-".into(), bytes)) } td { (limits.map_or("-".into(), |l| bytes(l.memory_bytes))) } }
            tr { th { "Snapshot" } td { (doc["checkpoint"]["snapshot_bytes"].as_u64().map_or("-".into(), bytes)) } td { (limits.map_or("-".into(), |l| format!("{} state", bytes(l.retained_bytes)))) } }
            tr { th { "Queue latency" } td { (latency.map_or("-".into(), duration)) } td {} }
            @let calls = &doc["host_calls"];
            tr { th { "Host calls" } td colspan="2" {
                @if calls.is_null() { "-" } @else {
                    "HTTP " (calls["http"]) " (refused " (calls["http_refused"]) ", waited " (us(&calls["limiter_wait_us"])) " for limiters), Redis " (calls["redis"]) ", jobs enqueued " (calls["enqueued"].as_u64().unwrap_or(0))
                }
            } }
        }
        @let cp = &doc["checkpoint"];
        @if !cp.is_null() {
            h2 { "Checkpoints" }
            table.fields #checkpoint {
                tr { th { "Sequence" } td { (cp["seq"]) } }
                tr { th { "Last at" } td { (time(&cp["at_ms"])) } }
                tr { th { "State" } td { (cp["state_bytes"].as_u64().map_or("-".into(), bytes)) } }
                tr { th { "Resumed" } td { (cp["resumed"]) " times" } }
                @if !cp["progress"].is_null() {
                    tr { th { "Progress" } td { (progress(Some((cp["progress"]["done"].as_u64().unwrap_or(0), cp["progress"]["total"].as_u64())))) } }
                }
            }
        }
        h2 { "Log" }
        @match doc["log"].as_str() {
            Some(log) => pre #log { (log) },
            None => p { "(empty)" },
        }
    };
    layout(ctx, &format!("Job {id}"), body)
}

/// The failed attempts kept on a job's record, oldest first, each with what
/// it used and its guest backtrace folded away.
fn failures(ctx: &Ctx, value: &Value) -> Markup {
    let Some(list) = value.as_array().filter(|l| !l.is_empty()) else {
        return html! {};
    };
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    html! {
        h2 { "Failed attempts" }
        table #failures {
            thead { tr {
                th.n { "Attempt" } th { "When" } th { "Kind" } th { "Message" }
                th.n { "CPU time" } th.n { "Peak memory" } th.n { "Run time" }
            } }
            tbody {
                @for f in list {
                    @let usage = &f["usage"];
                    tr {
                        td.n { (f["attempt"]) }
                        td.n { (f["at_ms"].as_u64().map_or("-".into(), |ms| ago(ctx.now_ms, ms))) }
                        td { b { (text(&f["kind"])) } }
                        td {
                            (text(&f["message"]))
                            @if let Some(bt) = f["backtrace"].as_str() {
                                details { summary { "Guest backtrace" } pre { (bt) } }
                            }
                        }
                        td.n { (us(&usage["cpu_time_us"])) }
                        td.n { (usage["peak_memory_bytes"].as_u64().map_or("-".into(), bytes)) }
                        td.n { (us(&usage["run_time_us"])) }
                    }
                }
            }
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn us(v: &Value) -> String {
    match v.as_u64() {
        Some(us) if us < 10_000 => format!("{:.2} ms", us as f64 / 1e3),
        Some(us) => duration(us / 1000),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped() {
        let ctx = Ctx {
            csrf: Some("t\"><script>".into()),
            here: "/x?a=\"<b>".into(),
            now_ms: 0,
        };
        let doc = serde_json::json!({
            "id": "j1", "queue": "default", "state": "dead", "class": "c",
            "args": {"x": "<script>alert(1)</script>"},
            "log": "</pre><img src=x onerror=alert(1)>",
            "error": {"kind": "job_error", "message": "<b>bold</b>", "backtrace": "<i>"},
            "timings": {}, "checkpoint": null, "host_calls": null,
            "failures": [{
                "attempt": 1, "at_ms": 0, "kind": "<u>trap", "message": "<script>alert(2)</script>",
                "backtrace": "</pre><svg onload=alert(3)>", "usage": {"cpu_time_us": 1500},
            }],
        });
        let page = job_page(&ctx, &doc, None, Some("j1\"<")).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(!page.contains("<b>bold"), "{page}");
        assert!(page.contains("Failed attempts"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(2)"), "{page}");
        assert!(page.contains("<details><summary>Guest backtrace"), "{page}");
        assert!(page.contains("<td class=\"n\">1.50 ms</td>"), "{page}");
        assert!(!page.contains("<svg") && !page.contains("<u>"), "{page}");
        assert!(!page.contains("t\"><script>"), "{page}");
        assert!(!page.contains("j1\"<"), "{page}");
        // The page's only script is the dashboard's own file.
        assert_eq!(page.matches("<script").count(), 1, "{page}");
    }
}
