//! What is happening now: the overview (totals, the throughput graph,
//! queues, workers with their heartbeat ages, schedules) and the jobs running
//! now.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{Markup, html};
use serde_json::Value;

use super::App;
use super::data::{self, Busy};
use super::graph::{self, History};
use super::pages::{Ctx, Page, action, ago, ctx, duration, layout, login_hint, progress};
use crate::inspect::Status;

/// `GET /`.
pub(super) async fn overview(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/".into()).await?;
    let mut conn = app.conn.clone();
    let status = crate::inspect::status(&mut conn).await?;
    let names: Vec<String> = status.queues.iter().map(|q| q.name.clone()).collect();
    let latencies = data::latencies(&mut conn, &names).await?;
    let classes: Vec<String> = status
        .classes
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let history = graph::history(&mut conn, &classes, ctx.now_ms).await?;
    let recent: Vec<Option<f64>> = names.iter().map(|q| app.samples.recent(q)).collect();
    Ok(Html(
        overview_page(&ctx, &status, &latencies, &history, &recent).into_string(),
    ))
}

/// The overview: totals, the throughput graph, queues, workers, schedules.
pub fn overview_page(
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

/// `GET /busy`.
pub(super) async fn busy(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/busy".into()).await?;
    let jobs = data::busy(&mut app.conn.clone()).await?;
    Ok(Html(busy_page(&ctx, &jobs).into_string()))
}

/// The jobs running now.
pub fn busy_page(ctx: &Ctx, jobs: &[Busy]) -> Markup {
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
