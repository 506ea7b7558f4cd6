//! [`AsOfJoinExec`]: the physical `ASOF JOIN`.
//!
//! The join runs once, shared by all output partitions:
//! 1. every left partition is read concurrently and indexed ([`LeftIndex`]: grouped by key, sorted by
//!    time); the left side is the label spine, usually far smaller than the feature history;
//! 2. every right partition streams concurrently into a [`RightPart`]: each right row's group is
//!    found as it is decoded, and rows no left row can take are dropped at once; the right side is
//!    never sorted;
//! 3. [`Matches`] locates every kept right row in the index, bucket by bucket on all cores.
//!
//! Each output partition then emits its left partition's batches as read, the right columns taken
//! from the matched rows. Output partitioning follows the left input.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, reset_plan_states};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, common::collect,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::MatchOp;
use super::candidates::{Matches, Pass, RightPart};
use super::commit_order::FileRanks;
use super::left_index::{LeftIndex, time_values};

/// The joined result, computed once by whichever output partition runs first.
struct Joined {
    /// Left batches by partition, as read.
    left: Vec<Vec<RecordBatch>>,
    /// Read-order number of each left partition's first row.
    starts: Vec<usize>,
    /// Each output column: a column of `left`'s batches or of the gathered right columns.
    columns: Vec<Side>,
    matches: Matches,
    /// The left side's memory, held until the output is emitted.
    _left_reservation: MemoryReservation,
}

type SharedJoin = Arc<OnceCell<std::result::Result<Arc<Joined>, Arc<DataFusionError>>>>;

/// The two inputs and the match condition of a join.
#[derive(Clone)]
struct JoinSpec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    right_keys: Vec<Arc<dyn PhysicalExpr>>,
    left_time: Arc<dyn PhysicalExpr>,
    right_time: Arc<dyn PhysicalExpr>,
    op: MatchOp,
    /// The right side's file column and its files' commit order: on equal times the later
    /// commit's row wins.
    right_file: Option<(Arc<dyn PhysicalExpr>, Arc<FileRanks>)>,
}

/// Physical `ASOF JOIN`; see the module docs.
pub struct AsOfJoinExec {
    spec: JoinSpec,
    /// Embedded output projection: (column of left ++ right, output name); `None` for all columns.
    output: Option<Vec<(usize, String)>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    joined: SharedJoin,
}

impl fmt::Debug for AsOfJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsOfJoinExec")
            .field("left_keys", &self.spec.left_keys)
            .field("right_keys", &self.spec.right_keys)
            .field("left_time", &self.spec.left_time)
            .field("right_time", &self.spec.right_time)
            .field("op", &self.spec.op)
            .field("output", &self.output)
            .finish()
    }
}

impl AsOfJoinExec {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        left_time: Arc<dyn PhysicalExpr>,
        right_time: Arc<dyn PhysicalExpr>,
        op: MatchOp,
    ) -> Result<Self> {
        if left_keys.len() != right_keys.len() {
            return internal_err!(
                "AsOfJoinExec: {} left keys but {} right keys",
                left_keys.len(),
                right_keys.len()
            );
        }
        let spec = JoinSpec {
            left,
            right,
            left_keys,
            right_keys,
            left_time,
            right_time,
            op,
            right_file: None,
        };
        Self::from_spec(spec, None)
    }

    /// This join, breaking ties between right rows of equal time by the commit order of their
    /// files (`file`: the right side's file column).
    pub fn with_right_file(mut self, file: Arc<dyn PhysicalExpr>, ranks: Arc<FileRanks>) -> Self {
        self.spec.right_file = Some((file, ranks));
        self
    }

    /// The join of `spec`, emitting only `output` (see the field).
    fn from_spec(spec: JoinSpec, output: Option<Vec<(usize, String)>>) -> Result<Self> {
        let schema = Self::output_schema(&spec.left, &spec.right, &output)?;
        Ok(Self {
            properties: Self::plan_properties(&spec.left, &schema),
            spec,
            output,
            schema,
            joined: Arc::new(OnceCell::new()),
        })
    }

    /// Left columns, then right columns made nullable, then the embedded projection.
    fn output_schema(
        left: &Arc<dyn ExecutionPlan>,
        right: &Arc<dyn ExecutionPlan>,
        output: &Option<Vec<(usize, String)>>,
    ) -> Result<SchemaRef> {
        let mut fields: Vec<Arc<Field>> = left.schema().fields().iter().cloned().collect();
        fields.extend(
            right
                .schema()
                .fields()
                .iter()
                .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
        );
        if let Some(output) = output {
            fields = output
                .iter()
                .map(|(i, name)| match fields.get(*i) {
                    Some(f) => Ok(Arc::new(f.as_ref().clone().with_name(name))),
                    None => internal_err!("AsOfJoinExec: projected column {i} out of range"),
                })
                .collect::<Result<_>>()?;
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    fn plan_properties(left: &Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> Arc<PlanProperties> {
        Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(schema)),
            Partitioning::UnknownPartitioning(left.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ))
    }

    fn inputs(&self) -> JoinInputs {
        JoinInputs {
            spec: self.spec.clone(),
            columns: self.output_columns(),
        }
    }

    /// Which input column each output column is.
    fn output_columns(&self) -> Vec<Side> {
        let left_width = self.spec.left.schema().fields().len();
        let all: Vec<usize> = match &self.output {
            Some(output) => output.iter().map(|(i, _)| *i).collect(),
            None => (0..left_width + self.spec.right.schema().fields().len()).collect(),
        };
        all.into_iter()
            .map(|i| {
                if i < left_width {
                    Side::Left(i)
                } else {
                    Side::Right(i - left_width)
                }
            })
            .collect()
    }
}

