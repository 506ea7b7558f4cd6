//! Corrections win: among right rows with equal keys and time, the row from the later Delta commit.
//!
//! A data team fixes a wrong value by writing the row again, same keys and event time, in a later
//! commit. The `ASOF JOIN` takes, on equal times, the right row of the file committed last, then
//! the row read last within that file (the row written last). When the right side is a Delta table
//! read through scans, filters, projections and aliases, the analyzer asks delta-rs for each row's
//! file ([`with_file_column`]) and hands the join the files' commit order ([`FileRanks`]); other
//! right sides keep read order.
//!
//! A file's place in the commit order is its Delta `modificationTime` (when its writer created it),
//! then its path: exact across commits written by one clock (the usual single writer, or servers
//! with synchronized clocks), and within one commit it follows the writer's part numbers. The log's
//! commit versions are not used because a checkpoint does not keep the version that added a file.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, StringArray, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, UInt16Type};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, Result, exec_err};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, SubqueryAlias, TableProviderFilterPushDown,
    TableScanBuilder, TableType, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use flywheel_catalog::BoundedPushdownProvider;

/// The column that carries each right row's file (dropped above the join).
pub const FILE_COLUMN: &str = "__flywheel_asof_file";

/// The commit order of a Delta table's files: file id (as the scan's file column gives it) ->
/// rank, later files higher.
#[derive(Debug)]
pub struct FileRanks {
    ranks: HashMap<String, u32>,
    count: usize,
}

impl FileRanks {
    /// The ranks of the files of `table` at the version it is loaded at.
    fn of(table: &deltalake::DeltaTable) -> Option<Self> {
        let snapshot = table.snapshot().ok()?;
        let root = table.table_url().clone();
        let mut files: Vec<(i64, String)> = snapshot
            .log_data()
            .iter()
            .map(|f| (f.modification_time(), f.path().into_owned()))
            .collect();
        files.sort();
        let count = files.len();
        let mut ranks = HashMap::with_capacity(count * 2);
        for (rank, (_, path)) in files.into_iter().enumerate() {
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            // The scan names a file by its URL; keep the relative path too.
            if let Ok(url) = root.join(&path) {
                ranks.insert(url.to_string(), rank);
            }
            ranks.insert(path, rank);
        }
        Some(Self { ranks, count })
    }

    /// How many files the table has.
    pub fn files(&self) -> usize {
        self.count
    }

    /// The rank of each row of a file column (0 for a file it does not know).
    pub fn of_rows(&self, files: &ArrayRef) -> Result<Vec<u32>> {
        let rank = |file: Option<&str>| {
            file.and_then(|f| {
                self.ranks.get(f).copied().or_else(|| {
                    // A percent-encoded id: try it decoded.
                    let decoded = url::Url::parse(f).ok()?.to_file_path().ok()?;
                    self.ranks.iter().find_map(|(k, v)| {
                        url::Url::parse(k)
                            .ok()
                            .and_then(|u| u.to_file_path().ok())
                            .filter(|p| *p == decoded)
                            .map(|_| *v)
                    })
                })
            })
            .unwrap_or(0)
        };
        match files.data_type() {
            DataType::Dictionary(_, _) => {
                let dict: &DictionaryArray<UInt16Type> = files
                    .as_any()
                    .downcast_ref()
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Execution(
                            "the file column of an ASOF JOIN's right side is not a UInt16 dictionary"
                                .into(),
                        )
                    })?;
                let values = arrow::compute::cast(dict.values(), &DataType::Utf8)?;
                let values: &StringArray = values.as_string();
                let value_ranks: Vec<u32> = (0..values.len())
                    .map(|i| rank((!values.is_null(i)).then(|| values.value(i))))
                    .collect();
                Ok(dict
                    .keys()
                    .iter()
                    .map(|k| k.map_or(0, |k| value_ranks[k as usize]))
                    .collect())
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let values = arrow::compute::cast(files, &DataType::Utf8)?;
                let values: &StringArray = values.as_string();
                Ok((0..values.len())
                    .map(|i| rank((!values.is_null(i)).then(|| values.value(i))))
                    .collect())
            }
            other => exec_err!("the file column of an ASOF JOIN's right side is {other}"),
        }
    }
}

/// A Delta table read with [`FILE_COLUMN`] (each row's file id) after its columns. Filters on the
/// table's columns are offered to delta-rs as for any scan (file skipping); filters on the file
/// column are applied above the scan.
#[derive(Debug)]
struct FileColumnProvider {
    table: deltalake::DeltaTable,
    /// Only these files (relative paths), when the scan was restricted to them.
    files: Option<Vec<String>>,
    /// The same scan, built without a log store: it answers which filters it takes.
    probe: DeltaScanNext,
}

impl FileColumnProvider {
    fn new(table: deltalake::DeltaTable, files: Option<Vec<String>>) -> Option<Self> {
        let snapshot = table.snapshot().ok()?.snapshot().clone();
        let config = DeltaScanConfig::new().with_file_column_name(FILE_COLUMN);
        let probe = DeltaScanNext::new(snapshot, config).ok()?;
        Some(Self {
            table,
            files,
            probe,
        })
    }
}

