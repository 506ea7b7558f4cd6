//! Flywheel's engine: one DataFusion session over a warehouse of Delta tables, and everything
//! Flywheel adds to it. No network protocol: front doors (the Flight SQL server in
//! `flywheel-flight`, the CLI) call the typed API of [`Engine`].
//!
//! - [`asof`]: the point-in-time `ASOF JOIN` (AST rewrite, logical node, analyzer rule, operator).
//! - [`online`]: the online store and its lookups.
//! - the Flywheel objects, each in its module: entities and feature views
//!   (`feature_views`), labels and training sets (`training_sets`), their lineage, refreshes
//!   (`incremental`, `refresh_history`, `freshness`) and schedules (`scheduler`).
//! - [`error`]: the error every operation fails with.
//!
//! SQL text enters through [`Engine::sql`] (one statement) or [`Engine::parse`] + [`Engine::execute`].
//! Each statement is parsed by `flywheel-sql`, its time-travel references are rewritten
//! ([`time_travel`]), and it is planned by DataFusion. Queries leave as lazy [`Output::Query`]
//! streams; DDL and DML run to completion here (each one Delta commit) and leave as a small
//! [`Output::Batch`]. The shell and the server share this code, so a statement gives the same answer
//! in both.

pub mod asof;
pub mod credentials;
pub mod error;
mod error_class;
pub mod online;
pub mod untrusted;

mod append;
mod conflicts;
mod ddl;
mod definitions;
mod delta_types;
mod drops;
mod entities;
mod feature_views;
mod file_access;
mod freshness;
mod incremental;
mod ingest;
mod insert;
mod labels;
mod leases;
pub mod limits;
mod lineage;
mod objects;
mod one_shot;
mod online_load;
mod output;
mod params;
mod parquet_files;
mod planner;
mod plans;
mod references;
mod refresh;
mod refresh_history;
mod scheduler;
mod schedules;
mod session;
mod shards;
mod table_writes;
mod time_travel;
mod training_sets;
pub mod windows;

use std::sync::Arc;

use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use flywheel_catalog::{Registry, Warehouse};
use flywheel_sql::FlywheelStatement;
use tracing::instrument;

pub use credentials::Credentials;
pub use error::{Error, Result};
pub use error_class::ErrorClass;
pub use file_access::FileAccess;
pub use ingest::{IfExists, IfMissing, IngestTarget};
pub use online_load::{explain_online, is_online, not_served, online_views};
pub use output::Output;
pub use parquet_files::DataPages;
pub use refresh::{RefreshScope, RefreshStep, Refreshed};
pub use refresh_history::{Mode as RefreshMode, Trigger};
pub use scheduler::{ScheduledRun, Scheduler, SchedulerOptions};
pub use schedules::Schedule;
pub use shards::{MAX_SHARDS, PinnedTable, ShardSource, ShardSpec};
pub(crate) use time_travel::visit_statement_mut;

/// The stack of every thread that plans or runs statements (the `flywheel` binary's runtime
/// workers): DataFusion walks expression trees recursively (naming, display, evaluation), so a
/// statement as deep as [`limits::DEFAULT_MAX_EXPRESSION_DEPTH`] needs more than the 2 MiB tokio
/// gives a worker by default. The memory is reserved, not used, until a statement needs it.
pub const THREAD_STACK_BYTES: usize = 64 << 20;

/// A planned statement, not yet run.
#[derive(Debug)]
pub enum Planned {
    /// A query: runs lazily when its output is streamed.
    Query(LogicalPlan),
    /// DDL, DML or a session statement: runs in [`Engine::run`].
    Command(LogicalPlan),
    /// A statement on Flywheel's objects (entities, ...): runs in [`Engine::run`].
    Flywheel(flywheel_sql::ast::FlywheelDdl),
    /// `DROP TABLE ... CASCADE`: the table and the feature views and labels that read it (with
    /// their training sets); runs in [`Engine::run`].
    DropTableCascade(datafusion::logical_expr::DropTable),
}

