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
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, reset_plan_states};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::events::{Events, times_us};
use super::spec::Aggregate;
use crate::asof::{blocking, is_exhausted, read_partitions};
use crate::delta_types::value_type;

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
#[derive(Debug, Clone)]
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
                    let t = key.data_type(&events_schema)?;
                    fields.push(Field::new(name, value_type(&t).clone(), true));
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

/// A probe: its key's group among the events (if any) and its time in microseconds.
type Probe = (Option<u32>, Option<i64>);

/// The name of key column `i` and of the time in the events batch [`Events`] reads.
fn key_name(i: usize) -> String {
    format!("__flywheel_key{i}")
}
const TIME: &str = "__flywheel_time";

/// Most passes over the events before the operator gives up on a memory limit.
const MAX_PASSES: usize = 64;

/// The pass (of `passes`) each row's key belongs to: a hash of its keys (of the events' key
/// types), the same for a probe and the events of its key.
fn pass_of(keys: &[ArrayRef], passes: usize) -> Result<Vec<usize>> {
    use std::hash::{Hash, Hasher};
    let n = keys.first().map_or(0, |k| k.len());
    if let [k] = keys
        && k.data_type().is_integer()
    {
        let ints = arrow::compute::cast(k, &DataType::Int64)?;
        let ints = ints.as_any().downcast_ref::<arrow::array::Int64Array>();
        if let Some(ints) = ints {
            return Ok(ints
                .values()
                .iter()
                .map(|v| ((*v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % passes)
                .collect());
        }
    }
    let converter = arrow::row::RowConverter::new(
        keys.iter()
            .map(|k| arrow::row::SortField::new(k.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(keys)?;
    Ok((0..n)
        .map(|i| {
            let mut h = std::hash::DefaultHasher::new();
            rows.row(i).as_ref().hash(&mut h);
            h.finish() as usize % passes
        })
        .collect())
}

/// `columns` (pieces of equal width) joined column by column, each column's pieces freed as soon
/// as it is joined, so the rows are held about once, not twice.
fn join_columns(schema: &SchemaRef, mut pieces: Vec<Vec<ArrayRef>>) -> Result<RecordBatch> {
    let width = schema.fields().len();
    let mut joined = Vec::with_capacity(width);
    for c in 0..width {
        let column: Vec<ArrayRef> = pieces
            .iter_mut()
            .map(|row| {
                std::mem::replace(
                    &mut row[c],
                    arrow::array::new_null_array(&DataType::Null, 0),
                )
            })
            .collect();
        let refs: Vec<&dyn Array> = column.iter().map(|a| a.as_ref()).collect();
        joined.push(if refs.is_empty() {
            arrow::array::new_empty_array(schema.field(c).data_type())
        } else {
            arrow::compute::concat(&refs)?
        });
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), joined)?)
}

impl WindowAggExec {
    /// The events (of `pass`, when the keys are split into passes) grouped and sorted, and the
    /// reservation of the memory they hold.
    async fn read_events(
        &self,
        context: &Arc<TaskContext>,
        pass: Option<(usize, usize)>,
    ) -> Result<(Events, MemoryReservation)> {
        // A plan's operators may run once only (a repartition's channels, for one): every pass
        // of a split read, which follows a first attempt, reads a fresh copy.
        let plan = match pass {
            Some((_, passes)) if passes > 1 => reset_plan_states(Arc::clone(&self.events))?,
            _ => Arc::clone(&self.events),
        };
        let schema = plan.schema();
        let mut fields = Vec::new();
        for (i, k) in self.event_keys.iter().enumerate() {
            fields.push(Field::new(key_name(i), k.data_type(&schema)?, true));
        }
        fields.push(Field::new(TIME, self.event_time.data_type(&schema)?, true));
        for (a, input) in &self.aggregates {
            fields.push(Field::new(&a.name, input.data_type(&schema)?, true));
        }
        let events_schema = Arc::new(Schema::new(fields));
        let read =
            Arc::new(MemoryConsumer::new("WindowAggExec events").register(context.memory_pool()));
        let partitions = plan.output_partitioning().partition_count();
        let mut reads = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let mut stream = plan.execute(p, Arc::clone(context))?;
            let read = Arc::clone(&read);
            reads.push(async move {
                let mut pieces: Vec<Vec<ArrayRef>> = Vec::new();
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    let n = batch.num_rows();
                    // Keys, time, each aggregate's input.
                    let mut row: Vec<ArrayRef> = Vec::new();
                    for k in &self.event_keys {
                        row.push(k.evaluate(&batch)?.into_array(n)?);
                    }
                    row.push(self.event_time.evaluate(&batch)?.into_array(n)?);
                    for (_, input) in &self.aggregates {
                        row.push(input.evaluate(&batch)?.into_array(n)?);
                    }
                    if let Some((p, passes)) = pass.filter(|(_, passes)| *passes > 1) {
                        let of = pass_of(&row[..self.event_keys.len()], passes)?;
                        let mask: arrow::array::BooleanArray =
                            of.iter().map(|&q| Some(q == p)).collect();
                        row = row
                            .iter()
                            .map(|c| Ok(arrow::compute::filter(c.as_ref(), &mask)?))
                            .collect::<Result<Vec<_>>>()?;
                    }
                    read.try_grow(row.iter().map(|c| c.get_array_memory_size()).sum())?;
                    pieces.push(row);
                }
                Ok::<_, DataFusionError>(pieces)
            });
        }
        let pieces: Vec<Vec<ArrayRef>> = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let key_names: Vec<String> = (0..self.event_keys.len()).map(key_name).collect();
        let aggregates: Vec<Aggregate> = self.aggregates.iter().map(|(a, _)| a.clone()).collect();
        let events = blocking(move || {
            let batch = join_columns(&events_schema, pieces)?;
            Events::new(batch, &key_names, TIME, &aggregates, false).map_err(df)
        })
        .await?;
        let held = MemoryConsumer::new("WindowAggExec").register(context.memory_pool());
        held.try_grow(events.memory_size())?;
        drop(read);
        Ok((events, held))
    }

    async fn run(self, context: Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
        let started = std::time::Instant::now();
        let out = match &self.probes {
            Probes::Rows { input, keys, time } => {
                self.at_rows(&context, Arc::clone(input), keys, time)
                    .await?
            }
            Probes::At { time, keys, .. } => {
                let (events, held) = self.read_events(&context, None).await.map_err(|e| {
                    if is_exhausted(&e) {
                        DataFusionError::ResourcesExhausted(format!(
                            "the events of the aggregate features do not fit in memory_limit: \
                             raise it ({})",
                            e.strip_backtrace()
                        ))
                    } else {
                        e
                    }
                })?;
                let out = self.at_time(&context, events, time, keys.clone()).await?;
                drop(held);
                out
            }
        };
        tracing::info!(
            elapsed_s = started.elapsed().as_secs_f64(),
            "aggregate features evaluated"
        );
        Ok(out)
    }

    /// Every key (or the keys asked for) at one time.
    async fn at_time(
        &self,
        context: &Arc<TaskContext>,
        events: Events,
        time: &ScalarValue,
        keys: Option<Vec<ScalarValue>>,
    ) -> Result<Vec<RecordBatch>> {
        let threads = context.session_config().target_partitions();
        let which: Vec<usize> = (0..self.aggregates.len()).collect();
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
        columns
            .extend(blocking(move || events.evaluate(&probes, &which, threads).map_err(df)).await?);
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
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }

    /// The aggregates at each row of `input`, appended to it. The events are read in one pass,
    /// or, when they do not fit in the memory limit, in 2, 4, ... passes that each hold the keys
    /// of one share (the probes are held throughout).
    async fn at_rows(
        &self,
        context: &Arc<TaskContext>,
        input: Arc<dyn ExecutionPlan>,
        keys: &[Arc<dyn PhysicalExpr>],
        time: &Arc<dyn PhysicalExpr>,
    ) -> Result<Vec<RecordBatch>> {
        let probe_batches: Vec<RecordBatch> = read_partitions(&input, context)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let held = MemoryConsumer::new("WindowAggExec probes").register(context.memory_pool());
        let bytes: usize = probe_batches
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum();
        held.try_grow(bytes).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "aggregate features: the probe rows ({} MiB) do not fit in memory_limit; raise it ({})",
                bytes >> 20,
                e.strip_backtrace()
            ))
        })?;
        // The probes' keys, of the events' key types, and times.
        let events_schema = self.events.schema();
        let mut key_pieces: Vec<Vec<ArrayRef>> = Vec::new();
        let mut times: Vec<Option<i64>> = Vec::new();
        for batch in &probe_batches {
            let n = batch.num_rows();
            let mut row = Vec::with_capacity(keys.len());
            for (k, e) in keys.iter().zip(&self.event_keys) {
                let column = k.evaluate(batch)?.into_array(n)?;
                let event_type = e.data_type(&events_schema)?;
                let to = value_type(&event_type);
                row.push(if column.data_type() == to {
                    column
                } else {
                    arrow::compute::cast(&column, to)?
                });
            }
            key_pieces.push(row);
            times.extend(
                times_us(&time.evaluate(batch)?.into_array(n)?)
                    .map_err(df)?
                    .iter(),
            );
        }
        let key_schema = Arc::new(Schema::new(
            key_pieces
                .first()
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .map(|(i, c)| Field::new(key_name(i), c.data_type().clone(), true))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        ));
        let probe_keys = if key_pieces.is_empty() {
            Vec::new()
        } else {
            join_columns(&key_schema, key_pieces)?.columns().to_vec()
        };
        let mut passes = 1;
        let outputs = loop {
            match self.in_passes(context, &probe_keys, &times, passes).await {
                Err(e) if is_exhausted(&e) && passes < MAX_PASSES => {
                    passes *= 2;
                    tracing::info!(
                        passes,
                        "aggregate features: the events do not fit in memory_limit; reading them in passes"
                    );
                }
                Err(e) if is_exhausted(&e) => {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "aggregate features: even a {MAX_PASSES}th of the events' keys does not fit \
                         in memory_limit; raise it ({})",
                        e.strip_backtrace()
                    )));
                }
                other => break other?,
            }
        };
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
        drop(held);
        Ok(out)
    }

    /// Each aggregate at every probe, the events read in `passes` passes.
    async fn in_passes(
        &self,
        context: &Arc<TaskContext>,
        probe_keys: &[ArrayRef],
        times: &[Option<i64>],
        passes: usize,
    ) -> Result<Vec<ArrayRef>> {
        let threads = context.session_config().target_partitions();
        let which: Vec<usize> = (0..self.aggregates.len()).collect();
        let probe_pass = if passes > 1 {
            Some(pass_of(probe_keys, passes)?)
        } else {
            None
        };
        let mut outputs: Vec<Vec<ArrayRef>> = Vec::with_capacity(passes);
        let mut positions = vec![(0usize, 0usize); times.len()];
        for pass in 0..passes {
            let (events, held) = self.read_events(context, Some((pass, passes))).await?;
            let subset: Vec<u32> = (0..times.len() as u32)
                .filter(|&i| probe_pass.as_ref().is_none_or(|of| of[i as usize] == pass))
                .collect();
            let take = arrow::array::UInt32Array::from(subset.clone());
            let keys = probe_keys
                .iter()
                .map(|k| Ok(arrow::compute::take(k.as_ref(), &take, None)?))
                .collect::<Result<Vec<_>>>()?;
            let groups = events.find(&keys).map_err(df)?;
            let probes: Vec<Probe> = groups
                .into_iter()
                .zip(&subset)
                .map(|(g, &i)| (g, times[i as usize]))
                .collect();
            for (j, &i) in subset.iter().enumerate() {
                positions[i as usize] = (pass, j);
            }
            let which = which.clone();
            outputs.push(
                blocking(move || events.evaluate(&probes, &which, threads).map_err(df)).await?,
            );
            drop(held);
        }
        if passes == 1 {
            return Ok(outputs.remove(0));
        }
        (0..self.aggregates.len())
            .map(|a| {
                let parts: Vec<&dyn Array> = outputs.iter().map(|o| o[a].as_ref()).collect();
                Ok(arrow::compute::interleave(&parts, &positions)?)
            })
            .collect()
    }
}

impl DisplayAs for WindowAggExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|(a, input)| a.explain(input))
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
        let run = self.clone();
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