#[async_trait]
impl TableProvider for FileColumnProvider {
    fn schema(&self) -> SchemaRef {
        self.probe.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let builder = self.table.table_provider().with_file_column(FILE_COLUMN);
        let provider = match &self.files {
            Some(files) => builder.with_file_paths(files.clone()).await?,
            None => builder.await?,
        };
        provider.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let on_file = |f: &Expr| f.column_refs().iter().any(|c| c.name == FILE_COLUMN);
        flywheel_catalog::offer_filters(&self.probe, filters, |f| !on_file(f))
    }
}

/// [`FileRanks`] shared by a plan's copies (equal when they are the same ranks).
#[derive(Debug, Clone)]
pub struct SharedRanks(pub Arc<FileRanks>);

impl PartialEq for SharedRanks {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedRanks {}

/// `plan` (an `ASOF JOIN`'s right side) also giving each row's file as [`FILE_COLUMN`], with the
/// files' commit order, when it is a Delta table read through scans, filters, projections and
/// aliases; `None` otherwise (the join keeps read order on ties).
pub fn with_file_column(plan: &LogicalPlan) -> Option<(LogicalPlan, Column, Arc<FileRanks>)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            let any: &dyn std::any::Any = provider.as_ref();
            let bounded = any.downcast_ref::<BoundedPushdownProvider>()?;
            let table = bounded.delta_table()?;
            let ranks = FileRanks::of(table)?;
            let files = bounded.delta_files().map(<[String]>::to_vec);
            let with_file = FileColumnProvider::new(table.clone(), files)?;
            let file_index = with_file.schema().index_of(FILE_COLUMN).ok()?;
            // Bounded like the scan it replaces: oversized filters are not offered to delta-rs.
            let source =
                provider_as_source(Arc::new(BoundedPushdownProvider::new(Arc::new(with_file))));
            let projection = scan.projection.clone().map(|mut p| {
                p.push(file_index);
                p
            });
            let scan = TableScanBuilder::new(scan.table_name.clone(), source)
                .with_projection(projection)
                .with_filters(scan.filters.clone())
                .with_fetch(scan.fetch)
                .with_statistics_requests(scan.statistics_requests.clone())
                .build()
                .ok()?;
            let column = Column::new(Some(scan.table_name.clone()), FILE_COLUMN);
            Some((LogicalPlan::TableScan(scan), column, Arc::new(ranks)))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let (input, _, ranks) = with_file_column(&a.input)?;
            let alias = SubqueryAlias::try_new(Arc::new(input), a.alias.clone()).ok()?;
            let column = Column::new(Some(a.alias.clone()), FILE_COLUMN);
            Some((LogicalPlan::SubqueryAlias(alias), column, ranks))
        }
        LogicalPlan::Projection(p) => {
            let (input, column, ranks) = with_file_column(&p.input)?;
            let mut exprs = p.expr.clone();
            exprs.push(Expr::Column(column.clone()));
            let projection = Projection::try_new(exprs, Arc::new(input)).ok()?;
            Some((LogicalPlan::Projection(projection), column, ranks))
        }
        LogicalPlan::Filter(f) => {
            let (input, column, ranks) = with_file_column(&f.input)?;
            let filter = Filter::try_new(f.predicate.clone(), Arc::new(input)).ok()?;
            Some((LogicalPlan::Filter(filter), column, ranks))
        }
        _ => None,
    }
}

/// The name of [`FileRankUdf`] in plans.
const FILE_RANK_FN: &str = "__flywheel_file_rank";

/// `__flywheel_file_rank(file)`: the commit rank of a row's file (see [`FileRanks`]).
#[derive(Debug)]
struct FileRankUdf {
    ranks: Arc<FileRanks>,
    signature: Signature,
}

impl PartialEq for FileRankUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ranks, &other.ranks)
    }
}

impl Eq for FileRankUdf {}

impl std::hash::Hash for FileRankUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.ranks).hash(state);
    }
}

impl ScalarUDFImpl for FileRankUdf {
    fn name(&self) -> &str {
        FILE_RANK_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [file] = args.args.as_slice() else {
            return exec_err!("{FILE_RANK_FN} takes one argument");
        };
        let files = file.to_array(args.number_rows)?;
        let ranks = self.ranks.of_rows(&files)?;
        Ok(ColumnarValue::Array(Arc::new(UInt32Array::from(ranks))))
    }
}

/// `plan` (a feature view's or label's query) with its rows in the commit order of the rows they
/// come from, when it reads one Delta table through scans, filters, projections and aliases and
/// that table has more than one file: so a correction written in a later commit of the source
/// stays after the row it corrects in the object's table, and wins its ties there too. Other plans
/// are returned as they are.
pub fn in_commit_order(plan: LogicalPlan) -> LogicalPlan {
    let Some((with_file, file, ranks)) = with_file_column(&plan) else {
        return plan;
    };
    if ranks.files() <= 1 {
        return plan;
    }
    let rank = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(FileRankUdf {
            ranks,
            signature: Signature::any(1, Volatility::Immutable),
        })),
        vec![Expr::Column(file)],
    ));
    let columns: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let ordered = LogicalPlanBuilder::from(with_file)
        .sort(vec![rank.sort(true, false)])
        .and_then(|b| b.project(columns))
        .and_then(LogicalPlanBuilder::build);
    ordered.unwrap_or(plan)
}
