//! What is deployed: the classes, their quotas and what they were observed
//! to use; the limiters with their readings, and the HTTP destinations'
//! circuit breakers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{Markup, html};

use super::data::{self, LimiterReading};
use super::pages::{Ctx, Page, ctx, duration, layout};
use super::{App, REPORT_MINUTES};
use crate::config::{Limiter, LimiterKind};
use crate::inspect::Status;
use crate::registry::Class;
use crate::render::bytes;

/// `GET /classes`.
pub(super) async fn classes(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/classes".into()).await?;
    let mut list: Vec<_> = crate::registry::classes(&mut app.conn.clone())
        .await?
        .into_values()
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let report = crate::observe::report::report(&mut app.conn.clone(), REPORT_MINUTES).await?;
    Ok(Html(classes_page(&ctx, &list, &report).into_string()))
}

/// The deployed classes: their quotas, and what they were observed to use
/// over the last `minutes` minutes (the constraint report, from the
/// per-minute rollups), violations first.
pub fn classes_page(
    ctx: &Ctx,
    classes: &[Class],
    report: &crate::observe::report::Report,
) -> Markup {
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

/// `GET /limits`.
pub(super) async fn limits(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/limits".into()).await?;
    let mut conn = app.conn.clone();
    let status = crate::inspect::status(&mut conn).await?;
    let deployed = crate::registry::classes(&mut conn).await?;
    // Each limiter once, with the classes and destinations that use it.
    let mut by_name: std::collections::BTreeMap<String, (crate::config::Limiter, Vec<String>)> =
        Default::default();
    for c in deployed.values() {
        for l in &c.limiters {
            let e = by_name
                .entry(l.name.clone())
                .or_insert((l.clone(), Vec::new()));
            e.1.push(format!("class {}", c.name));
        }
        for d in &c.http.destinations {
            for l in &d.limiters {
                let e = by_name
                    .entry(l.name.clone())
                    .or_insert((l.clone(), Vec::new()));
                let user = format!("{}", d.origin);
                if !e.1.contains(&user) {
                    e.1.push(user);
                }
            }
        }
    }
    let limiters: Vec<_> = by_name.into_values().collect();
    let only: Vec<_> = limiters.iter().map(|(l, _)| l.clone()).collect();
    let readings = data::limiter_readings(&mut conn, &only).await?;
    Ok(Html(
        limits_page(&ctx, &limiters, &readings, &status).into_string(),
    ))
}

/// Limiters (with their readings now) and HTTP destinations' breakers.
pub fn limits_page(
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
