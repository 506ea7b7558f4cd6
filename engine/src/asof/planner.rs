//! [`AsOfJoinPlanner`]: lowers [`AsOfJoinNode`] to [`AsOfJoinExec`].

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use super::left_index::is_time_type;
use super::{AsOfJoinExec, AsOfJoinNode};

/// The extension planner for `ASOF JOIN`.
#[derive(Debug, Default)]
pub struct AsOfJoinPlanner;

#[async_trait]
impl ExtensionPlanner for AsOfJoinPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session_state: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<AsOfJoinNode>() else {
            return Ok(None);
        };
        let ([left_plan, right_plan], [left, right]) = (logical_inputs, physical_inputs) else {
            return plan_err!("AsOfJoin takes exactly two inputs");
        };
        let physical = |e: &Expr, plan: &LogicalPlan| -> Result<Arc<dyn PhysicalExpr>> {
            planner.create_physical_expr(e, plan.schema(), session_state, planning_ctx)
        };
        let left_keys = node
            .on
            .iter()
            .map(|(l, _)| physical(l, left_plan))
            .collect::<Result<Vec<_>>>()?;
        let right_keys = node
            .on
            .iter()
            .map(|(_, r)| physical(r, right_plan))
            .collect::<Result<Vec<_>>>()?;
        let left_time = physical(&node.left_time, left_plan)?;
        let right_time = physical(&node.right_time, right_plan)?;
        let lt = left_time.data_type(&left.schema())?;
        let rt = right_time.data_type(&right.schema())?;
        if !is_time_type(&lt) || lt != rt {
            return plan_err!(
                "ASOF JOIN MATCH_CONDITION compares `{}` ({lt}) with `{}` ({rt}); both must be timestamps, dates \
                 or integers of one type",
                node.left_time,
                node.right_time
            );
        }
        let exec = AsOfJoinExec::try_new(
            Arc::clone(left),
            Arc::clone(right),
            left_keys,
            right_keys,
            left_time,
            right_time,
            node.op,
        )?;
        let exec = match &node.right_file {
            Some((file, ranks)) => {
                exec.with_right_file(physical(file, right_plan)?, Arc::clone(&ranks.0))
            }
            None => exec,
        };
        Ok(Some(Arc::new(exec)))
    }
}
