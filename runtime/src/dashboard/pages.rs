//! The pages, as `maud` templates: every value spliced into a page is
//! HTML-escaped by the template engine (job args, logs, error messages and
//! payloads are hostile input), and no page carries inline script or style, so
//! the Content-Security-Policy can forbid both.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::data::{Busy, LimiterReading, Page, Set};
use super::graph::{self, History};
use crate::config::{Limiter, LimiterKind};
use crate::inspect::{Status, bytes};
use crate::registry::Class;

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
fn action(
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

fn login_hint(ctx: &Ctx) -> Markup {
    html! {
        @if ctx.csrf.is_none() {
            p.hint { a href={ "/login?next=" (urlencode(&ctx.here)) } { "Log in" } " with the dashboard token to retry, delete, pause or resume." }
        }
    }
}

/// The overview: totals, the throughput graph, queues, workers, schedules.
pub fn overview(
    ctx: &Ctx,
    status: &Status,
    latencies: &[Option<u64>],
    history: &History,
    recent: &[Option<f64>],
) -> Markup {
    let processed: u64 = status.queues.iter().map(|q| q.processed).sum();
    let failed: u64 = status.queues.iter().map(|q| q.failed).sum();
    let pending: u64 = status.queues.iter().map(|q| q.pending).sum();
    let dead: u64 = status.queues.iter().map(|q| q.dead).sum();
    let (busy, slots) = status
        .workers
        .iter()
        .fold((0, 0), |(b, s), w| match &w.heartbeat {
            Some(h) => (
                b + h["busy"].as_u64().unwrap_or(0),
                s + h["concurrency"].as_u64().unwrap_or(0),
            ),
            None => (b, s),
        });
    let body = html! {
        section.totals {
            div { b { (processed) } span { "processed" } }
            div { b { (failed) } span { "failed" } }
            div { b { (pending) } span { "pending" } }
            div { b { (busy) "/" (slots) } span { "busy slots" } }
            div { b { (dead) } span { "dead" } }
        }
        (throughput(history))
        h2 { "Queues" }
        (login_hint(ctx))
        table #queues {
            thead { tr {
                th { "Queue" } th.n { "Pending" } th.n { "Latency" } th.n { "In flight" }
                th.n { "Scheduled" } th.n { "Retry" } th.n { "Dead" } th.n { "Processed" }
                th.n { "Failed" } th.n title="the last minute, sampled every 5 s by this dashboard" { "Jobs/s (1 min)" } th {}
            } }
            tbody {
                @for (i, q) in status.queues.iter().enumerate() {
                    @let base = format!("/queues/{}", q.name);
                    tr {
                        td {
                            a href={ (base) "/pending" } { (q.name) }
                            @if q.paused { " " span.badge.paused { "paused" } }
                        }
                        td.n { a href={ (base) "/pending" } { (q.pending) } }
                        td.n { (latencies.get(i).copied().flatten().map_or("-".into(), duration)) }
                        td.n { (q.in_flight) }
                        td.n { a href={ (base) "/scheduled" } { (q.scheduled) } }
                        td.n { a href={ (base) "/retry" } { (q.retry) } }
                        td.n { a href={ (base) "/dead" } { (q.dead) } }
                        td.n { (q.processed) }
                        td.n { (q.failed) }
                        td.n { (recent.get(i).copied().flatten().map_or("-".into(), |r| format!("{r:.1}"))) }
                        td {
                            @if q.paused {
                                (action(ctx, &format!("{base}/resume"), "Resume", &[], None))
                            } @else {
                                (action(ctx, &format!("{base}/pause"), "Pause", &[], Some("Pause this queue? Its running checkpointing jobs are asked to yield.")))
                            }
                        }
                    }
                }
            }
        }
        h2 { "Workers (" (status.workers.len()) ")" }
        table #workers {
            thead { tr { th { "Worker" } th { "Host" } th.n { "PID" } th { "Queues" } th { "Busy" } th.n { "Heartbeat" } } }
            tbody {
                @for w in &status.workers {
                    tr {
                        td { (w.id) }
                        @match &w.heartbeat {
                            Some(h) => {
                                td { (h["host"].as_str().unwrap_or("")) }
                                td.n { (h["pid"]) }
                                td { (queue_list(&h["queues"])) }
                                td {
                                    @let b = h["busy"].as_u64().unwrap_or(0);
                                    @let c = h["concurrency"].as_u64().unwrap_or(0);
                                    progress value=(b) max=(c.max(1)) {}
                                    " " (b) "/" (c)
                                }
                                td.n.beat { (w.heartbeat_age_ms.map_or("-".into(), |ms| format!("{} ago", duration(ms)))) }
                            }
                            None => {
                                td colspan="5" { span.badge.dead { "heartbeat expired" } " its jobs will be recovered" }
                            }
                        }
                    }
                }
            }
        }
        @if !status.schedules.is_empty() {
            h2 { "Schedules" }
            table {
                thead { tr { th { "Class" } th { "Schedule" } th { "Last tick" } th { "Next tick" } } }
                tbody {
                    @for s in &status.schedules {
                        tr {
                            td { (s.class) }
                            td { (s.schedule) }
                            td { (s.last_tick_ms.map_or("-".into(), |t| ago(ctx.now_ms, t))) }
                            td { (s.next_in_ms.map_or("-".into(), |ms| format!("in {}", duration(ms)))) }
                        }
                    }
                }
            }
        }
    };
    layout(ctx, "Overview", body)
}

