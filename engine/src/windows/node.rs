//! [`WindowAggNode`]: the logical "aggregate features of each probe row".

use std::fmt;
use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef, Result, TableReference, plan_err};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, UserDefinedLogicalNodeCore};

use super::spec::Aggregate;
use crate::asof::column_indices;

/// For every row of `probes`: its columns, then each aggregate over the `events` with equal keys
/// and time in `(probe_time - window, probe_time]`. One output row per probe row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowAggNode {
    pub probes: LogicalPlan,
    pub events: LogicalPlan,
    /// Equality keys: (probe expression, event expression).
    pub on: Vec<(Expr, Expr)>,
    pub probe_time: Expr,
    pub event_time: Expr,
    /// The aggregates, each with its input (an expression over `events`).
    pub aggregates: Vec<(Aggregate, Expr)>,
    /// The qualifier of the aggregates' output columns.
    pub qualifier: Option<TableReference>,
    schema: DFSchemaRef,
}

impl WindowAggNode {
    pub fn try_new(
        probes: LogicalPlan,
        events: LogicalPlan,
        on: Vec<(Expr, Expr)>,
        probe_time: Expr,
        event_time: Expr,
        aggregates: Vec<(Aggregate, Expr)>,
        qualifier: Option<TableReference>,
    ) -> Result<Self> {
        let mut fields: Vec<(Option<TableReference>, Arc<arrow::datatypes::Field>)> = probes
            .schema()
            .iter()
            .map(|(q, f)| (q.cloned(), Arc::clone(f)))
            .collect();
        for (a, input) in &aggregates {
            let input_type = input.get_type(events.schema())?;
            let output = match a.func.output_type(&a.name, &input_type) {
                Ok(t) => t,
                Err(e) => return plan_err!("{e}"),
            };
            fields.push((
                qualifier.clone(),
                Arc::new(arrow::datatypes::Field::new(&a.name, output, true)),
            ));
        }
        let schema = DFSchema::new_with_metadata(fields, Default::default())?;
        Ok(Self {
            probes,
            events,
            on,
            probe_time,
            event_time,
            aggregates,
            qualifier,
            schema: Arc::new(schema),
        })
    }
}

impl PartialOrd for WindowAggNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (
            &self.probes,
            &self.events,
            &self.on,
            &self.probe_time,
            &self.event_time,
            &self.aggregates,
        )
            .partial_cmp(&(
                &other.probes,
                &other.events,
                &other.on,
                &other.probe_time,
                &other.event_time,
                &other.aggregates,
            ))
    }
}

impl UserDefinedLogicalNodeCore for WindowAggNode {
    fn name(&self) -> &str {
        "WindowAggregates"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.probes, &self.events]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        let mut out: Vec<Expr> = self.on.iter().map(|(p, _)| p.clone()).collect();
        out.extend(self.on.iter().map(|(_, e)| e.clone()));
        out.push(self.probe_time.clone());
        out.push(self.event_time.clone());
        out.extend(self.aggregates.iter().map(|(_, e)| e.clone()));
        out
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.on.iter().map(|(p, e)| format!("{p} = {e}")).collect();
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|(a, input)| a.explain(input))
            .collect();
        write!(
            f,
            "WindowAggregates: at={} over {}, on=[{}], aggregates=[{}]",
            self.probe_time,
            self.event_time,
            keys.join(", "),
            aggs.join(", ")
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let n = self.on.len();
        let [probes, events]: [LogicalPlan; 2] = match inputs.try_into() {
            Ok(pair) => pair,
            Err(_) => return plan_err!("WindowAggregates takes exactly two inputs"),
        };
        let expected = 2 * n + 2 + self.aggregates.len();
        if exprs.len() != expected {
            return plan_err!(
                "WindowAggregates expected {expected} expressions, got {}",
                exprs.len()
            );
        }
        let on = exprs[..n]
            .iter()
            .cloned()
            .zip(exprs[n..2 * n].iter().cloned())
            .collect();
        let aggregates = self
            .aggregates
            .iter()
            .map(|(a, _)| a.clone())
            .zip(exprs[2 * n + 2..].iter().cloned())
            .collect();
        Self::try_new(
            probes,
            events,
            on,
            exprs[2 * n].clone(),
            exprs[2 * n + 1].clone(),
            aggregates,
            self.qualifier.clone(),
        )
    }

    /// Lets projection pushdown prune both inputs: the probes keep the output columns asked for
    /// plus their keys and time; the events keep their keys, time and the aggregates' inputs.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let n_probes = self.probes.schema().fields().len();
        let mut probes = column_indices(
            &self.probes,
            self.on.iter().map(|(p, _)| p).chain([&self.probe_time]),
        )?;
        let events = column_indices(
            &self.events,
            self.on
                .iter()
                .map(|(_, e)| e)
                .chain([&self.event_time])
                .chain(self.aggregates.iter().map(|(_, e)| e)),
        )?;
        probes.extend(output_columns.iter().copied().filter(|&i| i < n_probes));
        let mut probes: Vec<usize> = probes.into_iter().collect();
        let mut events: Vec<usize> = events.into_iter().collect();
        probes.sort_unstable();
        events.sort_unstable();
        Some(vec![probes, events])
    }
}