/// An output column: a left or a right input column.
#[derive(Clone, Copy)]
enum Side {
    Left(usize),
    Right(usize),
}

/// What [`JoinInputs::run`] needs of the plan, owned so the shared future can outlive a call.
struct JoinInputs {
    spec: JoinSpec,
    columns: Vec<Side>,
}

impl JoinInputs {
    /// The left and right input columns the output needs, each in input order.
    fn kept(&self) -> (Vec<usize>, Vec<usize>) {
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for c in &self.columns {
            match *c {
                Side::Left(i) => left.push(i),
                Side::Right(i) => right.push(i),
            }
        }
        for v in [&mut left, &mut right] {
            v.sort_unstable();
            v.dedup();
        }
        (left, right)
    }

    /// Reads the right side in `passes` passes (each keeping its share of the key groups, all of them
    /// in one pass) and matches each against the index.
    async fn match_right(
        &self,
        context: &Arc<TaskContext>,
        index: &Arc<LeftIndex>,
        kept: &[usize],
        passes: usize,
    ) -> Result<Matches> {
        let mut all = Vec::with_capacity(passes);
        for pass in 0..passes {
            let pass = Pass { pass, of: passes };
            // A plan's operators may run once only (a repartition's channels, for one): every pass
            // after a first attempt reads a fresh copy.
            let right = if passes == 1 {
                Arc::clone(&self.spec.right)
            } else {
                reset_plan_states(Arc::clone(&self.spec.right))?
            };
            let partitions = right.output_partitioning().partition_count();
            let mut tasks = Vec::with_capacity(partitions);
            for p in 0..partitions {
                let mut stream = right.execute(p, Arc::clone(context))?;
                let reservation = MemoryConsumer::new(format!("AsOfJoinExec right[{p}]"))
                    .register(context.memory_pool());
                let mut part = RightPart::new(Arc::clone(index), pass, reservation);
                let (keys, time, file) = (
                    self.spec.right_keys.clone(),
                    Arc::clone(&self.spec.right_time),
                    self.spec.right_file.clone(),
                );
                let kept = kept.to_vec();
                tasks.push(SpawnedTask::spawn(async move {
                    while let Some(batch) = stream.next().await {
                        let batch = batch?;
                        let (k, t) = evaluate(&batch, &keys, &time)?;
                        let ranks =
                            match &file {
                                Some((file, ranks)) => Some(ranks.of_rows(
                                    &file.evaluate(&batch)?.into_array(batch.num_rows())?,
                                )?),
                                None => None,
                            };
                        part.push(batch.project(&kept)?, &k, &time_values(&t)?, ranks)?;
                    }
                    Ok::<_, DataFusionError>(part)
                }));
            }
            let parts = join_all(tasks).await?;
            let schema = Arc::new(self.spec.right.schema().project(kept)?);
            let (index, op) = (Arc::clone(index), self.spec.op);
            let several = passes > 1;
            all.push(
                blocking(move || {
                    let matches = Matches::build(&index, parts, op, &schema)?;
                    if several {
                        matches.compact()
                    } else {
                        Ok(matches)
                    }
                })
                .await?,
            );
        }
        Ok(Matches::concat(all))
    }

