//! The checks that weigh what a component instantiates against the class's
//! memory cap and the workers' pool, and the two kinds of refusal: too big to
//! run (the module is fine, the caps are not) or refused outright.

use super::{Caps, MAX_MEMORIES, MAX_TABLES, Shape, ShapeError, mib};
use crate::sandbox::limits::MAX_TABLE_ELEMENTS;

/// A well-formed module that needs more than the caps give.
pub(super) fn too_big(message: String) -> ShapeError {
    ShapeError {
        too_big_to_run: true,
        message,
    }
}

/// A module malformed, or shaped past the compile bounds.
pub(super) fn refused(message: String) -> ShapeError {
    ShapeError {
        too_big_to_run: false,
        message,
    }
}

/// One memory of `bytes` (index `index` of core module `module`) against
/// the pool slot and, with the memories instantiated so far, the class cap.
pub(super) fn check_memory(
    bytes: u64,
    index: usize,
    module: u32,
    shape: &Shape,
    caps: &Caps,
) -> Result<(), ShapeError> {
    let whose = if module == 0 {
        format!("its memory {index}")
    } else {
        format!("its memory {index} (core module {module})")
    };
    let over_pool = bytes > caps.pool_memory_bytes;
    let over_class = shape.initial_memory_bytes.max(bytes) > caps.class_memory_bytes;
    if !over_pool && !over_class {
        return Ok(());
    }
    let what = if shape.initial_memory_bytes <= bytes {
        format!("{whose} starts at {}", mib(bytes))
    } else {
        format!(
            "its memories start at {} together",
            mib(shape.initial_memory_bytes)
        )
    };
    // The tighter of the two caps is the one to name (the pool when they
    // are equal: a class cap above the pool is clamped to it).
    if caps.class_memory_bytes < caps.pool_memory_bytes {
        return Err(too_big(format!(
            "{what}; the class allows {} (`memory`); raise `memory` in stoker.toml or shrink \
             the module's initial memory",
            mib(caps.class_memory_bytes)
        )));
    }
    Err(too_big(format!(
        "{what}; a worker's pool holds {} per memory (`--max-memory` of the workers and of \
         `stoker deploy`); shrink the module's initial memory or raise `--max-memory`",
        mib(caps.pool_memory_bytes)
    )))
}

pub(super) fn check_instance_totals(shape: &Shape) -> Result<(), ShapeError> {
    if shape.memories > MAX_MEMORIES {
        return Err(too_big(format!(
            "the component instantiates {} memories; a worker's pool holds {MAX_MEMORIES} per job",
            shape.memories
        )));
    }
    if shape.tables > MAX_TABLES {
        return Err(too_big(format!(
            "the component instantiates {} tables; a worker's pool holds {MAX_TABLES} per job",
            shape.tables
        )));
    }
    if shape.initial_table_elements > MAX_TABLE_ELEMENTS as u64 {
        return Err(too_big(format!(
            "its tables start with {} elements together; the limit is {MAX_TABLE_ELEMENTS} \
             elements",
            shape.initial_table_elements
        )));
    }
    Ok(())
}
