//! [`FlywheelQueryPlanner`]: the session's physical planner with every extension planner we need.
//!
//! A session holds one query planner, so this one carries delta-rs's extension planners (its write,
//! merge and validation nodes appear in plans that deltalake builds on our session) beside
//! Flywheel's own.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use deltalake::delta_datafusion::planner::DeltaExtensionPlanner;

use crate::asof::AsOfJoinPlanner;
use crate::windows::WindowAggPlanner;

/// Plans logical plans with DataFusion's default planner plus the extension planners.
#[derive(Debug, Default)]
pub struct FlywheelQueryPlanner;

impl FlywheelQueryPlanner {
    fn extension_planners() -> Vec<Arc<dyn ExtensionPlanner + Send + Sync>> {
        vec![
            Arc::new(AsOfJoinPlanner),
            Arc::new(WindowAggPlanner),
            DeltaExtensionPlanner::new(),
        ]
    }
}

#[async_trait]
impl QueryPlanner for FlywheelQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(Self::extension_planners())
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}