impl Planned {
    /// The schema of the rows the statement returns.
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        match self {
            Planned::Query(p) | Planned::Command(p) => Arc::clone(p.schema().inner()),
            Planned::Flywheel(_) | Planned::DropTableCascade(_) => {
                Arc::new(arrow::datatypes::Schema::empty())
            }
        }
    }
}

/// One DataFusion session over one warehouse, shared by every client.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    registry: Arc<Registry>,
    online: Arc<crate::online::OnlineStore>,
    data_pages: DataPages,
    /// What files statements may use besides the tables.
    file_access: Arc<FileAccess>,
    /// What one statement may ask for.
    limits: limits::Limits,
    /// The views `window_features(...)` calls read, opened before their statement is planned.
    window_features: Arc<windows::adhoc::WindowFeatures>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("session_id", &self.ctx.session_id())
            .field("warehouse", self.registry.warehouse().root())
            .finish()
    }
}

/// How an [`Engine`] is opened.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The online store: `None`/`"embedded"`, or a `redis://` URL.
    pub online_store: Option<String>,
    /// The most memory queries may hold, in bytes (`None`: no limit).
    pub memory_limit: Option<usize>,
    /// The Parquet data pages of the tables the engine writes.
    pub data_pages: DataPages,
    /// What files statements may use besides the tables (default: the warehouse only).
    pub file_access: FileAccess,
    /// What one statement may ask for.
    pub limits: limits::Limits,
}

impl Engine {
    /// Opens (or creates) the warehouse at `location` and builds the session over it, with the
    /// embedded online store.
    pub async fn open(location: &str) -> Result<Self> {
        Self::open_with(location, &EngineOptions::default()).await
    }

    /// [`Engine::open`] with options.
    pub async fn open_with(location: &str, options: &EngineOptions) -> Result<Self> {
        let warehouse = Warehouse::open(location)?;
        let registry = Arc::new(Registry::open(warehouse).await?);
        let online = Arc::new(
            crate::online::OnlineStore::new(
                registry.warehouse().root(),
                options.online_store.as_deref(),
            )?
            .with_max_keys(options.limits.max_lookup_keys),
        );
        let window_features = Arc::new(windows::adhoc::WindowFeatures::default());
        let ctx = session::build(
            Arc::clone(&registry),
            &online,
            &window_features,
            options.memory_limit,
        )?;
        Ok(Self {
            ctx,
            registry,
            online,
            window_features,
            data_pages: options.data_pages,
            file_access: Arc::new(options.file_access.clone()),
            limits: options.limits,
        })
    }

    /// Runs `plan` in the engine's session as one stream of its rows.
    pub(crate) async fn stream(
        &self,
        plan: LogicalPlan,
    ) -> Result<datafusion::execution::SendableRecordBatchStream> {
        self.ctx
            .execute_logical_plan(plan)
            .await
            .map_err(Error::from_datafusion)?
            .execute_stream()
            .await
            .map_err(Error::from_datafusion)
    }

    /// The session's default catalog (the warehouse's, `flywheel`).
    pub fn default_catalog(&self) -> String {
        self.ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone()
    }

    /// Whether `name` (`schema` or `catalog.schema`) is a schema of the session.
    fn schema_exists(&self, name: &str) -> bool {
        let default_catalog = self.default_catalog();
        let (catalog, schema) = name
            .split_once('.')
            .unwrap_or((default_catalog.as_str(), name));
        self.ctx
            .catalog(catalog)
            .is_some_and(|c| c.schema_names().iter().any(|s| s == schema))
    }

    /// The DataFusion session (for embedding and tests).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The warehouse's registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The online store of online feature views.
    pub fn online(&self) -> &Arc<crate::online::OnlineStore> {
        &self.online
    }

    /// Parses SQL text into statements (refused past [`limits::Limits::max_statement_bytes`]).
    pub fn parse(&self, sql: &str) -> Result<Vec<FlywheelStatement>> {
        self.limits.check_text(sql)?;
        Ok(flywheel_sql::parse_sql(sql)?.into_iter().collect())
    }

