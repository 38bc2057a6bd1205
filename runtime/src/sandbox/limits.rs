//! Memory and table caps for one store, and the peak it reached.

use wasmtime::ResourceLimiter;

/// Table elements a store may hold across its tables: far beyond what compiled
/// Rust needs, small enough that a table flood cannot eat the node's memory.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The attempt tried to grow linear memory past its class's cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit: the job asked for {desired} bytes of linear memory; its class allows {cap} (raise `memory` in stoker.toml if that is expected)"
)]
pub struct MemoryLimitExceeded {
    /// Bytes the store would have had after the growth.
    pub desired: usize,
    /// The class's cap.
    pub cap: usize,
}

/// The attempt tried to grow its tables past [`MAX_TABLE_ELEMENTS`].
#[derive(Debug, thiserror::Error)]
#[error("table limit: the job asked for {desired} table elements; the limit is {cap}")]
pub struct TableLimitExceeded {
    /// Elements the store would have had after the growth.
    pub desired: usize,
    /// The limit.
    pub cap: usize,
}

/// The store's limiter. Growth past a cap is an error (so a trap that names the
/// limit), not a refused `memory.grow`: a Rust guest would turn a refusal into
/// an anonymous `unreachable` trap, indistinguishable from a panic.
pub struct StoreLimits {
    memory_cap: usize,
    memory: usize,
    peak_memory: usize,
    tables: usize,
}

impl StoreLimits {
    pub fn new(memory_cap: u64) -> Self {
        StoreLimits {
            memory_cap: usize::try_from(memory_cap).unwrap_or(usize::MAX),
            memory: 0,
            peak_memory: 0,
            tables: 0,
        }
    }

    /// The most linear memory the store held at once, over all its memories.
    pub fn peak_memory(&self) -> u64 {
        self.peak_memory as u64
    }
}

impl ResourceLimiter for StoreLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory - current.min(self.memory) + desired;
        if total > self.memory_cap {
            return Err(MemoryLimitExceeded {
                desired: total,
                cap: self.memory_cap,
            }
            .into());
        }
        self.memory = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.tables - current.min(self.tables) + desired;
        if total > MAX_TABLE_ELEMENTS {
            return Err(TableLimitExceeded {
                desired: total,
                cap: MAX_TABLE_ELEMENTS,
            }
            .into());
        }
        self.tables = total;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_growth_is_capped_and_peak_recorded() {
        let mut l = StoreLimits::new(1 << 20);
        assert!(l.memory_growing(0, 64 << 10, None).unwrap());
        assert!(l.memory_growing(64 << 10, 1 << 20, None).unwrap());
        let err = l.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
        assert_eq!(l.peak_memory(), 1 << 20);
    }
}
