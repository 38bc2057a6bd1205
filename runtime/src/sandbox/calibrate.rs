//! Measures what CPU metering costs, for the fuel-versus-epochs decision (see the
//! module docs of [`crate::sandbox`]): the same job run in engines that differ
//! only in how guest code is metered and interrupted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};

use super::YIELD_INTERVAL;
use super::state::JobState;
use crate::config::Limits;
use crate::wit::JobPre;

/// How guest code is metered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metering {
    /// Nothing: the baseline.
    None,
    /// Fuel, yielding every [`YIELD_INTERVAL`] units (what Stoker runs with).
    Fuel,
    /// Epoch interruption, a 1 ms tick, yielding at every tick.
    Epoch,
    /// Both.
    FuelAndEpoch,
}

impl Metering {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Metering::None => "none",
            Metering::Fuel => "fuel",
            Metering::Epoch => "epoch",
            Metering::FuelAndEpoch => "fuel+epoch",
        }
    }
}

/// Wall-clock time of each of `runs` attempts of the job in `wasm` with `args`,
/// instantiation included, under `metering`.
pub async fn time_runs(
    metering: Metering,
    wasm: &[u8],
    args: &str,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let fuel = matches!(metering, Metering::Fuel | Metering::FuelAndEpoch);
    let epoch = matches!(metering, Metering::Epoch | Metering::FuelAndEpoch);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(fuel)
        .epoch_interruption(epoch);
    let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut linker = Linker::new(&engine);
    super::state::link(&mut linker)?;
    let component = Component::new(&engine, wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pre = JobPre::new(
        linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    let ticking = Arc::new(AtomicBool::new(epoch));
    let ticker = {
        let (engine, ticking) = (engine.clone(), ticking.clone());
        std::thread::spawn(move || {
            while ticking.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                engine.increment_epoch();
            }
        })
    };
    let limits = Limits {
        memory_bytes: 1 << 30,
        ..Limits::default()
    };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut store = Store::new(&engine, JobState::new(&limits, None, Default::default()));
        if fuel {
            store
                .set_fuel(u64::MAX / 4)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store
                .fuel_async_yield_interval(Some(YIELD_INTERVAL))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        }
        let job = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        job.call_run(&mut store, args, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| anyhow::anyhow!("the job failed: {}", e.message))?;
        times.push(started.elapsed());
    }
    ticking.store(false, Ordering::Relaxed);
    let _ = ticker.join();
    Ok(times)
}
