//! Errors of the registry and the warehouse.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the registry or the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("table `{name}` not found; SHOW TABLES lists the tables of the warehouse")]
    TableNotFound { name: String },

    #[error(
        "table `{name}` already exists; use CREATE TABLE IF NOT EXISTS, or DROP TABLE `{name}` first"
    )]
    TableExists { name: String },

    #[error("{kind} `{name}` not found")]
    ObjectNotFound { kind: String, name: String },

    #[error(
        "{kind} `{name}` already exists; use CREATE OR REPLACE or IF NOT EXISTS, or DROP it first"
    )]
    ObjectExists { kind: String, name: String },

    #[error("table `{name}` has no version {version}; its latest version is {latest}")]
    VersionNotFound {
        name: String,
        version: u64,
        latest: u64,
    },

    #[error("table `{name}` has no version at or before {timestamp}: {reason}")]
    TimestampNotFound {
        name: String,
        timestamp: String,
        reason: String,
    },

    #[error("`{location}` is not a Delta table (no _delta_log found): {reason}")]
    NotADeltaTable { location: String, reason: String },

    /// A table of plain files (`STORED AS PARQUET|CSV|JSON`) asked for what only Delta tables
    /// have: versions, appends, lineage.
    #[error(
        "`{name}` is an external {format} table (plain files: read-only, no versions); make it a \
         Delta table first with CREATE TABLE <name> AS SELECT * FROM {name}"
    )]
    FilesNotDelta { name: String, format: &'static str },

    /// The files of an external `PARQUET`/`CSV`/`JSON` table cannot be read.
    #[error("cannot read the files of external table `{name}` at `{location}`: {message}")]
    Files {
        name: String,
        location: String,
        message: String,
    },

    #[error("invalid warehouse location `{location}`: {reason}")]
    InvalidLocation { location: String, reason: String },

    #[error("the warehouse registry at `{location}` is unreadable: {reason}")]
    CorruptRegistry { location: String, reason: String },

    /// An object whose stored definition does not read (written by another version of Flywheel,
    /// or damaged).
    #[error("{kind} `{name}` has an unreadable definition: {reason}")]
    UnreadableDefinition {
        kind: String,
        name: String,
        reason: String,
    },

    #[error(transparent)]
    Delta(#[from] deltalake::DeltaTableError),

    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    /// A name that cannot name a table or an object.
    #[error("invalid {noun} name {name:?}: {reason}")]
    InvalidName {
        noun: String,
        name: String,
        reason: String,
    },

    /// Other writers kept committing to the registry while this statement tried to; nothing
    /// was recorded and the statement can be run again.
    #[error(
        "the warehouse registry at `{location}` changed under this statement {attempts} times in a \
         row (other writers are busy); nothing was recorded, run the statement again"
    )]
    RegistryBusy { location: String, attempts: usize },

    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => inner,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
