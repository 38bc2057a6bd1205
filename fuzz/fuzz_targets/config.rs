//! The `stoker.toml` parser (`Manifest::parse`).
//!
//! Inputs are raw text or manifests assembled from the real keys with
//! arbitrary values (durations and sizes at their extremes, cron fields,
//! quiet windows, origins, profiles). Checks: parsing never panics; a
//! manifest it accepts has classes whose limits, schedule, quiet hours,
//! retry policy and HTTP access all read back without error and within their
//! documented ranges; a refusal names the line at fault.
#![no_main]

use std::fmt::Write;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use stoker::config::{MAX_MEMORY, Manifest};

const UNITS: &[&str] = &[
    "ms", "s", "m", "h", "d", "us", "ns", "w", "y", " s", "", "min",
];
const SIZE_UNITS: &[&str] = &[
    "", "B", "KiB", "MiB", "GiB", "KB", "kB", "MB", "GB", " MiB", "TiB",
];
const NAMES: &[&str] = &[
    "a", "b", "hello", "x.y", "a-b_c", "", "a b", "stoker", "q:1",
];
const ORIGINS: &[&str] = &[
    "https://api.example.com",
    "http://10.0.0.1:8080",
    "https://[::1]:443",
    "http://a@b",
    "https://x.com/",
    "ftp://x",
    "https://[fe80::1",
    "https://host:99999",
    "http://169.254.169.254",
];
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Nowhere/City",
    "",
];
const PROFILES: &[&str] = &["realtime", "standard", "bulk", "turbo"];
const KINDS: &[&str] = &["concurrent", "rate", "window", "leaky"];

fn number(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.int_in_range(0..=10)?,
        1 => u.int_in_range(0..=100_000)?,
        2 => u64::MAX - u.int_in_range(0..=10)?,
        _ => u.arbitrary()?,
    })
}

fn duration(u: &mut Unstructured<'_>) -> Result<String> {
    let n = number(u)?;
    let unit = u.choose(UNITS)?;
    Ok(match u.int_in_range(0..=5)? {
        0 => format!("\"{n}{unit} {}{}\"", number(u)?, u.choose(UNITS)?),
        1 => n.to_string(),
        _ => format!("\"{n}{unit}\""),
    })
}

fn size(u: &mut Unstructured<'_>) -> Result<String> {
    let n = number(u)?;
    Ok(match u.int_in_range(0..=2)? {
        0 => n.to_string(),
        _ => format!("\"{n}{}\"", u.choose(SIZE_UNITS)?),
    })
}

fn string(u: &mut Unstructured<'_>) -> Result<String> {
    let s: String = u.arbitrary()?;
    Ok(format!("{:?}", s))
}

fn strings(u: &mut Unstructured<'_>, from: &[&str]) -> Result<String> {
    let mut items = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        items.push(match u.ratio(1, 4)? {
            true => string(u)?,
            false => format!("{:?}", u.choose(from)?),
        });
    }
    Ok(format!("[{}]", items.join(", ")))
}

fn window(u: &mut Unstructured<'_>) -> Result<String> {
    let h = |u: &mut Unstructured<'_>| u.int_in_range(0..=25u32);
    let m = |u: &mut Unstructured<'_>| u.int_in_range(0..=61u32);
    Ok(format!(
        "{:02}:{:02}-{:02}:{:02}",
        h(u)?,
        m(u)?,
        h(u)?,
        m(u)?
    ))
}

fn cron(u: &mut Unstructured<'_>) -> Result<String> {
    const FIELDS: &[&str] = &[
        "*", "*/5", "0", "1-5", "59", "60", "MON", "1,2", "*/0", "L", "?",
    ];
    let n = u.int_in_range(4..=7)?;
    let mut f = Vec::new();
    for _ in 0..n {
        f.push(*u.choose(FIELDS)?);
    }
    Ok(format!("{:?}", f.join(" ")))
}

