//! [`AsOfJoinExec`]: the physical `ASOF JOIN`.
//!
//! The right side is read once, every partition concurrently, and built into a [`RightIndex`]
//! shared by all output partitions (its batches are kept as read, never copied into one). Each left partition then streams through the index, batch by
//! batch: one output batch per left batch, the left columns untouched and the right columns taken
//! by the matched row indices. Output partitioning follows the left input, so both cores work.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, common::collect,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::MatchOp;
use super::index::RightIndex;

type SharedIndex = Arc<OnceCell<std::result::Result<Arc<RightIndex>, Arc<DataFusionError>>>>;

/// Physical `ASOF JOIN`; see the module docs.
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    right_keys: Vec<Arc<dyn PhysicalExpr>>,
    left_time: Arc<dyn PhysicalExpr>,
    right_time: Arc<dyn PhysicalExpr>,
    op: MatchOp,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    index: SharedIndex,
}

impl fmt::Debug for AsOfJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsOfJoinExec")
            .field("left_keys", &self.left_keys)
            .field("right_keys", &self.right_keys)
            .field("left_time", &self.left_time)
            .field("right_time", &self.right_time)
            .field("op", &self.op)
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
        let mut fields: Vec<Arc<Field>> = left.schema().fields().iter().cloned().collect();
        fields.extend(
            right
                .schema()
                .fields()
                .iter()
                .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
        );
        let schema = Arc::new(Schema::new(fields));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(left.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            left,
            right,
            left_keys,
            right_keys,
            left_time,
            right_time,
            op,
            schema,
            properties: Arc::new(properties),
            index: Arc::new(OnceCell::new()),
        })
    }

    /// Reads every right partition concurrently and builds the index, in partition order.
    async fn build_index(
        right: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        time: Arc<dyn PhysicalExpr>,
        context: Arc<TaskContext>,
    ) -> Result<Arc<RightIndex>> {
        let started = std::time::Instant::now();
        let partitions = right.output_partitioning().partition_count();
        let mut tasks = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let stream = right.execute(p, Arc::clone(&context))?;
            tasks.push(SpawnedTask::spawn(collect(stream)));
        }
        let mut batches = Vec::new();
        for task in tasks {
            let part = task
                .join()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            batches.extend(part);
        }
        let read = started.elapsed();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let schema = right.schema();
        let index = tokio::task::spawn_blocking(move || {
            RightIndex::build(&schema, batches, |batch| {
                let n = batch.num_rows();
                let keys = keys
                    .iter()
                    .map(|k| k.evaluate(batch)?.into_array(n))
                    .collect::<Result<Vec<_>>>()?;
                Ok((keys, time.evaluate(batch)?.into_array(n)?))
            })
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        tracing::debug!(rows, partitions, ?read, built = ?(started.elapsed() - read), "ASOF JOIN right side indexed");
        Ok(Arc::new(index))
    }
}

/// Joins one left batch against the index.
fn probe_batch(
    index: &RightIndex,
    left: RecordBatch,
    keys: &[Arc<dyn PhysicalExpr>],
    time: &Arc<dyn PhysicalExpr>,
    op: MatchOp,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let n = left.num_rows();
    let key_arrays = keys
        .iter()
        .map(|k| k.evaluate(&left)?.into_array(n))
        .collect::<Result<Vec<_>>>()?;
    let time_array = time.evaluate(&left)?.into_array(n)?;
    let matches = index.probe(&key_arrays, &time_array, op)?;
    let mut columns = left.columns().to_vec();
    columns.extend(index.gather(&matches)?);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AsOfJoinExec: match=({} {} {})",
            self.left_time, self.op, self.right_time
        )?;
        if !self.left_keys.is_empty() {
            let keys: Vec<String> = self
                .left_keys
                .iter()
                .zip(&self.right_keys)
                .map(|(l, r)| format!("{l} = {r}"))
                .collect();
            write!(f, ", on=[{}]", keys.join(", "))?;
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
        vec![&self.left, &self.right]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self
            .left_keys
            .iter()
            .chain(&self.right_keys)
            .chain([&self.left_time, &self.right_time])
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
        Ok(Arc::new(Self::try_new(
            left,
            right,
            self.left_keys.clone(),
            self.right_keys.clone(),
            Arc::clone(&self.left_time),
            Arc::clone(&self.right_time),
            self.op,
        )?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let children = vec![Arc::clone(&self.left), Arc::clone(&self.right)];
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
        let shared = Arc::clone(&self.index);
        let right = Arc::clone(&self.right);
        let right_keys = self.right_keys.clone();
        let right_time = Arc::clone(&self.right_time);
        let left = Arc::clone(&self.left);
        let left_keys = self.left_keys.clone();
        let left_time = Arc::clone(&self.left_time);
        let op = self.op;
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let built = shared
                .get_or_init(|| async {
                    Self::build_index(right, right_keys, right_time, Arc::clone(&context))
                        .await
                        .map_err(Arc::new)
                })
                .await;
            let index = match built {
                Ok(index) => Arc::clone(index),
                Err(e) => return Err(DataFusionError::Shared(Arc::clone(e))),
            };
            let left_stream = left.execute(partition, context)?;
            Ok(left_stream
                .map(move |batch| probe_batch(&index, batch?, &left_keys, &left_time, op, &schema)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out_schema,
            stream.boxed(),
        )))
    }
}
