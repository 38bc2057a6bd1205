//! A job's record for people (`stoker job`).

use std::time::Duration;

use super::JobRecord;
use crate::job::{FailedAttempt, State};
use crate::render::bytes;

impl JobRecord {
    /// The record for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
        let dash = || "-".to_owned();
        line("id", self.get("id").map_or_else(dash, str::to_owned));
        line("class", self.get("class").map_or_else(dash, str::to_owned));
        line("queue", self.queue.clone());
        line("state", self.get("state").map_or_else(dash, str::to_owned));
        line(
            "attempts",
            format!(
                "{} (failed {}, recovered {})",
                self.num("attempts").unwrap_or(0),
                self.num("retry_count").unwrap_or(0),
                self.num("recovered").unwrap_or(0)
            ),
        );
        if let Some(p) = self.get("parent") {
            line("parent", p.to_owned());
        }
        if let Some(b) = self.get("batch") {
            line("batch", b.to_owned());
        }
        if let Some(seq) = self.num("seq") {
            let mut text = format!(
                "{seq} (snapshot {}, state {}), resumed {} times",
                bytes(self.num("snapshot_bytes").unwrap_or(0)),
                bytes(self.num("state_bytes").unwrap_or(0)),
                self.num("resumed").unwrap_or(0)
            );
            if self.state() == Some(State::Done) {
                text = format!(
                    "{seq} commits, resumed {} times",
                    self.num("resumed").unwrap_or(0)
                );
            }
            line("checkpoint", text);
        }
        if let Some((done, total)) = self
            .progress()
            .filter(|_| self.state() != Some(State::Done))
        {
            let text = match total {
                Some(t) if t > 0 => format!("{done}/{t} ({:.1}%)", 100.0 * done as f64 / t as f64),
                _ => done.to_string(),
            };
            line("progress", text);
        }
        line("args", self.get("args").map_or_else(dash, str::to_owned));
        if let Some(r) = self.get("result") {
            line("result", r.to_owned());
        }
        if let Some(kind) = self.get("error_kind") {
            line(
                "error",
                format!("{kind}: {}", self.get("error_message").unwrap_or("")),
            );
        }
        if let Some(d) = self.get("digest") {
            line("module", format!("sha256:{d}"));
        }
        if let Some(m) = self.measured() {
            line(
                "used",
                format!(
                    "cpu {:.2} ms, fuel {}, peak memory {}, run time {:.2} ms",
                    m.cpu_us as f64 / 1e3,
                    m.fuel,
                    bytes(m.peak),
                    m.run_us as f64 / 1e3
                ),
            );
            if m.http + m.redis > 0 {
                line(
                    "calls",
                    format!(
                        "http {} (refused {}, waited {:.1} ms for limiters), redis {}",
                        m.http,
                        m.http_refused,
                        m.wait_us as f64 / 1e3,
                        m.redis
                    ),
                );
            }
        }
        if let Some(bt) = self.get("backtrace") {
            out.push_str("backtrace:\n");
            for l in bt.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
        let failures = self.failures();
        if !failures.is_empty() {
            out.push_str("failed attempts:\n");
            for f in &failures {
                out.push_str(&format!("  {}\n", failure_line(f)));
            }
        }
        if let Some(log) = self.get("log") {
            out.push_str("log:\n");
            for l in log.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }
}

/// A failed attempt in one line: number, time (UTC), kind, the message's
/// first line (shortened), and what it used.
fn failure_line(f: &FailedAttempt) -> String {
    // The record is not trusted: a time past what RFC 3339 can write (the
    // year 9999) would make the formatter fail.
    let at = if f.at_ms < 253_402_300_800_000 {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(f.at_ms);
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        "-".to_owned()
    };
    let first = f.message.lines().next().unwrap_or("");
    let mut message = crate::job::truncate(first, 100).to_owned();
    if message.len() < f.message.len() {
        message.push('…');
    }
    let mut line = format!("#{} {at} {}: {message}", f.attempt, f.kind);
    if let Some(m) = f.measured {
        line.push_str(&format!(
            " (cpu {:.2} ms, peak memory {}, run time {:.2} ms)",
            m.cpu_us as f64 / 1e3,
            bytes(m.peak),
            m.run_us as f64 / 1e3
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn failed_attempts_are_shown_oldest_first() {
        let usage = r#"{\"fuel\":7,\"cpu_us\":1500,\"peak\":65536,\"run_us\":2000}"#;
        let failures = format!(
            r#"[{{"attempt":1,"at_ms":0,"kind":"job_error","message":"first\nsecond","backtrace":"","usage":"{usage}"}},
                {{"attempt":2,"at_ms":1000,"kind":"trap","message":"boom","backtrace":"at f"}}]"#
        );
        let mut r = JobRecord {
            queue: "default".into(),
            fields: HashMap::from([
                ("state".to_owned(), "done".to_owned()),
                ("failures".to_owned(), failures),
            ]),
        };
        let doc = r.to_json();
        let f = &doc["failures"];
        assert_eq!((&f[0]["attempt"], &f[1]["attempt"]), (&json!(1), &json!(2)));
        assert_eq!(f[0]["usage"]["fuel_used"], 7, "{doc}");
        assert_eq!(f[0]["usage"]["host_calls"]["http"], 0, "{doc}");
        assert_eq!(
            (&f[0]["backtrace"], &f[1]["backtrace"]),
            (&Value::Null, &json!("at f"))
        );
        assert_eq!(f[1]["usage"], Value::Null);
        let text = r.render();
        assert!(
            text.contains(
                "failed attempts:\n  #1 1970-01-01T00:00:00Z job_error: first… (cpu 1.50 ms, \
                 peak memory 64.0 KiB, run time 2.00 ms)\n  #2 1970-01-01T00:00:01Z trap: boom\n"
            ),
            "{text}"
        );
        r.fields.insert(
            "failures".into(),
            r#"[{"attempt":3,"at_ms":1e300,"kind":"trap"}]"#.into(),
        );
        assert!(r.render().contains("  #3 - trap: \n"), "{}", r.render());
        r.fields.insert("failures".into(), "not json".into());
        assert_eq!(r.to_json()["failures"], json!([]));
        assert!(!r.render().contains("failed attempts"));
    }
}
