//! Measures what CPU metering costs, for the fuel-versus-epochs decision (see the
//! module docs of [`crate::sandbox`]): the same job run in engines that differ
//! only in how guest code is metered and interrupted. And what explicit bounds
//! checks cost ([`LayoutRunner`]): the same code in node engines that differ
//! only in their [`MemoryLayout`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};

use super::YIELD_INTERVAL;
use super::engine::{MemoryLayout, SandboxConfig, wasmtime_config_with};
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
    let pre = job_pre(&engine, wasm)?;

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

/// Passes of [`memory_loop`] over its 1 MiB.
pub const LOOP_PASSES: i32 = 200;

/// A core module exporting `run(passes) -> i32`: `passes` times over its
/// 1 MiB of linear memory, each 4-byte word loaded, added to a running sum
/// and the sum stored back; two memory accesses per a handful of
/// instructions, the worst case for bounds checks.
pub fn memory_loop() -> Vec<u8> {
    fn section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
        out.push(id);
        leb(out, content.len() as u32);
        out.extend_from_slice(content);
    }
    fn leb(out: &mut Vec<u8>, mut v: u32) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // (func (param i32) (result i32))
    section(&mut m, 1, &[1, 0x60, 1, 0x7f, 1, 0x7f]);
    section(&mut m, 3, &[1, 0]);
    // (memory 16): 1 MiB.
    section(&mut m, 5, &[1, 0, 16]);
    section(&mut m, 7, &[1, 3, b'r', b'u', b'n', 0, 0]);
    // Locals: 0 passes (param), 1 address, 2 sum.
    #[rustfmt::skip]
    let body: &[u8] = &[
        1, 2, 0x7f,             // two i32 locals
        0x03, 0x40,             // loop (passes)
        0x41, 0, 0x21, 1,       //   address = 0
        0x03, 0x40,             //   loop (words)
        0x20, 1,                //     address
        0x20, 1, 0x28, 2, 0,    //     i32.load address
        0x20, 2, 0x6a,          //     + sum
        0x22, 2,                //     sum = that (kept on the stack)
        0x36, 2, 0,             //     i32.store address sum
        0x20, 1, 0x41, 4, 0x6a, //     address + 4
        0x22, 1,                //     address = that
        0x41, 0x80, 0x80, 0xc0, 0x00, // 1 MiB
        0x49, 0x0d, 0,          //     br_if address < 1 MiB
        0x0b,                   //   end
        0x20, 0, 0x41, 1, 0x6b, //   passes - 1
        0x22, 0, 0x0d, 0,       //   br_if (passes = that) != 0
        0x0b,                   // end
        0x20, 2,                // sum
        0x0b,
    ];
    let mut code = vec![1];
    leb(&mut code, body.len() as u32);
    code.extend_from_slice(body);
    section(&mut m, 10, &code);
    m
}

/// A node engine with one memory layout, and the code [`LayoutRunner`] times
/// compiled for it.
pub struct LayoutRunner {
    engine: Engine,
    memory_loop: wasmtime::Module,
    fib: JobPre<JobState>,
}

impl LayoutRunner {
    /// An engine configured as a node with `--max-memory max_memory`
    /// whose memories are laid out as `layout`, and `fib_wasm` compiled for
    /// it.
    pub fn new(layout: MemoryLayout, max_memory: u64, fib_wasm: &[u8]) -> anyhow::Result<Self> {
        let config = SandboxConfig {
            concurrency: 1,
            max_memory_bytes: max_memory,
            cache_dir: None,
        };
        let engine = Engine::new(&wasmtime_config_with(&config, layout))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let memory_loop =
            wasmtime::Module::new(&engine, memory_loop()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let fib = job_pre(&engine, fib_wasm)?;
        Ok(LayoutRunner {
            engine,
            memory_loop,
            fib,
        })
    }

    /// One run of [`memory_loop`] ([`LOOP_PASSES`] passes) under fuel, as a
    /// job's code runs, instantiation included.
    pub async fn time_memory_loop(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut store = Store::new(&self.engine, ());
        fuel(&mut store)?;
        let instance = wasmtime::Instance::new_async(&mut store, &self.memory_loop, &[])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let run = instance
            .get_typed_func::<i32, i32>(&mut store, "run")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        run.call_async(&mut store, LOOP_PASSES)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(started.elapsed())
    }

    /// One attempt of `fib` with `args` under fuel, instantiation included.
    pub async fn time_fib(&self, args: &str) -> anyhow::Result<Duration> {
        let limits = Limits {
            memory_bytes: 1 << 30,
            ..Limits::default()
        };
        let started = Instant::now();
        let mut store = Store::new(
            &self.engine,
            JobState::new(&limits, None, Default::default()),
        );
        fuel(&mut store)?;
        let job = self
            .fib
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        job.call_run(&mut store, args, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| anyhow::anyhow!("the job failed: {}", e.message))?;
        Ok(started.elapsed())
    }
}

/// Fuel as an attempt gets it: plenty, yielding every [`YIELD_INTERVAL`].
fn fuel<T>(store: &mut Store<T>) -> anyhow::Result<()> {
    store
        .set_fuel(u64::MAX / 4)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store
        .fuel_async_yield_interval(Some(YIELD_INTERVAL))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The job component `wasm`, compiled for `engine` and linked with the
/// job's host state, ready to instantiate.
fn job_pre(engine: &Engine, wasm: &[u8]) -> anyhow::Result<JobPre<JobState>> {
    let mut linker = Linker::new(engine);
    super::state::link(&mut linker)?;
    let component = Component::new(engine, wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
    JobPre::new(
        linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}