fn queue_list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Jobs per minute over the last hour, all classes, from the rollups in
/// Redis: processed and failed lines. The counts are in the figure's `data-`
/// attributes too.
fn throughput(h: &History) -> Markup {
    let as_f64 = |v: &[u64]| v.iter().map(|n| *n as f64).collect::<Vec<f64>>();
    let (processed, failed) = (as_f64(&h.processed), as_f64(&h.failed));
    let peak = h
        .processed
        .iter()
        .chain(&h.failed)
        .copied()
        .max()
        .unwrap_or(0);
    let max = (peak as f64).max(1.0);
    let slots = graph::MINUTES as usize;
    let (w, ht) = (600.0, 100.0);
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let total = |v: &[u64]| v.iter().sum::<u64>();
    html! {
        figure.graph #throughput data-first-minute=(h.first_minute) data-processed=(list(&h.processed)) data-failed=(list(&h.failed)) {
            svg viewBox="0 0 600 100" preserveAspectRatio="none" role="img" aria-label={ "jobs per minute, last " (graph::MINUTES) " minutes" } {
                polyline.processed points=(graph::points(&processed, slots, max, w, ht)) fill="none" stroke="#2f7d32" stroke-width="2" {}
                polyline.failed points=(graph::points(&failed, slots, max, w, ht)) fill="none" stroke="#c62828" stroke-width="2" {}
            }
            div.axis { span { (graph::MINUTES) " min ago" } span { "now" } }
            figcaption {
                "Jobs per minute, last " (graph::MINUTES) " minutes (every deployed class, from the per-minute figures workers keep in Redis; the last minute is still filling): "
                span.processed { (total(&h.processed)) " processed" } " and " span.failed { (total(&h.failed)) " failed" }
                "; peak " (peak) "/min."
            }
        }
    }
}

/// The jobs running now.
pub fn busy(ctx: &Ctx, jobs: &[Busy]) -> Markup {
    let body = html! {
        p { (jobs.len()) " jobs running." }
        table #busy {
            thead { tr { th { "Job" } th { "Class" } th { "Queue" } th { "Worker" } th { "Started" } th.n { "Attempt" } th { "Progress" } th { "Args" } } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href={ "/jobs/" (j.id) "?queue=" (j.queue) } { (j.id) } }
                        td { (j.class) }
                        td { (j.queue) }
                        td { (j.worker) }
                        td { (j.started_ms.map_or("-".into(), |t| ago(ctx.now_ms, t))) }
                        td.n { (j.attempts) }
                        td { (progress(j.progress)) }
                        td { code { (j.args) } }
                    }
                }
            }
        }
    };
    layout(ctx, "Busy jobs", body)
}

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

