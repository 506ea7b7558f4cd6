//! Flywheel's registry: which tables (and, later, feature objects) a warehouse holds.
//!
//! A [`Warehouse`] is a folder (or object-store URL) of Delta tables. Its [`Registry`] is itself a Delta
//! table (`_flywheel/registry`): an append-only log where every DDL statement is one atomic commit of
//! one row, so two servers on one warehouse see each other's objects and a crash mid-statement leaves
//! the registry as it was. [`FlywheelCatalogProvider`] exposes the registry to DataFusion: the `public`
//! schema resolves table names to Delta table providers, and a hidden schema resolves the time-travel
//! references that the engine rewrites `t VERSION AS OF n` into.

mod bounded_pushdown;
mod catalog_provider;
mod error;
pub mod lineage;
pub mod objects;
mod orphans;
mod registry;
mod schema_provider;
mod snapshots;
mod system_schema;
mod tables;
mod time_travel;
mod warehouse;

pub use bounded_pushdown::{BoundedPushdownProvider, MAX_PUSHED_FILTER_NODES, offer_filters};
pub use catalog_provider::{DEFAULT_CATALOG, DEFAULT_SCHEMA, FlywheelCatalogProvider};
pub use error::{Error, Result};
pub use orphans::ORPHAN_GRACE;
pub use registry::{
    Change, Committed, FileFormat, MAX_NAME_BYTES, ObjectEntry, Registry, TableEntry, TableKind,
    check_name, is_commit_race,
};
pub use schema_provider::WarehouseSchemaProvider;
pub use system_schema::{SYSTEM_SCHEMA, SystemSchemaProvider, SystemTableFn, batch_table};
pub use tables::{TravelTarget, load_table, open_files};
pub use time_travel::{TIME_TRAVEL_SCHEMA, TimeTravelSchemaProvider};
pub use warehouse::{RESERVED_FOLDERS, Warehouse, resolve_location};