    /// Runs the whole join: the left side read and indexed, the right side streamed through it.
    async fn run(self, context: Arc<TaskContext>) -> Result<Arc<Joined>> {
        let started = std::time::Instant::now();
        let left = read_partitions(&self.spec.left, &context).await?;
        let mut starts = Vec::with_capacity(left.len());
        let mut rows = 0;
        for part in &left {
            starts.push(rows);
            rows += part.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        // The left side is held whole (its batches and about 40 bytes a row of index): count it, and
        // say so plainly when it does not fit, since it is not split into passes.
        let left_bytes = left
            .iter()
            .flatten()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>()
            + rows * 40;
        let left_reservation =
            MemoryConsumer::new("AsOfJoinExec left").register(context.memory_pool());
        if let Err(e) = left_reservation.try_grow(left_bytes) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "ASOF JOIN: the left side ({rows} rows, {} MiB with its index) does not fit in the \
                 memory limit ({e}); raise memory_limit, or put the smaller input on the left",
                left_bytes >> 20
            )));
        }
        let (keys, time) = (
            self.spec.left_keys.clone(),
            Arc::clone(&self.spec.left_time),
        );
        let batches: Vec<RecordBatch> = left.iter().flatten().cloned().collect();
        let index =
            blocking(move || LeftIndex::build(&batches, |batch| evaluate(batch, &keys, &time)))
                .await?;
        let index = Arc::new(index);
        let indexed = started.elapsed();
        // Only the columns the output needs are held from here on.
        let (left_kept, right_kept) = self.kept();
        let left = left
            .into_iter()
            .map(|part| {
                part.into_iter()
                    .map(|b| b.project(&left_kept))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let columns = self
            .columns
            .iter()
            .map(|c| match *c {
                Side::Left(i) => Side::Left(left_kept.partition_point(|&k| k < i)),
                Side::Right(i) => Side::Right(right_kept.partition_point(|&k| k < i)),
            })
            .collect();

        let mut passes = 1;
        let matches = loop {
            match self
                .match_right(&context, &index, &right_kept, passes)
                .await
            {
                Ok(matches) => break matches,
                Err(e) if is_exhausted(&e) => {
                    if passes >= MAX_PASSES {
                        return Err(DataFusionError::ResourcesExhausted(format!(
                            "ASOF JOIN: even a 1/{MAX_PASSES} share of the right side does not fit \
                             in the memory limit ({e}); raise memory_limit, or join a smaller \
                             right side"
                        )));
                    }
                    passes *= 4;
                    tracing::info!(
                        passes,
                        "ASOF JOIN: the right side does not fit in the memory limit; matching it in {passes} passes"
                    );
                }
                Err(e) => return Err(e),
            }
        };
        let streamed = started.elapsed();
        tracing::debug!(
            left_rows = rows,
            ?indexed,
            streamed = ?(streamed - indexed),
            passes,
            "ASOF JOIN computed"
        );
        Ok(Arc::new(Joined {
            left,
            starts,
            columns,
            matches,
            _left_reservation: left_reservation,
        }))
    }
}

/// Most passes over the right side before an ASOF JOIN gives up on a memory limit.
const MAX_PASSES: usize = 64;

/// Whether `e` is the memory pool refusing a reservation.
pub(crate) fn is_exhausted(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ResourcesExhausted(_) => true,
        DataFusionError::Shared(inner) => is_exhausted(inner),
        DataFusionError::Context(_, inner) => is_exhausted(inner),
        DataFusionError::External(inner) => inner
            .downcast_ref::<DataFusionError>()
            .is_some_and(is_exhausted),
        _ => false,
    }
}

/// Reads every partition of `plan` concurrently.
pub(crate) async fn read_partitions(
    plan: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
) -> Result<Vec<Vec<RecordBatch>>> {
    let partitions = plan.output_partitioning().partition_count();
    let mut tasks = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let stream = plan.execute(p, Arc::clone(context))?;
        tasks.push(SpawnedTask::spawn(collect(stream)));
    }
    join_all(tasks).await
}

