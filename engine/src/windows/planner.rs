//! [`WindowAggPlanner`]: lowers [`WindowAggNode`] to [`WindowAggExec`].

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use super::exec::{Probes, WindowAggExec};
use super::node::WindowAggNode;

/// The extension planner for aggregate features.
#[derive(Debug, Default)]
pub struct WindowAggPlanner;

#[async_trait]
impl ExtensionPlanner for WindowAggPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session_state: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<WindowAggNode>() else {
            return Ok(None);
        };
        let ([probe_plan, event_plan], [probes, events]) = (logical_inputs, physical_inputs) else {
            return plan_err!("WindowAggregates takes exactly two inputs");
        };
        let physical = |e: &Expr, plan: &LogicalPlan| -> Result<Arc<dyn PhysicalExpr>> {
            planner.create_physical_expr(e, plan.schema(), session_state, planning_ctx)
        };
        let probe_keys = node
            .on
            .iter()
            .map(|(p, _)| physical(p, probe_plan))
            .collect::<Result<Vec<_>>>()?;
        let event_keys = node
            .on
            .iter()
            .map(|(_, e)| physical(e, event_plan))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = node
            .aggregates
            .iter()
            .map(|(a, input)| Ok((a.clone(), physical(input, event_plan)?)))
            .collect::<Result<Vec<_>>>()?;
        let exec = WindowAggExec::try_new(
            Probes::Rows {
                input: Arc::clone(probes),
                keys: probe_keys,
                time: physical(&node.probe_time, probe_plan)?,
            },
            Arc::clone(events),
            event_keys,
            physical(&node.event_time, event_plan)?,
            aggregates,
        )?;
        Ok(Some(Arc::new(exec)))
    }
}
