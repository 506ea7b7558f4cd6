//! `window_features(view, time [, key, ...])`: a view's aggregate features at any time, in SQL,
//! without a training set or the online store.
//!
//! ```sql
//! SELECT * FROM window_features('user_spend', TIMESTAMP '2026-03-01 12:00:00');      -- every key
//! SELECT * FROM window_features('user_spend', TIMESTAMP '2026-03-01 12:00:00', 42);  -- one key
//! ```
//!
//! Columns: the entity's keys, the view's event time column (holding the given time), then the
//! aggregate features evaluated at that time over the events in each window. Several times are
//! several calls (`UNION ALL`); many probe rows are a training set's job.
//!
//! DataFusion asks a table function for its schema while it plans, synchronously, but a view's
//! table is opened asynchronously. So [`Engine::plan`](crate::Engine::plan) first opens the
//! views a statement calls `window_features` on ([`WindowFeatures::prepare`]); the function then
//! plans over the table versions opened for that statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, Result as DFResult, ScalarValue, plan_err};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, Operator, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use sqlparser::ast::{
    FunctionArg, FunctionArgExpr, TableFactor, Value, ValueWithSpan, Visit, Visitor,
};

use super::exec::{Probes, WindowAggExec};
use super::spec::Aggregate;
use super::{time_literal, times_us};
use crate::delta_types::value_type;
use crate::{Engine, Error, Result};

/// The function's name in SQL.
pub const NAME: &str = "window_features";

/// A view opened for one statement.
#[derive(Debug)]
struct Opened {
    provider: Arc<dyn TableProvider>,
    keys: Vec<String>,
    event_time: String,
    aggregates: Vec<Aggregate>,
}

/// The views opened for the statements being planned, by name.
#[derive(Debug, Default)]
pub struct WindowFeatures {
    opened: Mutex<HashMap<String, Arc<Opened>>>,
}

impl WindowFeatures {
    /// The table function over the views this opens.
    pub fn function(self: &Arc<Self>) -> Arc<dyn TableFunctionImpl> {
        Arc::new(Function(Arc::clone(self)))
    }

    /// Opens, at their current versions, the views `statement` calls `window_features` on.
    pub(crate) async fn prepare(
        &self,
        engine: &Engine,
        statement: &datafusion::sql::parser::Statement,
    ) -> Result<()> {
        use datafusion::sql::parser::Statement as DFStatement;
        let s = match statement {
            DFStatement::Statement(s) => s,
            DFStatement::Explain(e) => return Box::pin(self.prepare(engine, &e.statement)).await,
            _ => return Ok(()),
        };
        let mut calls = Calls(Vec::new());
        let _ = s.visit(&mut calls);
        for view in calls.0 {
            let def = super::super::definitions::registry_definition(
                engine.registry(),
                super::super::definitions::Keyed::FeatureView,
                &view,
            )?;
            let keys = engine.entity_keys(&def.entity)?;
            let split = super::split_with_keys(engine, &view, &def, &keys)?;
            if split.aggregates.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{NAME}: feature view `{view}` has no aggregate features (columns OVER \
                     (RANGE INTERVAL ... PRECEDING)); read it with SELECT or a training set"
                )));
            }
            let provider = engine
                .context()
                .table_provider(datafusion::common::TableReference::bare(view.as_str()))
                .await
                .map_err(Error::from_datafusion)?;
            let opened = Opened {
                provider,
                keys,
                event_time: def.event_time,
                aggregates: split.aggregates,
            };
            if let Ok(mut map) = self.opened.lock() {
                map.insert(view, Arc::new(opened));
            }
        }
        Ok(())
    }

    fn get(&self, view: &str) -> Option<Arc<Opened>> {
        self.opened.lock().ok()?.get(view).cloned()
    }
}

/// The first arguments (view names) of the `window_features(...)` calls of a statement.
struct Calls(Vec<String>);

impl Visitor for Calls {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> std::ops::ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
            && name.to_string().eq_ignore_ascii_case(NAME)
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(sqlparser::ast::Expr::Value(
                ValueWithSpan {
                    value: Value::SingleQuotedString(view),
                    ..
                },
            )))) = args.args.first()
        {
            self.0.push(view.clone());
        }
        std::ops::ControlFlow::Continue(())
    }
}

#[derive(Debug)]
struct Function(Arc<WindowFeatures>);

/// `expr` as a constant (`TIMESTAMP '...'`, `now()`, `42`).
fn constant(expr: &Expr) -> DFResult<ScalarValue> {
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(DFSchema::empty()))
            .with_current_time()
            .build(),
    );
    match simplifier.simplify(expr.clone())? {
        Expr::Literal(v, _) => Ok(v),
        other => plan_err!("{NAME}(): `{other}` is not a constant"),
    }
}

fn usage() -> String {
    format!(
        "{NAME}('view', time [, key, ...]): an aggregate feature view's name, the time to \
         evaluate its features at (e.g. TIMESTAMP '2026-03-01 12:00:00'), and optionally one \
         value per entity key"
    )
}

