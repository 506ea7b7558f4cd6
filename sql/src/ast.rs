//! The AST of Flywheel's own statements. Every node prints back as SQL that re-parses to an equal node.

use std::fmt;

use sqlparser::ast::{DataType, Expr, Ident, ObjectName, Query};

/// The kinds of Flywheel objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Entity,
    FeatureView,
    Label,
    TrainingSet,
}

impl ObjectKind {
    /// The singular SQL words (`FEATURE VIEW`).
    pub fn sql(&self) -> &'static str {
        match self {
            ObjectKind::Entity => "ENTITY",
            ObjectKind::FeatureView => "FEATURE VIEW",
            ObjectKind::Label => "LABEL",
            ObjectKind::TrainingSet => "TRAINING SET",
        }
    }

    /// The plural SQL words (`FEATURE VIEWS`), as in `SHOW FEATURE VIEWS`.
    pub fn plural_sql(&self) -> &'static str {
        match self {
            ObjectKind::Entity => "ENTITIES",
            ObjectKind::FeatureView => "FEATURE VIEWS",
            ObjectKind::Label => "LABELS",
            ObjectKind::TrainingSet => "TRAINING SETS",
        }
    }

    /// Lower-case words for messages (`feature view`).
    pub fn noun(&self) -> &'static str {
        match self {
            ObjectKind::Entity => "entity",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::Label => "label",
            ObjectKind::TrainingSet => "training set",
        }
    }

    /// The kind as the warehouse registry records it (`feature_view`).
    pub const fn registry_kind(&self) -> &'static str {
        match self {
            ObjectKind::Entity => "entity",
            ObjectKind::FeatureView => "feature_view",
            ObjectKind::Label => "label",
            ObjectKind::TrainingSet => "training_set",
        }
    }

    /// The kind the registry records as `kind`; `None` for the registry's other records.
    pub fn from_registry_kind(kind: &str) -> Option<Self> {
        [
            ObjectKind::Entity,
            ObjectKind::FeatureView,
            ObjectKind::Label,
            ObjectKind::TrainingSet,
        ]
        .into_iter()
        .find(|k| k.registry_kind() == kind)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql())
    }
}

/// How a `CREATE` treats an existing object of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateMode {
    pub or_replace: bool,
    pub if_not_exists: bool,
}

impl CreateMode {
    fn fmt_create(
        &self,
        f: &mut fmt::Formatter<'_>,
        kind: ObjectKind,
        name: &Ident,
    ) -> fmt::Result {
        write!(f, "CREATE ")?;
        if self.or_replace {
            write!(f, "OR REPLACE ")?;
        }
        write!(f, "{kind} ")?;
        if self.if_not_exists {
            write!(f, "IF NOT EXISTS ")?;
        }
        write!(f, "{name}")
    }
}

/// A typed key column of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: Ident,
    pub data_type: DataType,
}

/// `CREATE ENTITY user (user_id BIGINT)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEntity {
    pub name: Ident,
    pub mode: CreateMode,
    pub keys: Vec<KeyColumn>,
}

/// An option in `WITH (key = value, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOption {
    pub key: Ident,
    pub value: Expr,
}

/// `CREATE FEATURE VIEW v ENTITY e EVENT TIME ts [TTL INTERVAL '30 days'] [WITH (...)] AS SELECT ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFeatureView {
    pub name: Ident,
    pub mode: CreateMode,
    pub entity: Ident,
    pub event_time: Ident,
    pub ttl: Option<Expr>,
    pub options: Vec<SqlOption>,
    pub query: Box<Query>,
}

/// Where a label's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// `FROM (SELECT ...)`.
    Query(Box<Query>),
    /// `FROM table`: every column other than the keys and the event time is a label column.
    Table(ObjectName),
}

/// `CREATE LABEL l ENTITY e EVENT TIME ts [WITH (...)] FROM (SELECT ...)` or `... FROM table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateLabel {
    pub name: Ident,
    pub mode: CreateMode,
    pub entity: Ident,
    pub event_time: Ident,
    pub options: Vec<SqlOption>,
    pub source: LabelSource,
}

/// One item of a training set's `FEATURES` list: a whole view or one of its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureRef {
    pub view: Ident,
    pub column: Option<Ident>,
}

/// `CREATE TRAINING SET t LABEL l FEATURES v1, v2.col [WITH (...)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTrainingSet {
    pub name: Ident,
    pub mode: CreateMode,
    pub label: Ident,
    pub features: Vec<FeatureRef>,
    pub options: Vec<SqlOption>,
}

/// What an `ALTER <kind> x ...` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterAction {
    /// `SET (key = value, ...)`.
    Set(Vec<SqlOption>),
    /// `SUSPEND`: its refresh schedule stops firing until `RESUME`.
    Suspend,
    /// `RESUME`.
    Resume,
}