/// One page of a queue's set.
pub fn set_page(ctx: &Ctx, queue: &str, set: Set, page: &Page, paused: bool) -> Markup {
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
                        td { @if let Some((kind, message)) = &r.error { b { (kind) } " " (super::data::preview(message, 120)) } }
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

/// A job's page, from its `stoker job --json` document and its class.
pub fn job(ctx: &Ctx, doc: &Value, class: Option<&Class>, dead_member: Option<&str>) -> Markup {
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

/// The deployed classes: their quotas, and what they were observed to use
/// over the last `minutes` minutes (the constraint report, from the
/// per-minute rollups), violations first.
pub fn classes(ctx: &Ctx, classes: &[Class], report: &crate::observe::report::Report) -> Markup {
    let observed: std::collections::HashMap<&str, &crate::observe::report::ClassReport> = report
        .classes
        .iter()
        .map(|r| (r.class.as_str(), r))
        .collect();
    // Sub-millisecond figures are common: two decimals below 10 ms.
    let ms = |v: f64| {
        if v < 10.0 {
            format!("{v:.2} ms")
        } else {
            duration(v.round() as u64)
        }
    };
    let spread = |s: Option<crate::observe::report::Spread>, f: &dyn Fn(f64) -> String| {
        s.map_or("-".to_owned(), |s| format!("{} / {}", f(s.p50), f(s.p99)))
    };
    let mem = |b: f64| bytes(b as u64);
    let body = html! {
        h2 { "Observed, last " (report.minutes) " minutes (p50 / p99)" }
        p.hint { "From the per-minute rollups every worker writes (no job records are read); the limit of each figure is in the quotas table below." }
        table #observed {
            thead { tr {
                th { "Class" } th.n { "Attempts" } th.n { "Per min" } th.n { "Done" } th.n { "Failed" } th.n { "Dead" }
                th.n { "Run time" } th.n { "CPU" } th.n { "Peak memory" } th.n { "Snapshot" } th.n { "Queue latency" } th { "Violations" }
            } }
            tbody {
                @for c in classes {
                    @if let Some(r) = observed.get(c.name.as_str()) {
                        tr.violating[!r.violations.is_empty()] {
                            td { (c.name) }
                            td.n { (r.attempts) }
                            td.n { (format!("{:.1}", r.rate_per_min)) }
                            td.n { (r.done) }
                            td.n { (r.failed) }
                            td.n { (r.dead) }
                            td.n { (spread(r.run_ms, &ms)) }
                            td.n { (spread(r.cpu_ms, &ms)) }
                            td.n { (spread(r.memory_bytes, &mem)) }
                            td.n { (spread(r.snapshot_bytes, &mem)) }
                            td.n { (spread(r.wait_ms, &ms)) }
                            td {
                                @if r.violations.is_empty() { "none" }
                                @else { ul.violations { @for v in &r.violations { li { (v) } } } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Quotas, as deployed" }
        table #classes {
            thead { tr {
                th { "Class" } th { "Queue" } th { "Module" } th { "Profile" } th.n { "CPU" } th.n { "Fuel" } th.n { "Memory" }
                th.n { "Timeout" } th.n { "State kept" } th.n { "Log" } th.n { "Slice" } th { "Retries" }
                th { "Limiters" } th { "Schedule" } th { "Quiet hours" } th { "Key rule" }
            } }
            tbody {
                @for c in classes {
                    @let l = &c.limits;
                    tr {
                        td { (c.name) }
                        td { a href={ "/queues/" (c.queue) "/pending" } { (c.queue) } }
                        td { code title=(c.digest) { (c.digest.get(..12).unwrap_or(&c.digest)) } }
                        td { (c.profile.map_or("-", |p| p.as_str())) }
                        td.n { (duration(l.cpu_ms)) }
                        td.n { (l.fuel.map_or("-".into(), |f| f.to_string())) }
                        td.n { (bytes(l.memory_bytes)) }
                        td.n { (duration(l.timeout_ms)) }
                        td.n { (bytes(l.retained_bytes)) }
                        td.n { (bytes(l.log_bytes)) }
                        td.n { (l.slice_ms.map_or("-".into(), duration)) }
                        td { (c.retry) " (" (c.retry_policy.describe()) ")" }
                        td { (c.limiters.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { @if let Some(s) = &c.schedule {
                            @if let Some(cron) = &s.cron { "cron " (cron) " (" (s.timezone) ")" }
                            @else if let Some(ms) = s.every_ms { "every " (duration(ms)) }
                        } }
                        td { @if let Some(q) = &c.quiet {
                            (q.windows.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ")) " " (q.timezone)
                        } }
                        td { @if c.unique.is_some() { "unique" } @else if c.collapse.is_some() { "collapse" } }
                    }
                }
            }
        }
    };
    layout(ctx, "Classes", body)
}

/// Limiters (with their readings now) and HTTP destinations' breakers.
pub fn limits(
    ctx: &Ctx,
    limiters: &[(Limiter, Vec<String>)],
    readings: &[LimiterReading],
    status: &Status,
) -> Markup {
    let body = html! {
        h2 { "Limiters" }
        table #limiters {
            thead { tr { th { "Limiter" } th { "Kind" } th { "Limit" } th { "Now" } th { "Used by" } } }
            tbody {
                @for ((l, users), r) in limiters.iter().zip(readings) {
                    tr {
                        td { (l.name) }
                        td { (match l.kind { LimiterKind::Concurrent => "concurrent", LimiterKind::Rate => "rate", LimiterKind::Window => "window" }) }
                        td { (match l.kind {
                            LimiterKind::Concurrent => format!("{} at once", l.limit),
                            LimiterKind::Rate => format!("{} per {} (burst {})", l.limit, duration(l.period_ms), l.burst),
                            LimiterKind::Window => format!("{} per {} window", l.limit, duration(l.period_ms)),
                        }) }
                        td { (match r {
                            LimiterReading::Holders(n) => format!("{n} holding"),
                            LimiterReading::InWindow(n) => format!("{n} this window"),
                            LimiterReading::AheadMs(0) => "idle".to_owned(),
                            LimiterReading::AheadMs(ms) => format!("booked {} ahead", duration(*ms)),
                        }) }
                        td { (users.join(", ")) }
                    }
                }
            }
        }
        h2 { "HTTP destinations and circuit breakers" }
        table #breakers {
            thead { tr { th { "Origin" } th { "Limiters" } th { "Breaker" } th.n { "Failures in a row" } th.n { "Opened" } } }
            tbody {
                @for d in &status.destinations {
                    tr {
                        td { (d.origin) }
                        td { (d.limiters.join(", ")) }
                        @match &d.breaker {
                            Some(b) => {
                                td { span class={ "badge " (b.state) } { (b.state) }
                                    @if b.state == "open" { " " (duration(b.open_for_ms)) " left" } }
                                td.n { (b.failures) }
                                td.n { (b.opened) }
                            }
                            None => { td { "none" } td.n { "-" } td.n { "-" } }
                        }
                    }
                }
            }
        }
    };
    layout(ctx, "Limiters and breakers", body)
}

/// The login form.
pub fn login(ctx: &Ctx, next: &str, failed: bool) -> Markup {
    let body = html! {
        @if failed { p.error { "That is not the dashboard token." } }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label { "Token " input type="password" name="token" autocomplete="current-password" autofocus; }
            button type="submit" { "Log in" }
        }
        p.hint { "The token is the one given to " code { "stoker dashboard --token" } " (or " code { "STOKER_DASHBOARD_TOKEN" } "); without one, the dashboard prints a fresh token when it starts." }
    };
    layout(ctx, "Log in", body)
}

/// An error page.
pub fn error(ctx: &Ctx, title: &str, message: &str) -> Markup {
    layout(ctx, title, html! { p.error { (message) } })
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
        let page = job(&ctx, &doc, None, Some("j1\"<")).into_string();
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
