//! Statement parameters: `?` and `$n` placeholders, their types, and binding rows of values.
//!
//! DB-API clients (ADBC's `cursor.execute(sql, params)`) write `?` placeholders; DataFusion plans
//! positional `$1, $2, ...`. Before planning, every `?` becomes the next `$n` in reading order
//! ([`number_placeholders`]). A batch of parameter values binds row by row: a query takes exactly one
//! row; an `INSERT` takes any number and still writes them in one Delta commit (the bound inputs are
//! unioned under one insert), so `executemany` of a thousand rows is one table version, not a
//! thousand.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::sql::parser::Statement as DFStatement;
use sqlparser::ast::{Expr, Value, VisitorMut};

use super::{Planned, visit_statement_mut};
use crate::{Error, Result};

/// Renames `?` placeholders to `$1`, `$2`, ... in the order they appear.
pub(super) fn number_placeholders(statement: &mut DFStatement) -> Result<()> {
    let mut numbering = Numbering { next: 1 };
    visit_statement_mut(statement, &mut numbering)
}

struct Numbering {
    next: usize,
}

impl VisitorMut for Numbering {
    type Break = Error;

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Error> {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            *p = format!("${}", self.next);
            self.next += 1;
        }
        ControlFlow::Continue(())
    }
}

impl Planned {
    /// The parameters the statement takes, in position order (`$1` first), as an Arrow schema
    /// whose fields are named `$1`, `$2`, ...; a type DataFusion could not infer is `Null`.
    pub fn parameter_schema(&self) -> Result<SchemaRef> {
        let plan = match self {
            Planned::Query(p) | Planned::Command(p) => p,
            Planned::Flywheel(_) | Planned::DropTableCascade(_) => {
                return Ok(Arc::new(Schema::empty()));
            }
        };
        let types = plan.get_parameter_types().map_err(Error::from_datafusion)?;
        let mut params: Vec<(usize, String, arrow::datatypes::DataType)> = types
            .into_iter()
            .map(|(id, t)| {
                let position = position(&id).unwrap_or(usize::MAX);
                (position, id, t.unwrap_or(arrow::datatypes::DataType::Null))
            })
            .collect();
        params.sort();
        Ok(Arc::new(Schema::new(
            params
                .into_iter()
                .map(|(_, id, t)| Field::new(id, t, true))
                .collect::<Vec<_>>(),
        )))
    }

    /// The type of each parameter by position (`$1` first, up to the highest one the plan uses);
    /// a position the plan does not use, or whose type DataFusion could not infer, is `Null`.
    pub fn parameter_types(&self) -> Result<Vec<arrow::datatypes::DataType>> {
        let mut types = Vec::new();
        for field in self.parameter_schema()?.fields() {
            if let Some(n) = position(field.name()).filter(|n| (1..=u16::MAX as usize).contains(n))
            {
                if types.len() < n {
                    types.resize(n, arrow::datatypes::DataType::Null);
                }
                types[n - 1] = field.data_type().clone();
            }
        }
        Ok(types)
    }

    /// Binds the rows of `values` (one column per parameter, in position order).
    pub fn bind(self, values: &RecordBatch) -> Result<Planned> {
        if values.num_columns() == 0 {
            return Ok(self);
        }
        if let Planned::Query(_) | Planned::Command(_) = &self {
            // More values than placeholders is a caller's mistake (a wrong tuple, a stale
            // statement), not something to drop silently. `$3` alone takes three values.
            let takes = self
                .parameter_schema()?
                .fields()
                .iter()
                .filter_map(|f| position(f.name()))
                .max()
                .unwrap_or(0);
            if values.num_columns() > takes {
                return Err(Error::InvalidInput(format!(
                    "the statement takes {takes} parameter{}, but {} values were bound per row; \
                     bind one value per placeholder",
                    if takes == 1 { "" } else { "s" },
                    values.num_columns()
                )));
            }
        }
        let rows = rows_of(values)?;
        match self {
            Planned::Flywheel(_) | Planned::DropTableCascade(_) => Err(Error::Unsupported {
                what: "parameters in Flywheel statements (entities, feature views, ...)".into(),
                hint: "write the values into the statement".into(),
            }),
            Planned::Query(plan) => match rows.as_slice() {
                [row] => Ok(Planned::Query(bind_row(plan, row)?)),
                _ => Err(Error::InvalidInput(format!(
                    "a query binds exactly one row of parameters, got {}; run it once per row",
                    rows.len()
                ))),
            },
            Planned::Command(plan) => match rows.as_slice() {
                [row] => Ok(Planned::Command(bind_row(plan, row)?)),
                [] => Err(Error::InvalidInput(
                    "no parameter rows were bound; nothing to run".into(),
                )),
                _ => bind_insert_rows(plan, &rows).map(Planned::Command),
            },
        }
    }
}

/// The position of placeholder `$n`.
fn position(id: &str) -> Option<usize> {
    id.strip_prefix('$')?.parse().ok()
}

fn bind_row(plan: LogicalPlan, row: &[ScalarValue]) -> Result<LogicalPlan> {
    plan.with_param_values(ParamValues::from(row.to_vec()))
        .map_err(Error::from_datafusion)
}

/// One `INSERT` of many parameter rows: each row binds the insert's input, and the inputs are unioned
/// under one insert, so all rows land in one commit.
fn bind_insert_rows(plan: LogicalPlan, rows: &[Vec<ScalarValue>]) -> Result<LogicalPlan> {
    let LogicalPlan::Dml(dml) = plan else {
        return Err(Error::Unsupported {
            what: "binding several parameter rows to a statement other than INSERT".into(),
            hint: "bind one row per execution".into(),
        });
    };
    if !matches!(dml.op, WriteOp::Insert(_)) {
        return Err(Error::Unsupported {
            what: format!("binding several parameter rows to {}", dml.op),
            hint: "bind one row per execution".into(),
        });
    }
    let input = dml.input.as_ref();
    let mut builder: Option<LogicalPlanBuilder> = None;
    for row in rows {
        let bound = bind_row(input.clone(), row)?;
        builder = Some(match builder {
            None => LogicalPlanBuilder::from(bound),
            Some(b) => b.union(bound).map_err(Error::from_datafusion)?,
        });
    }
    let input = builder
        .ok_or_else(|| Error::InvalidInput("no parameter rows were bound; nothing to run".into()))?
        .build()
        .map_err(Error::from_datafusion)?;
    Ok(LogicalPlan::Dml(DmlStatement::new(
        dml.table_name,
        dml.target,
        dml.op,
        Arc::new(input),
    )))
}

/// The values of each row of `batch`, column by column.
fn rows_of(batch: &RecordBatch) -> Result<Vec<Vec<ScalarValue>>> {
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row).map_err(Error::from_datafusion))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    #[test]
    fn question_marks_become_positions_in_reading_order() {
        let mut statements =
            DFParser::parse_sql("SELECT * FROM t WHERE a = ? AND b IN (?, $7) LIMIT ?")
                .expect("parses");
        let mut s = statements.pop_front().expect("one");
        number_placeholders(&mut s).expect("rewrites");
        assert_eq!(
            s.to_string(),
            "SELECT * FROM t WHERE a = $1 AND b IN ($2, $7) LIMIT $3"
        );
    }
}
