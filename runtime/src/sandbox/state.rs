//! The per-attempt store state: one field per capability; each host module
//! borrows only its own field.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::StoreLimits;
use crate::config::Limits;
use crate::host::log::JobLog;
use crate::host::stdio::Captured;

/// Everything one attempt's store holds.
pub struct JobState {
    /// WASI: no preopened directories, no environment, no arguments, no sockets
    /// or name lookups; stdout and stderr captured into `log`.
    pub wasi: WasiCtx,
    /// WASI resources (streams, pollables).
    pub table: ResourceTable,
    /// Memory and table caps.
    pub limits: StoreLimits,
    /// The job's log.
    pub log: JobLog,
}

impl JobState {
    /// A fresh state for one attempt under `limits`.
    pub fn new(limits: &Limits) -> Self {
        let log = JobLog::new(limits.log_bytes);
        let wasi = WasiCtx::builder()
            .stdout(Captured(log.clone()))
            .stderr(Captured(log.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        JobState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimits::new(limits.memory_bytes),
            log,
        }
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
