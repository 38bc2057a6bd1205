//! Helpers shared by the fuzz targets.

pub mod component;
pub mod envelope;
