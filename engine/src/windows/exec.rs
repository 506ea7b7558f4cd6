//! [`WindowAggExec`]: evaluates aggregate features at probe times.
//!
//! It reads every event once (all partitions at once), groups and sorts them by key and time
//! ([`Events`], holding a reservation of the memory pool that `memory_limit` bounds), then
//! answers all probes in sweeps over the keys, on `target_partitions` threads. The probes are
//! either the rows of a plan (a training set's label rows: emitted in their order, with the
//! aggregates appended) or every key of the events at one time (`window_features`).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, internal_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::events::{Events, times_us};
use super::spec::Aggregate;

/// Where the probe times come from.
#[derive(Debug, Clone)]
pub enum Probes {
    /// Each row of `input`: its keys and its time.
    Rows {
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        time: Arc<dyn PhysicalExpr>,
    },
    /// Every key of the events (or only `keys`, one value per key column) at `time`, which the
    /// output's time column holds.
    At {
        key_names: Vec<String>,
        time_name: String,
        time: ScalarValue,
        keys: Option<Vec<ScalarValue>>,
    },
}

/// Physical aggregate features; see the module docs.
#[derive(Debug)]
pub struct WindowAggExec {
    probes: Probes,
    events: Arc<dyn ExecutionPlan>,
    event_keys: Vec<Arc<dyn PhysicalExpr>>,
    event_time: Arc<dyn PhysicalExpr>,
    /// The aggregates, each with its input over `events`.
    aggregates: Vec<(Aggregate, Arc<dyn PhysicalExpr>)>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

fn df(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl WindowAggExec {
    pub fn try_new(
        probes: Probes,
        events: Arc<dyn ExecutionPlan>,
        event_keys: Vec<Arc<dyn PhysicalExpr>>,
        event_time: Arc<dyn PhysicalExpr>,
        aggregates: Vec<(Aggregate, Arc<dyn PhysicalExpr>)>,
    ) -> Result<Self> {
        let events_schema = events.schema();
        let mut fields: Vec<Field> = match &probes {
            Probes::Rows { input, keys, .. } => {
                if keys.len() != event_keys.len() {
                    return internal_err!(
                        "WindowAggExec: {} probe keys but {} event keys",
                        keys.len(),
                        event_keys.len()
                    );
                }
                input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect()
            }
            Probes::At {
                key_names,
                time_name,
                time,
                ..
            } => {
                let mut fields = Vec::new();
                for (name, key) in key_names.iter().zip(&event_keys) {
                    let t = match key.data_type(&events_schema)? {
                        DataType::Dictionary(_, value) => *value,
                        other => other,
                    };
                    fields.push(Field::new(name, t, true));
                }
                fields.push(Field::new(time_name, time.data_type(), true));
                fields
            }
        };
        for (a, input) in &aggregates {
            let t = a
                .func
                .output_type(&a.name, &input.data_type(&events_schema)?)
                .map_err(df)?;
            fields.push(Field::new(&a.name, t, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            probes,
            events,
            event_keys,
            event_time,
            aggregates,
            schema,
            properties,
        })
    }
}

/// Reads every partition of `plan` concurrently.
async fn read_all(
    plan: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    let partitions = plan.output_partitioning().partition_count();
    let mut streams = Vec::with_capacity(partitions);
    for p in 0..partitions {
        streams.push(plan.execute(p, Arc::clone(context))?);
    }
    let read = futures::future::try_join_all(
        streams
            .into_iter()
            .map(datafusion::physical_plan::common::collect),
    )
    .await?;
    Ok(read.into_iter().flatten().collect())
}

/// A probe: its key's group among the events (if any) and its time in microseconds.
type Probe = (Option<u32>, Option<i64>);

/// What one execution needs, owned by its future.
struct Run {
    probes: Probes,
    events: Arc<dyn ExecutionPlan>,
    event_keys: Vec<Arc<dyn PhysicalExpr>>,
    event_time: Arc<dyn PhysicalExpr>,
    aggregates: Vec<(Aggregate, Arc<dyn PhysicalExpr>)>,
    schema: SchemaRef,
}

/// The name of key column `i` and of the time in the events batch [`Events`] reads.
fn key_name(i: usize) -> String {
    format!("__flywheel_key{i}")
}
const TIME: &str = "__flywheel_time";

impl Run {
    async fn run(self, context: Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
        let threads = context.session_config().target_partitions();
        let started = std::time::Instant::now();
        let batches = read_all(&self.events, &context).await?;
        let read = started.elapsed();
        // The events with the columns `Events` reads: keys, time, each aggregate's input.
        let mut fields = Vec::new();
        let mut columns: Vec<Vec<ArrayRef>> = Vec::new();
        for batch in &batches {
            let n = batch.num_rows();
            let mut row: Vec<ArrayRef> = Vec::new();
            for k in &self.event_keys {
                row.push(k.evaluate(batch)?.into_array(n)?);
            }
            row.push(self.event_time.evaluate(batch)?.into_array(n)?);
            for (_, input) in &self.aggregates {
                row.push(input.evaluate(batch)?.into_array(n)?);
            }
            columns.push(row);
        }
        let schema = self.events.schema();
        for (i, k) in self.event_keys.iter().enumerate() {
            fields.push(Field::new(key_name(i), k.data_type(&schema)?, true));
        }
        fields.push(Field::new(TIME, self.event_time.data_type(&schema)?, true));
        for (a, input) in &self.aggregates {
            fields.push(Field::new(&a.name, input.data_type(&schema)?, true));
        }
        let events_schema = Arc::new(Schema::new(fields));
        drop(batches);
        let key_names: Vec<String> = (0..self.event_keys.len()).map(key_name).collect();
        let aggregates: Vec<Aggregate> = self.aggregates.iter().map(|(a, _)| a.clone()).collect();
        let events = blocking(move || {
            // Joined column by column, each column's pieces freed as soon as it is joined: the
            // events are held about once, not twice.
            let mut columns = columns;
            let width = events_schema.fields().len();
            let mut joined = Vec::with_capacity(width);
            for c in 0..width {
                let pieces: Vec<ArrayRef> = columns
                    .iter_mut()
                    .map(|row| {
                        std::mem::replace(
                            &mut row[c],
                            arrow::array::new_null_array(&DataType::Null, 0),
                        )
                    })
                    .collect();
                let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
                joined.push(if refs.is_empty() {
                    arrow::array::new_empty_array(events_schema.field(c).data_type())
                } else {
                    arrow::compute::concat(&refs)?
                });
            }
            drop(columns);
            let batch = RecordBatch::try_new(events_schema, joined)?;
            Events::new(batch, &key_names, TIME, &aggregates, false).map_err(df)
        })
        .await?;
        let grouped = started.elapsed();
        let reservation = MemoryConsumer::new("WindowAggExec").register(context.memory_pool());
        reservation.try_grow(events.memory_size()).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "the events of the aggregate features ({} events, {} MiB) do not fit in \
                 memory_limit: raise it, or shorten the time the events span ({})",
                events.len(),
                events.memory_size() >> 20,
                e.strip_backtrace()
            ))
        })?;
        let events = Arc::new(events);
        let which: Vec<usize> = (0..self.aggregates.len()).collect();
        let out = match self.probes {
            Probes::Rows { input, keys, time } => {
                let probe_batches = read_all(&input, &context).await?;
                let mut probes = Vec::new();
                for batch in &probe_batches {
                    let n = batch.num_rows();
                    let key_columns = keys
                        .iter()
                        .map(|k| k.evaluate(batch)?.into_array(n))
                        .collect::<Result<Vec<_>>>()?;
                    let times = times_us(&time.evaluate(batch)?.into_array(n)?).map_err(df)?;
                    let groups = events.find(&key_columns).map_err(df)?;
                    probes.extend(groups.into_iter().zip(times.iter()));
                }
                let events = Arc::clone(&events);
                let outputs =
                    blocking(move || events.evaluate(&probes, &which, threads).map_err(df)).await?;
                let mut start = 0;
                let mut out = Vec::with_capacity(probe_batches.len());
                for batch in probe_batches {
                    let n = batch.num_rows();
                    let mut columns = batch.columns().to_vec();
                    columns.extend(outputs.iter().map(|o| o.slice(start, n)));
                    start += n;
                    let options = RecordBatchOptions::new().with_row_count(Some(n));
                    out.push(RecordBatch::try_new_with_options(
                        Arc::clone(&self.schema),
                        columns,
                        &options,
                    )?);
                }
                out
            }
            Probes::At { time, keys, .. } => {
                let at = times_us(&time.to_array()?).map_err(df)?;
                let at = at.is_valid(0).then(|| at.value(0));
                // Every key with events, or the keys asked for (found or not).
                let (probes, mut columns): (Vec<Probe>, Vec<ArrayRef>) = match keys {
                    None => {
                        let groups: Vec<u32> = (0..events.key_count() as u32).collect();
                        let take = arrow::array::UInt32Array::from(groups.clone());
                        let columns = events
                            .keys()
                            .iter()
                            .map(|k| Ok(arrow::compute::take(k.as_ref(), &take, None)?))
                            .collect::<Result<Vec<_>>>()?;
                        (groups.into_iter().map(|g| (Some(g), at)).collect(), columns)
                    }
                    Some(values) => {
                        let arrays = values
                            .iter()
                            .map(ScalarValue::to_array)
                            .collect::<Result<Vec<_>>>()?;
                        let groups = events.find(&arrays).map_err(df)?;
                        (groups.into_iter().map(|g| (g, at)).collect(), arrays)
                    }
                };
                columns.push(time.to_array_of_size(probes.len())?);
                let events = Arc::clone(&events);
                columns.extend(
                    blocking(move || events.evaluate(&probes, &which, threads).map_err(df)).await?,
                );
                let columns = columns
                    .into_iter()
                    .zip(self.schema.fields())
                    .map(|(c, f)| {
                        if c.data_type() == f.data_type() {
                            Ok(c)
                        } else {
                            Ok(arrow::compute::cast(&c, f.data_type())?)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                vec![RecordBatch::try_new(Arc::clone(&self.schema), columns)?]
            }
        };
        drop(reservation);
        tracing::info!(
            events = events.len(),
            keys = events.key_count(),
            read_s = read.as_secs_f64(),
            grouped_s = (grouped - read).as_secs_f64(),
            evaluated_s = (started.elapsed() - grouped).as_secs_f64(),
            "aggregate features evaluated"
        );
        Ok(out)
    }
}

/// Runs CPU-heavy work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
}

impl DisplayAs for WindowAggExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|(a, input)| format!("{} := {}({input}) over {}", a.name, a.func.sql(), a.window))
            .collect();
        let probes = match &self.probes {
            Probes::Rows { time, .. } => format!("at={time}"),
            Probes::At { time, .. } => format!("every key at {time}"),
        };
        write!(
            f,
            "WindowAggExec: {probes}, aggregates=[{}]",
            aggs.join(", ")
        )
    }
}

