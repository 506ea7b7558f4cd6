//! Better errors for a failed `INSERT`: which column refused which value.
//!
//! DataFusion casts inserted values to the table's column types while the insert runs, and a failed
//! cast names the value and the type but not the column. When an insert fails with a cast error,
//! each column of its input is evaluated on its own to find the first one that fails. Nothing was
//! committed: the Delta commit happens only after every row was written.

use datafusion::common::Column;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::prelude::SessionContext;

use crate::Error;

/// What is needed to explain a failed insert.
pub(super) struct InsertContext {
    table: String,
    input: LogicalPlan,
}

impl InsertContext {
    /// The context of `plan` if it is an INSERT.
    pub(super) fn of(plan: &LogicalPlan) -> Option<Self> {
        match plan {
            LogicalPlan::Dml(DmlStatement {
                table_name,
                op: WriteOp::Insert(_),
                input,
                ..
            }) => Some(Self {
                table: table_name.table().to_string(),
                input: input.as_ref().clone(),
            }),
            _ => None,
        }
    }

    /// Turns the insert's error into one that names the failing column, when it is a cast error.
    pub(super) async fn explain(self, ctx: &SessionContext, e: Error) -> Error {
        let message = e.to_string();
        if !message.contains("Cast error") && !message.contains("cast") {
            return e;
        }
        for field in self.input.schema().fields() {
            let name = field.name();
            let Ok(plan) = LogicalPlanBuilder::from(self.input.clone())
                .project(vec![Expr::Column(Column::new_unqualified(name))])
                .and_then(|b| b.build())
            else {
                continue;
            };
            let failed = match ctx.execute_logical_plan(plan).await {
                Ok(df) => df.collect().await.err(),
                Err(e) => Some(e),
            };
            if let Some(col_err) = failed {
                return Error::InvalidInput(format!(
                    "INSERT INTO {}: column `{name}` ({}) cannot take a value: {}; nothing was written",
                    self.table,
                    field.data_type(),
                    Error::from_datafusion(col_err).user_message()
                ));
            }
        }
        e
    }
}