/// Waits for every task, in order; the first failure (a task's error or its panic) wins.
///
/// Every task is awaited, even after one failed: a task dropped early is aborted only later, and
/// until then holds its memory reservation, which the next, smaller pass over the right side would
/// find still taken (a test under a memory limit failed 1 run in 6 that way).
async fn join_all<T: Send + 'static>(tasks: Vec<SpawnedTask<Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    let mut failed = None;
    for task in tasks {
        let result = task
            .join()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))
            .and_then(|r| r);
        match result {
            Ok(value) => out.push(value),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Runs CPU-heavy work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
}

/// A batch's key columns and time column.
fn evaluate(
    batch: &RecordBatch,
    keys: &[Arc<dyn PhysicalExpr>],
    time: &Arc<dyn PhysicalExpr>,
) -> Result<(Vec<ArrayRef>, ArrayRef)> {
    let n = batch.num_rows();
    let keys = keys
        .iter()
        .map(|k| k.evaluate(batch)?.into_array(n))
        .collect::<Result<Vec<_>>>()?;
    Ok((keys, time.evaluate(batch)?.into_array(n)?))
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AsOfJoinExec: match=({} {} {})",
            self.spec.left_time, self.spec.op, self.spec.right_time
        )?;
        if !self.spec.left_keys.is_empty() {
            let keys: Vec<String> = self
                .spec
                .left_keys
                .iter()
                .zip(&self.spec.right_keys)
                .map(|(l, r)| format!("{l} = {r}"))
                .collect();
            write!(f, ", on=[{}]", keys.join(", "))?;
        }
        if self.output.is_some() {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.spec.left, &self.spec.right]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self
            .spec
            .left_keys
            .iter()
            .chain(&self.spec.right_keys)
            .chain([&self.spec.left_time, &self.spec.right_time])
            .chain(self.spec.right_file.as_ref().map(|(f, _)| f))
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
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = match children.try_into() {
            Ok(pair) => pair,
            Err(_) => return internal_err!("AsOfJoinExec takes exactly two children"),
        };
        let spec = JoinSpec {
            left,
            right,
            ..self.spec.clone()
        };
        Ok(Arc::new(Self::from_spec(spec, self.output.clone())?))
    }

    /// Takes a projection of plain columns above the join into it, so the join holds and gathers
    /// only the columns that are used (the right side's keys and times, typically, are not).
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let mut output = Vec::with_capacity(projection.expr().len());
        for e in projection.expr() {
            let Some(column) = e.expr.downcast_ref::<Column>() else {
                return Ok(None);
            };
            let input = match &self.output {
                Some(current) => match current.get(column.index()) {
                    Some((i, _)) => *i,
                    None => return Ok(None),
                },
                None => column.index(),
            };
            output.push((input, e.alias.clone()));
        }
        Ok(Some(Arc::new(Self::from_spec(
            self.spec.clone(),
            Some(output),
        )?)))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let children = vec![Arc::clone(&self.spec.left), Arc::clone(&self.spec.right)];
        #[allow(deprecated)]
        self.with_new_children(children)
    }

    /// Neither side's order survives: left rows are probed (and emitted) grouped by key. Claiming
    /// otherwise let the optimizer push an `ORDER BY` below the join, where it sorted nothing.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let shared = Arc::clone(&self.joined);
        let inputs = self.inputs();
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let joined = shared
                .get_or_init(|| async { inputs.run(context).await.map_err(Arc::new) })
                .await;
            let joined = match joined {
                Ok(joined) => Arc::clone(joined),
                Err(e) => return Err(DataFusionError::Shared(Arc::clone(e))),
            };
            let batches = joined.left.get(partition).cloned().unwrap_or_default();
            let mut start = joined.starts.get(partition).copied().unwrap_or(0);
            let output = batches.into_iter().map(move |batch| {
                let n = batch.num_rows();
                let right = joined.matches.gather(start, n)?;
                start += n;
                let columns = joined
                    .columns
                    .iter()
                    .map(|c| match *c {
                        Side::Left(i) => Arc::clone(batch.column(i)),
                        Side::Right(i) => Arc::clone(&right[i]),
                    })
                    .collect();
                let options = RecordBatchOptions::new().with_row_count(Some(n));
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    columns,
                    &options,
                )?)
            });
            Ok(futures::stream::iter(output))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out_schema,
            stream.boxed(),
        )))
    }
}