impl ExecutionPlan for WindowAggExec {
    fn name(&self) -> &str {
        "WindowAggExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        match &self.probes {
            Probes::Rows { input, .. } => vec![input, &self.events],
            Probes::At { .. } => vec![&self.events],
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let probe_exprs: Vec<&Arc<dyn PhysicalExpr>> = match &self.probes {
            Probes::Rows { keys, time, .. } => keys.iter().chain([time]).collect(),
            Probes::At { .. } => Vec::new(),
        };
        for e in probe_exprs
            .into_iter()
            .chain(&self.event_keys)
            .chain([&self.event_time])
            .chain(self.aggregates.iter().map(|(_, e)| e))
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (probes, events) = match (&self.probes, children.as_slice()) {
            (Probes::Rows { keys, time, .. }, [input, events]) => (
                Probes::Rows {
                    input: Arc::clone(input),
                    keys: keys.clone(),
                    time: Arc::clone(time),
                },
                Arc::clone(events),
            ),
            (Probes::At { .. }, [events]) => (self.probes.clone(), Arc::clone(events)),
            _ => return internal_err!("WindowAggExec: wrong number of children"),
        };
        Ok(Arc::new(Self::try_new(
            probes,
            events,
            self.event_keys.clone(),
            Arc::clone(&self.event_time),
            self.aggregates.clone(),
        )?))
    }

    /// Probe rows come out in their input's order, but the input's partitions are read into one.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false; self.children().len()]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("WindowAggExec has one partition, not {partition}");
        }
        let run = Run {
            probes: self.probes.clone(),
            events: Arc::clone(&self.events),
            event_keys: self.event_keys.clone(),
            event_time: Arc::clone(&self.event_time),
            aggregates: self.aggregates.clone(),
            schema: Arc::clone(&self.schema),
        };
        let stream = futures::stream::once(async move {
            let batches = run.run(context).await?;
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream.boxed(),
        )))
    }
}
