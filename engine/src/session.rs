//! Builds the DataFusion session the engine runs in.

use std::sync::Arc;

use super::planner::FlywheelQueryPlanner;
use crate::asof::{AsOfJoinAnalyzer, AsOfMatchUdf};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use flywheel_catalog::{DEFAULT_CATALOG, DEFAULT_SCHEMA, FlywheelCatalogProvider, Registry};

/// A session whose default catalog is the warehouse (`flywheel.public`), with `information_schema`.
/// With a `memory_limit` (bytes), operators that can spill (sorts, aggregates) spill past it and
/// the ASOF JOIN matches in passes.
pub(super) fn build(
    registry: Arc<Registry>,
    online: &Arc<crate::online::OnlineStore>,
    window_features: &Arc<crate::windows::adhoc::WindowFeatures>,
    memory_limit: Option<usize>,
) -> crate::Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DEFAULT_CATALOG, DEFAULT_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    // Delta's string type is plain UTF-8; keep declared VARCHAR columns as `Utf8` so that created
    // tables, inserted values and read-back values agree.
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_limit(limit, 1.0);
    }
    let runtime = runtime.build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(FlywheelQueryPlanner))
        .build();
    let state = SessionStateBuilder::new_from_existing(state)
        .with_analyzer_rule(Arc::new(AsOfJoinAnalyzer))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_catalog(
        DEFAULT_CATALOG,
        Arc::new(FlywheelCatalogProvider::with_system_tables(
            Arc::clone(&registry),
            vec![
                crate::online::freshness_table(Arc::clone(online), Arc::clone(&registry)),
                super::refresh_history::system_table(Arc::clone(&registry)),
                super::freshness::system_table(Arc::clone(&registry)),
            ],
        )),
    );
    ctx.register_udtf(
        "online",
        crate::online::online_function(Arc::clone(online), Arc::clone(&registry)),
    );
    ctx.register_udtf(crate::windows::adhoc::NAME, window_features.function());
    ctx.register_udf(ScalarUDF::new_from_impl(AsOfMatchUdf::default()));
    flywheel_udfs::register_all(&ctx);
    Ok(ctx)
}