impl TableFunctionImpl for Function {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let (Some(view), Some(time)) = (exprs.first(), exprs.get(1)) else {
            return plan_err!("{}", usage());
        };
        let view = match constant(view)? {
            ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v)) => v,
            _ => return plan_err!("{}", usage()),
        };
        let Some(opened) = self.0.get(&view) else {
            return plan_err!(
                "{NAME}: feature view `{view}` was not opened; name it as a string literal: {NAME}('{view}', ...)"
            );
        };
        let source = opened.provider.schema();
        let field = |name: &str| -> DFResult<Field> {
            let f = source.field_with_name(name)?;
            Ok(Field::new(name, value_type(f.data_type()).clone(), true))
        };
        let time_field = field(&opened.event_time)?;
        let at = constant(time)?;
        let at = match at.cast_to(time_field.data_type()) {
            Ok(v) if !v.is_null() => v,
            _ => {
                return plan_err!(
                    "{NAME}: the time `{at}` is not a {} (the type of `{}`)",
                    time_field.data_type(),
                    opened.event_time
                );
            }
        };
        let keys = &exprs[2..];
        if !keys.is_empty() && keys.len() != opened.keys.len() {
            return plan_err!(
                "{NAME}: view `{view}`'s entity has {} key column(s) ({}); give a value for each or none",
                opened.keys.len(),
                opened.keys.join(", ")
            );
        }
        let mut fields = opened
            .keys
            .iter()
            .map(|k| field(k))
            .collect::<DFResult<Vec<_>>>()?;
        // Each key value in its column's type, checked here: `'x'` for a BIGINT key is an error,
        // not a key that silently matches nothing.
        let key_values = if keys.is_empty() {
            None
        } else {
            let values = keys.iter().zip(&fields).map(|(expr, key)| {
                let value = constant(expr)?;
                match value.cast_to(key.data_type()) {
                    Ok(v) if !v.is_null() => Ok(v),
                    _ => plan_err!(
                        "{NAME}: the key value `{value}` is not a {} (the type of `{}`); give a \
                         non-NULL value of that type",
                        key.data_type(),
                        key.name()
                    ),
                }
            });
            Some(values.collect::<DFResult<Vec<_>>>()?)
        };
        fields.push(time_field);
        for a in &opened.aggregates {
            let input = field(&a.name)?;
            let output = a
                .func
                .output_type(&a.name, input.data_type())
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            fields.push(Field::new(&a.name, output, true));
        }
        Ok(Arc::new(WindowFeaturesTable {
            opened,
            at,
            key_values,
            schema: Arc::new(Schema::new(fields)),
        }))
    }
}

/// One `window_features(...)` call.
#[derive(Debug)]
struct WindowFeaturesTable {
    opened: Arc<Opened>,
    at: ScalarValue,
    key_values: Option<Vec<ScalarValue>>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for WindowFeaturesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let o = &self.opened;
        let n_keys = o.keys.len();
        // Only the aggregates asked for are read and evaluated (column n_keys + 1 + i of the
        // output is aggregate i).
        let picked: Vec<usize> = (0..o.aggregates.len())
            .filter(|i| projection.is_none_or(|p| p.contains(&(n_keys + 1 + i))))
            .collect();
        let chosen: Vec<&Aggregate> = picked.iter().map(|&i| &o.aggregates[i]).collect();
        let source = o.provider.schema();
        let names: Vec<&String> = o
            .keys
            .iter()
            .chain([&o.event_time])
            .chain(chosen.iter().map(|a| &a.name))
            .collect();
        let needed = names
            .iter()
            .map(|n| source.index_of(n))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // Only the events of the view's longest window before the time can count (the keys
        // listed are those with events in it, whichever aggregates are asked for): the bounds
        // go to the table, which skips the files outside them, and are applied to the rows.
        let time_type = value_type(source.field(needed[n_keys]).data_type()).clone();
        let at_us = times_us(&self.at.to_array()?)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?
            .value(0);
        let longest = o.aggregates.iter().map(|a| a.window_us).max().unwrap_or(0);
        let bound = |us: i64| {
            time_literal(us, &time_type)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))
        };
        let (after, until) = (bound(at_us.saturating_sub(longest))?, bound(at_us)?);
        let ts = Expr::Column(datafusion::common::Column::new_unqualified(&o.event_time));
        let pushed = [
            ts.clone().gt(Expr::Literal(after.clone(), None)),
            ts.lt_eq(Expr::Literal(until.clone(), None)),
        ];
        let events = o.provider.scan(state, Some(&needed), &pushed, None).await?;
        // Column i of the scan is names[i].
        let column =
            |i: usize| -> Arc<dyn PhysicalExpr> { Arc::new(Column::new(names[i].as_str(), i)) };
        let time = column(n_keys);
        let predicate = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(Arc::clone(&time), Operator::Gt, lit(after))),
            Operator::And,
            Arc::new(BinaryExpr::new(
                Arc::clone(&time),
                Operator::LtEq,
                lit(until),
            )),
        ));
        let events: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, events)?);
        let exec: Arc<dyn ExecutionPlan> = Arc::new(WindowAggExec::try_new(
            Probes::At {
                key_names: o.keys.clone(),
                time_name: o.event_time.clone(),
                time: self.at.clone(),
                keys: self.key_values.clone(),
            },
            events,
            (0..n_keys).map(column).collect(),
            time,
            chosen
                .iter()
                .enumerate()
                .map(|(i, a)| ((*a).clone(), column(n_keys + 1 + i)))
                .collect(),
        )?);
        let Some(p) = projection else {
            return Ok(exec);
        };
        // Where each projected column is in the operator's output (keys, time, the chosen
        // aggregates in order).
        let positions: Vec<usize> = p
            .iter()
            .map(|&i| match i.checked_sub(n_keys + 1) {
                Some(a) => picked.binary_search(&a).map_or(i, |c| n_keys + 1 + c),
                None => i,
            })
            .collect();
        if positions
            .iter()
            .copied()
            .eq(0..exec.schema().fields().len())
        {
            return Ok(exec);
        }
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = p
            .iter()
            .zip(positions)
            .map(|(&i, at)| {
                let name = self.schema.field(i).name().clone();
                (
                    Arc::new(Column::new(&name, at)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, exec)?))
    }
}
