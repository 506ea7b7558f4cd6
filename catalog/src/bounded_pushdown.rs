//! [`BoundedPushdownProvider`]: a table provider that keeps very large filters out of the scan.
//!
//! DataFusion offers every `WHERE` conjunct to a table's scan; delta-rs turns the ones it takes into
//! a delta-kernel predicate for file skipping, and does so recursively: `user_id IN (<200,000
//! values>)` becomes a chain of 200,000 `OR`s that its conversion walks one stack frame per term,
//! which overflows any thread's stack and aborts the whole server. Wrapped in this provider, a
//! filter larger than [`MAX_PUSHED_FILTER_NODES`] expression nodes is answered `Unsupported`: the
//! scan reads without it and DataFusion's own filter (which handles such lists with a hash set)
//! applies it. Smaller filters reach delta-rs as before. Everything else is passed through.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Constraints, Statistics};
use datafusion::error::Result;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// The most expression nodes (an `IN` list item counts as one) a filter may have and still be
/// offered to the wrapped provider's scan.
pub const MAX_PUSHED_FILTER_NODES: usize = 1_000;

/// Asks `inner` which of `filters` its scan takes, offering it only those `offer` accepts; the
/// others are answered `Unsupported` (DataFusion applies them above the scan).
pub fn offer_filters(
    inner: &dyn TableProvider,
    filters: &[&Expr],
    offer: impl Fn(&Expr) -> bool,
) -> Result<Vec<TableProviderFilterPushDown>> {
    let offered: Vec<&Expr> = filters.iter().copied().filter(|f| offer(f)).collect();
    let mut answers = inner.supports_filters_pushdown(&offered)?.into_iter();
    Ok(filters
        .iter()
        .map(|f| {
            if offer(f) {
                answers
                    .next()
                    .unwrap_or(TableProviderFilterPushDown::Unsupported)
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect())
}

/// Passes everything to `inner`, except that filters over [`MAX_PUSHED_FILTER_NODES`] nodes are
/// not pushed into its scan.
#[derive(Debug)]
pub struct BoundedPushdownProvider {
    inner: Arc<dyn TableProvider>,
    /// The Delta table `inner` reads, when it is one (planners that need more of it than the
    /// provider gives, such as the files rows come from, start from it).
    table: Option<deltalake::DeltaTable>,
    /// The files of `table` the scan is restricted to, if it is (relative paths).
    files: Option<Vec<String>>,
}

impl BoundedPushdownProvider {
    pub fn new(inner: Arc<dyn TableProvider>) -> Self {
        Self {
            inner,
            table: None,
            files: None,
        }
    }

    /// `inner`, a scan of `table` (at the version it is loaded at).
    pub fn of_delta(inner: Arc<dyn TableProvider>, table: deltalake::DeltaTable) -> Self {
        Self {
            inner,
            table: Some(table),
            files: None,
        }
    }

    /// `inner`, a scan of only `files` (relative paths) of `table`.
    pub fn of_delta_files(
        inner: Arc<dyn TableProvider>,
        table: deltalake::DeltaTable,
        files: Vec<String>,
    ) -> Self {
        Self {
            inner,
            table: Some(table),
            files: Some(files),
        }
    }

    /// The files the scan is restricted to, if it is.
    pub fn delta_files(&self) -> Option<&[String]> {
        self.files.as_deref()
    }

    /// The Delta table this provider reads, if it reads one.
    pub fn delta_table(&self) -> Option<&deltalake::DeltaTable> {
        self.table.as_ref()
    }
}

/// Whether `filter` has more than [`MAX_PUSHED_FILTER_NODES`] nodes (counting stops there).
fn too_large(filter: &Expr) -> bool {
    let mut nodes = 0usize;
    let _ = filter.apply(|e| {
        nodes += match e {
            Expr::InList(list) => 1 + list.list.len(),
            _ => 1,
        };
        Ok(if nodes > MAX_PUSHED_FILTER_NODES {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    nodes > MAX_PUSHED_FILTER_NODES
}

#[async_trait]
impl TableProvider for BoundedPushdownProvider {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        self.inner.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        offer_filters(self.inner.as_ref(), filters, |f| !too_large(f))
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.insert_into(state, input, insert_op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn long_in_lists_and_deep_filters_are_too_large() {
        let small = col("a").in_list((0..10).map(lit).collect(), false);
        let long = col("a").in_list((0..5_000).map(lit).collect(), false);
        let deep = (0..2_000).fold(lit(false), |acc, i| acc.or(col("a").eq(lit(i))));
        assert!(!too_large(&small));
        assert!(too_large(&long));
        assert!(too_large(&deep));
    }
}