    /// Parses SQL text that must hold exactly one statement ([`Error::NotOneStatement`]
    /// otherwise).
    pub fn parse_one(&self, sql: &str) -> Result<FlywheelStatement> {
        let mut statements = self.parse(sql)?;
        if statements.len() != 1 {
            return Err(Error::NotOneStatement {
                found: statements.len(),
            });
        }
        Ok(statements.remove(0))
    }

    /// The limits statements run under.
    pub fn limits(&self) -> &limits::Limits {
        &self.limits
    }

    /// Parses, plans and runs exactly one statement.
    pub async fn sql(&self, sql: &str) -> Result<Output> {
        let statement = self.parse_one(sql)?;
        self.execute(statement).await
    }

    /// Plans then runs one statement.
    pub async fn execute(&self, statement: FlywheelStatement) -> Result<Output> {
        let planned = self.plan(statement).await?;
        self.run(planned).await
    }

    /// Plans one statement without running it (nothing is written).
    #[instrument(skip_all)]
    pub async fn plan(&self, statement: FlywheelStatement) -> Result<Planned> {
        // Another server (or the shell) may have changed the warehouse since the last statement.
        self.registry.refresh().await?;
        let mut statement = match statement {
            FlywheelStatement::DataFusion(s) => *s,
            FlywheelStatement::Flywheel(ddl) => {
                self.limits.check_flywheel_depth(&ddl)?;
                return Ok(Planned::Flywheel(*ddl));
            }
        };
        self.limits.check_depth(&statement)?;
        let cascade = matches!(
            &statement,
            DFStatement::Statement(s) if matches!(
                s.as_ref(),
                sqlparser::ast::Statement::Drop {
                    object_type: sqlparser::ast::ObjectType::Table,
                    cascade: true,
                    ..
                }
            )
        );
        params::number_placeholders(&mut statement)?;
        time_travel::rewrite(&mut statement)?;
        crate::asof::rewrite_asof_joins(&mut statement)?;
        let is_query = matches!(&statement, DFStatement::Statement(s) if is_query_statement(s))
            || matches!(&statement, DFStatement::Explain(_));
        let state = self.ctx.state();
        references::check_tables_exist(&state, &statement)?;
        self.window_features.prepare(self, &statement).await?;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(Error::from_datafusion)?;
        Ok(match plan {
            LogicalPlan::Ddl(DdlStatement::DropTable(d)) if cascade => Planned::DropTableCascade(d),
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_) => Planned::Command(plan),
            _ if is_query => Planned::Query(plan),
            _ => Planned::Command(plan),
        })
    }

    /// Runs a planned statement: commands complete here (or are cancelled at the statement
    /// timeout), queries return a lazy stream (which ends at the statement timeout).
    #[instrument(skip_all)]
    pub async fn run(&self, planned: Planned) -> Result<Output> {
        match planned {
            Planned::Query(plan) => {
                let df = self
                    .ctx
                    .execute_logical_plan(plan)
                    .await
                    .map_err(Error::from_datafusion)?;
                Ok(Output::query(df, self.limits))
            }
            command => self.limits.timed(self.run_command(command)).await,
        }
    }

    /// Runs a command (not a query) to completion.
    async fn run_command(&self, planned: Planned) -> Result<Output> {
        match planned {
            Planned::Query(_) => Err(Error::InvalidInput(
                "a query is run by Engine::run, not as a command".into(),
            )),
            Planned::Command(LogicalPlan::Ddl(ddl)) => self.run_ddl(ddl).await,
            Planned::DropTableCascade(d) => ddl::drop_table(self, d, true).await,
            Planned::Flywheel(ddl) => objects::execute(self, ddl).await,
            Planned::Command(plan) => {
                if let LogicalPlan::Dml(DmlStatement { table_name, op, .. }) = &plan {
                    if let WriteOp::Insert(_) = op
                        && let Some(name) = ddl::warehouse_name(table_name)
                    {
                        ddl::refuse_object_table(self, &name, ddl::TableChange::Write)?;
                    }
                    if let Some(refused) = ddl::unsupported_change(self, op, table_name) {
                        return Err(refused);
                    }
                }
                if let LogicalPlan::Copy(copy) = &plan {
                    self.file_access.check(
                        self.registry.warehouse(),
                        &copy.output_url,
                        file_access::Use::CopyTo,
                    )?;
                }
                let insert = insert::InsertContext::of(&plan);
                if let Some((table, input)) = append::target(self, &plan) {
                    // Refused above if it is the table of a feature view, label or training set.
                    return match append::append(self, &table, input).await {
                        Ok(rows) => append::count_output(rows),
                        Err(e) => Err(match insert {
                            Some(insert) => insert.explain(&self.ctx, e).await,
                            None => e,
                        }),
                    };
                }
                let result = async {
                    let df = self.ctx.execute_logical_plan(plan).await?;
                    let schema = Arc::clone(df.schema().inner());
                    Ok::<_, datafusion::error::DataFusionError>((schema, df.collect().await?))
                }
                .await;
                match result {
                    Ok((schema, batches)) => Ok(Output::batches(schema, batches)?),
                    Err(e) => match insert {
                        Some(insert) => {
                            Err(insert.explain(&self.ctx, Error::from_datafusion(e)).await)
                        }
                        None => Err(Error::from_datafusion(e)),
                    },
                }
            }
        }
    }

    async fn run_ddl(&self, ddl: DdlStatement) -> Result<Output> {
        match ddl {
            DdlStatement::CreateMemoryTable(c) => {
                // A feature view, label or training set replaces its table itself (through
                // `create_table` too); a user statement may not.
                if c.or_replace
                    && let Some(name) = ddl::warehouse_name(&c.name)
                {
                    ddl::refuse_object_table(self, &name, ddl::TableChange::Write)?;
                }
                ddl::create_table(self, c).await
            }
            DdlStatement::CreateExternalTable(c) => ddl::create_external_table(self, *c).await,
            DdlStatement::DropTable(d) => ddl::drop_table(self, d, false).await,
            DdlStatement::CreateView(_) | DdlStatement::DropView(_) => Err(Error::Unsupported {
                what: "CREATE VIEW".into(),
                hint: "materialize it with CREATE TABLE name AS SELECT ...".into(),
            }),
            // `CREATE SCHEMA IF NOT EXISTS public` (dbt and other tools send it) has nothing to do.
            DdlStatement::CreateCatalogSchema(c)
                if c.if_not_exists && self.schema_exists(&c.schema_name) =>
            {
                Ok(Output::empty())
            }
            DdlStatement::CreateCatalogSchema(_)
            | DdlStatement::CreateCatalog(_)
            | DdlStatement::DropCatalogSchema(_) => Err(Error::Unsupported {
                what: "creating or dropping schemas and catalogs".into(),
                hint: "tables live in schema `flywheel.public`".into(),
            }),
            other => {
                let df = self
                    .ctx
                    .execute_logical_plan(LogicalPlan::Ddl(other))
                    .await
                    .map_err(Error::from_datafusion)?;
                let schema = Arc::clone(df.schema().inner());
                let batches = df.collect().await.map_err(Error::from_datafusion)?;
                Ok(Output::batches(schema, batches)?)
            }
        }
    }
}

/// The name an identifier denotes: DataFusion folds unquoted identifiers to lower case, and
/// Flywheel's object names follow the same rule.
pub(crate) fn object_name(i: &sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Whether a sqlparser statement only reads (its output is a result set to stream).
fn is_query_statement(s: &sqlparser::ast::Statement) -> bool {
    use sqlparser::ast::Statement as S;
    matches!(
        s,
        S::Query(_)
            | S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowVariable { .. }
            | S::ShowFunctions { .. }
            | S::ExplainTable { .. }
            | S::Explain { .. }
    )
}
