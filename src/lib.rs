//! Flywheel