/// A Flywheel statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlywheelDdl {
    CreateEntity(CreateEntity),
    CreateFeatureView(Box<CreateFeatureView>),
    CreateLabel(Box<CreateLabel>),
    CreateTrainingSet(CreateTrainingSet),
    /// `ALTER FEATURE VIEW v SET (online = true)`, `ALTER LABEL l SET (refresh = 'on change')`,
    /// `ALTER TRAINING SET t SUSPEND`.
    Alter {
        kind: ObjectKind,
        name: Ident,
        action: AlterAction,
    },
    /// `REFRESH FEATURE VIEW v`, `REFRESH LABEL l`, `REFRESH TRAINING SET t`: the object after
    /// its stale upstream objects, or alone with `ONLY`; `FULL` recomputes it whole.
    Refresh {
        kind: ObjectKind,
        name: Ident,
        only: bool,
        full: bool,
    },
    /// `REFRESH ALL [FULL]`: every stale object, inputs first.
    RefreshAll {
        full: bool,
    },
    /// `SHOW ENTITIES` (and the other plurals).
    Show {
        kind: ObjectKind,
    },
    /// `DESCRIBE FEATURE VIEW v`.
    Describe {
        kind: ObjectKind,
        name: Ident,
    },
    /// `DROP FEATURE VIEW [IF EXISTS] v [CASCADE]`.
    Drop {
        kind: ObjectKind,
        name: Ident,
        if_exists: bool,
        cascade: bool,
    },
}

fn comma<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for KeyColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.data_type)
    }
}

impl fmt::Display for SqlOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.key, self.value)
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{}.{c}", self.view),
            None => write!(f, "{}", self.view),
        }
    }
}

impl fmt::Display for FlywheelDdl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlywheelDdl::CreateEntity(c) => {
                c.mode.fmt_create(f, ObjectKind::Entity, &c.name)?;
                write!(f, " ({})", comma(&c.keys))
            }
            FlywheelDdl::CreateFeatureView(c) => {
                c.mode.fmt_create(f, ObjectKind::FeatureView, &c.name)?;
                write!(f, " ENTITY {} EVENT TIME {}", c.entity, c.event_time)?;
                if let Some(ttl) = &c.ttl {
                    write!(f, " TTL {ttl}")?;
                }
                if !c.options.is_empty() {
                    write!(f, " WITH ({})", comma(&c.options))?;
                }
                write!(f, " AS {}", c.query)
            }
            FlywheelDdl::CreateLabel(c) => {
                c.mode.fmt_create(f, ObjectKind::Label, &c.name)?;
                write!(f, " ENTITY {} EVENT TIME {}", c.entity, c.event_time)?;
                if !c.options.is_empty() {
                    write!(f, " WITH ({})", comma(&c.options))?;
                }
                write!(f, " FROM ")?;
                match &c.source {
                    LabelSource::Query(q) => write!(f, "({q})"),
                    LabelSource::Table(t) => write!(f, "{t}"),
                }
            }
            FlywheelDdl::CreateTrainingSet(c) => {
                c.mode.fmt_create(f, ObjectKind::TrainingSet, &c.name)?;
                write!(f, " LABEL {} FEATURES {}", c.label, comma(&c.features))?;
                if !c.options.is_empty() {
                    write!(f, " WITH ({})", comma(&c.options))?;
                }
                Ok(())
            }
            FlywheelDdl::Refresh {
                kind,
                name,
                only,
                full,
            } => {
                write!(
                    f,
                    "REFRESH {kind} {name}{}{}",
                    if *only { " ONLY" } else { "" },
                    if *full { " FULL" } else { "" }
                )
            }
            FlywheelDdl::RefreshAll { full } => {
                write!(f, "REFRESH ALL{}", if *full { " FULL" } else { "" })
            }
            FlywheelDdl::Show { kind } => write!(f, "SHOW {}", kind.plural_sql()),
            FlywheelDdl::Describe { kind, name } => write!(f, "DESCRIBE {kind} {name}"),
            FlywheelDdl::Alter { kind, name, action } => {
                write!(f, "ALTER {kind} {name} ")?;
                match action {
                    AlterAction::Set(options) => write!(f, "SET ({})", comma(options)),
                    AlterAction::Suspend => write!(f, "SUSPEND"),
                    AlterAction::Resume => write!(f, "RESUME"),
                }
            }
            FlywheelDdl::Drop {
                kind,
                name,
                if_exists,
                cascade,
            } => {
                write!(f, "DROP {kind} ")?;
                if *if_exists {
                    write!(f, "IF EXISTS ")?;
                }
                write!(f, "{name}")?;
                if *cascade {
                    write!(f, " CASCADE")?;
                }
                Ok(())
            }
        }
    }
}