fn class_key(u: &mut Unstructured<'_>, out: &mut String) -> Result<()> {
    let line = match u.int_in_range(0..=24)? {
        0 => format!("queue = {:?}", u.choose(NAMES)?),
        1 => format!("cpu = {}", duration(u)?),
        2 => format!("fuel = {}", number(u)?),
        3 => format!("memory = {}", size(u)?),
        4 => format!("timeout = {}", duration(u)?),
        5 => format!("retry = {}", number(u)?),
        6 => format!("log = {}", size(u)?),
        7 => format!("retained = {}", size(u)?),
        8 => format!("max_slice = {}", duration(u)?),
        9 => format!(
            "redis = {{ read = {}, write = {}, ops = {}, ops_per_sec = {}, reply = {} }}",
            strings(u, &["app", "stoker", "stoker:x", "", "a:b"])?,
            strings(u, &["app", "stoker", "", "app:"])?,
            number(u)?,
            number(u)?,
            size(u)?
        ),
        10 => format!(
            "http = {{ allow = {}, timeout = {}, retries = {}, max_response = {} }}",
            strings(u, ORIGINS)?,
            duration(u)?,
            number(u)?,
            size(u)?
        ),
        11 => format!(
            "http = {{ allow = {}, connect_timeout = {}, first_byte_timeout = {}, max_request = {} }}",
            strings(u, ORIGINS)?,
            duration(u)?,
            duration(u)?,
            size(u)?
        ),
        12 => format!("limiters = {}", strings(u, NAMES)?),
        13 => format!("cron = {}", cron(u)?),
        14 => format!("every = {}", duration(u)?),
        15 => format!("timezone = {:?}", u.choose(ZONES)?),
        16 => format!("args = {{ n = {}, s = {} }}", number(u)?, string(u)?),
        17 => format!(
            "unique = {{ args = {}, until = {:?}, ttl = {} }}",
            strings(u, &["id", "a.b", ""])?,
            u.choose(&["start", "success", "never"])?,
            duration(u)?
        ),
        18 => format!(
            "collapse = {{ args = {}, ttl = {} }}",
            strings(u, &["id", ""])?,
            duration(u)?
        ),
        19 => format!("profile = {:?}", u.choose(PROFILES)?),
        20 => {
            let mut w = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                w.push(format!("{:?}", window(u)?));
            }
            format!("quiet = [{}]", w.join(", "))
        }
        21 => format!("idempotent = {}", u.arbitrary::<bool>()?),
        22 => format!("{} = {}", string(u)?, number(u)?),
        23 => format!("module = {}", string(u)?),
        _ => format!("memory = {}", number(u)?),
    };
    writeln!(out, "{line}").unwrap();
    Ok(())
}

fn manifest(u: &mut Unstructured<'_>) -> Result<String> {
    let mut out = String::new();
    for _ in 0..u.int_in_range(0..=2)? {
        writeln!(out, "[limiters.{:?}]", u.choose(NAMES)?).unwrap();
        writeln!(out, "kind = {:?}", u.choose(KINDS)?).unwrap();
        writeln!(out, "limit = {}", number(u)?).unwrap();
        for (key, on) in [("period", u.arbitrary()?), ("lock_timeout", u.arbitrary()?)] {
            if on {
                writeln!(out, "{key} = {}", duration(u)?).unwrap();
            }
        }
        if u.arbitrary()? {
            writeln!(out, "burst = {}", number(u)?).unwrap();
        }
        if u.arbitrary()? {
            writeln!(out, "wait_timeout = {}", duration(u)?).unwrap();
        }
    }
    for _ in 0..u.int_in_range(0..=2)? {
        writeln!(out, "[destinations.{:?}]", u.choose(ORIGINS)?).unwrap();
        writeln!(out, "limiters = {}", strings(u, NAMES)?).unwrap();
        if u.arbitrary()? {
            writeln!(
                out,
                "breaker = {{ failures = {}, cool_down = {} }}",
                number(u)?,
                duration(u)?
            )
            .unwrap();
        }
    }
    for _ in 0..u.int_in_range(1..=3)? {
        writeln!(out, "\n[classes.{:?}]", u.choose(NAMES)?).unwrap();
        if u.ratio(7, 8)? {
            writeln!(out, "module = \"a.wasm\"").unwrap();
        }
        for _ in 0..u.int_in_range(0..=6)? {
            class_key(u, &mut out)?;
        }
    }
    Ok(out)
}

fn check(text: &str) {
    match Manifest::parse(text) {
        Ok(m) => {
            for (name, class) in &m.classes {
                let limits = class.limits().expect("an accepted class has limits");
                assert!(
                    limits.cpu_ms >= 1 && limits.timeout_ms >= 1,
                    "{name}: {limits:?}"
                );
                assert!((64 << 10..=MAX_MEMORY).contains(&limits.memory_bytes));
                assert!(limits.retained_bytes >= 1);
                class.schedule().expect("an accepted class has a schedule");
                class.quiet().expect("an accepted class has quiet hours");
                let _ = class.retry_policy();
                m.http_access(class)
                    .expect("an accepted class has HTTP access");
            }
        }
        Err(e) => {
            assert!(!e.trim().is_empty(), "a refusal says why");
            assert!(
                e.contains("line "),
                "a refusal names its line: {e}\n--- input:\n{text}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((&0, rest)) = data.split_first() {
        // Raw text.
        if let Ok(text) = std::str::from_utf8(rest) {
            check(text);
        }
        return;
    }
    let mut u = Unstructured::new(data);
    if let Ok(text) = manifest(&mut u) {
        check(&text);
    }
});
