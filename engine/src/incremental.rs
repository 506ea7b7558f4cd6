//! Incremental refresh: when a feature view's or label's inputs only gained rows since its last
//! build, run its query over just those rows and append the result.
//!
//! For a query `Q` made of scans, filters, projections, `UNION ALL` and joins in which at most one
//! side reads inputs that moved (and that side is preserved by the join: either side of an inner
//! join, the left of a left join, the right of a right join), `Q(A + ΔA, B) = Q(A, B) + Q(ΔA, B)`
//! under bag semantics: appending `Q(ΔA, B)` gives exactly the rows a full refresh would. Anything
//! else gets a full refresh, and the refresh says why ([`Decision::Full`]):
//! - the object's latest build recorded no input versions (built by an older Flywheel);
//! - an input's commits since then removed or rewrote files (`DELETE`, `UPDATE`, overwrite,
//!   `OPTIMIZE`), changed its schema or protocol, or are no longer in its log;
//! - the query aggregates, windows, sorts with a limit, de-duplicates (`DISTINCT`), limits,
//!   calls non-deterministic functions (`random()`, `now()`), uses subqueries or `ASOF JOIN`, or
//!   joins inputs that both moved.
//!
//! The rows an input gained are read from the files its new commits added (a Delta scan of the
//! new version restricted to those files, so deletion vectors, partition values and column
//! mapping are honoured by delta-rs). The append is one Delta commit that carries the lineage
//! (the input versions consumed), made only if the object's table has not moved since it was read
//! (no retries): a refresh killed before the commit appended nothing and its lineage still names
//! the old versions, so the next refresh reads the same rows again; one killed after it is done.
//! Two refreshes racing append once; the other fails with a conflict and is run again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, TableScan, Volatility};
use flywheel_catalog::objects::Lineage;
use flywheel_catalog::{TableEntry, TravelTarget, load_table};

use super::refresh_history::Mode;
use crate::{Error, Result};

/// What an input gained since an object's last build: the versions and the files added between.
#[derive(Debug, Clone)]
pub(super) struct Gained {
    pub was: u64,
    pub now: u64,
    pub files: Vec<String>,
}

/// How a refresh will compute the new version.
#[derive(Debug)]
pub(super) enum Decision {
    /// No input moved since the last build (and the query may be maintained): nothing to write.
    Unchanged,
    /// Append the query over what `gained`'s inputs gained since `built` (the latest build of the
    /// object, whose table is `entry`).
    Append {
        built: Lineage,
        entry: TableEntry,
        gained: BTreeMap<String, Gained>,
    },
    /// Recompute it whole, for this reason.
    Full(String),
}

/// `input 1->3, other 4->5`, as a refresh's reason says what its inputs gained.
pub(super) fn gained_text(gained: &BTreeMap<String, Gained>) -> String {
    gained
        .iter()
        .map(|(input, g)| format!("{input} {}->{}", g.was, g.now))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a refresh of object `name` (always whole with `full`), whose query planned at the inputs'
/// current versions (`now`) is `plan`, computes its new version.
pub(super) async fn decide(
    registry: &flywheel_catalog::Registry,
    name: &str,
    now: &BTreeMap<String, u64>,
    plan: &LogicalPlan,
    full: bool,
) -> Result<Decision> {
    if full {
        return Ok(Decision::Full("FULL was asked for".into()));
    }
    let Some(entry) = registry.table(name) else {
        return Ok(Decision::Full("it has no table yet".into()));
    };
    let Some(built) = super::lineage::latest_build(registry, name).await? else {
        return Ok(Decision::Full(
            "its latest build recorded no input versions".into(),
        ));
    };
    let mut moved = BTreeMap::new();
    for (input, &version) in now {
        match built.inputs.get(input) {
            Some(&was) if was == version => {}
            Some(&was) if was < version => {
                moved.insert(input.clone(), (was, version));
            }
            Some(&was) => {
                return Ok(Decision::Full(format!(
                    "input `{input}` is at version {version}, older than the {was} it was built from (re-created)"
                )));
            }
            None => {
                return Ok(Decision::Full(format!(
                    "input `{input}` is new to its query"
                )));
            }
        }
    }
    let names: BTreeSet<String> = moved.keys().cloned().collect();
    if let Err(why) = maintainable(plan, &names) {
        return Ok(Decision::Full(why));
    }
    if moved.is_empty() {
        return Ok(Decision::Unchanged);
    }
    let mut gained = BTreeMap::new();
    for (input, (was, now)) in moved {
        let Some(input_entry) = registry.table(&input) else {
            return Ok(Decision::Full(format!("input `{input}` has no table")));
        };
        match appended_files(&input_entry, was, now).await? {
            Ok(files) => {
                gained.insert(input, Gained { was, now, files });
            }
            Err(why) => return Ok(Decision::Full(format!("input `{input}` {why}"))),
        }
    }
    Ok(Decision::Append {
        built,
        entry,
        gained,
    })
}

/// How a refresh computed an object's new version.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub mode: Mode,
    /// Why that mode.
    pub why: String,
    /// The rows it wrote, when known here (`None`: read them from the commit).
    pub rows_written: Option<u64>,
    /// An incremental refresh's starting point: the input versions its last build read (an input
    /// that moved was read from there on; the others whole).
    pub base: Option<BTreeMap<String, u64>>,
    /// An incremental refresh that appended: (the object's version before, the version written).
    pub appended: Option<(u64, u64)>,
}

impl Outcome {
    /// Recomputed whole, for this reason.
    pub(super) fn full(why: String) -> Self {
        Self {
            mode: Mode::Full,
            why,
            rows_written: None,
            base: None,
            appended: None,
        }
    }

    /// Nothing to do: no input moved since the build that read `inputs`.
    pub(super) fn unchanged(inputs: BTreeMap<String, u64>) -> Self {
        Self {
            mode: Mode::Incremental,
            why: "no input changed since its last build".into(),
            rows_written: Some(0),
            base: Some(inputs),
            appended: None,
        }
    }

    /// Appended to the build that read `base`, for this reason: version `from` became `to`.
    pub(super) fn appended(
        why: String,
        base: BTreeMap<String, u64>,
        (from, to): (u64, u64),
    ) -> Self {
        Self {
            mode: Mode::Incremental,
            why,
            rows_written: None,
            base: Some(base),
            appended: Some((from, to)),
        }
    }
}

/// The files `entry`'s commits `from+1 ..= to` added, when those commits only added files;
/// otherwise why not (as a phrase after the input's name).
pub(super) async fn appended_files(
    entry: &TableEntry,
    from: u64,
    to: u64,
) -> Result<std::result::Result<Vec<String>, String>> {
    let table = load_table(entry, None).await?;
    let mut added = Vec::new();
    for version in from + 1..=to {
        let Some(bytes) = table.log_store().read_commit_entry(version).await? else {
            return Ok(Err(format!(
                "no longer has the log of version {version} (log retention)"
            )));
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut operation = String::from("a commit");
        for line in text.lines() {
            let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else {
                return Ok(Err(format!(
                    "has an unreadable log entry at version {version}"
                )));
            };
            if let Some(info) = action.get("commitInfo") {
                if let Some(op) = info.get("operation").and_then(|o| o.as_str()) {
                    operation = op.to_string();
                }
            } else if let Some(add) = action.get("add") {
                if let Some(path) = add.get("path").and_then(|p| p.as_str()) {
                    added.push(path.to_string());
                }
            } else if action.get("remove").is_some() {
                return Ok(Err(format!(
                    "had rows removed or rewritten at version {version} ({operation})"
                )));
            } else if action.get("metaData").is_some() || action.get("protocol").is_some() {
                return Ok(Err(format!(
                    "changed its schema or settings at version {version} ({operation})"
                )));
            }
        }
    }
    Ok(Ok(added))
}

/// The input a scan reads, if it is a warehouse table pinned at a version: (name, version).
fn pinned_scan(scan: &TableScan) -> Option<(String, u64)> {
    match TravelTarget::decode(scan.table_name.table())? {
        (name, TravelTarget::Version(v)) => Some((name.to_string(), v)),
        _ => None,
    }
}

/// Whether `plan` reads any of `moved`.
fn reads(plan: &LogicalPlan, moved: &BTreeSet<String>) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::TableScan(scan)
            if pinned_scan(scan).is_some_and(|(name, _)| moved.contains(&name))))
    })
    .unwrap_or(true)
}

/// `Ok` when appending the query over the moved inputs' new rows gives what a full refresh
/// would; otherwise why not.
fn maintainable(plan: &LogicalPlan, moved: &BTreeSet<String>) -> std::result::Result<(), String> {
    let mut why: Option<String> = None;
    let walked = plan.apply(|node| {
        let refused = match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::TableScan(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Values(_) => None,
            LogicalPlan::Sort(sort) if sort.fetch.is_none() => None,
            LogicalPlan::Join(join) => {
                let (left, right) = (reads(&join.left, moved), reads(&join.right, moved));
                match (join.join_type, left, right) {
                    (_, false, false) => None,
                    (_, true, true) => Some("it joins two inputs that both gained rows".to_string()),
                    (JoinType::Inner, _, _)
                    | (JoinType::Left | JoinType::LeftSemi | JoinType::LeftMark, true, false)
                    | (JoinType::Right | JoinType::RightSemi | JoinType::RightMark, false, true) => {
                        None
                    }
                    (t, _, _) => Some(format!(
                        "its {t} join would change rows it already produced when the other side gains rows"
                    )),
                }
            }
            LogicalPlan::Aggregate(_) => Some("its query aggregates over the history".into()),
            LogicalPlan::Window(_) => Some("its query has window functions".into()),
            LogicalPlan::Distinct(_) => Some("its query is DISTINCT".into()),
            LogicalPlan::Limit(_) | LogicalPlan::Sort(_) => Some("its query has a LIMIT".into()),
            // Aggregate features at each probe row: like a left join, each probe row's values
            // depend on that row and the events alone.
            LogicalPlan::Extension(e)
                if e.node
                    .as_any()
                    .downcast_ref::<crate::windows::WindowAggNode>()
                    .is_some_and(|w| !reads(&w.events, moved)) =>
            {
                None
            }
            LogicalPlan::Extension(_) => {
                Some("its query has an ASOF JOIN or another operator Flywheel adds, over inputs that gained rows".into())
            }
            other => Some(format!(
                "its query uses {}, which is not maintained incrementally",
                other.display()
            )),
        };
        if let Some(reason) = refused {
            why = Some(reason);
            return Ok(TreeNodeRecursion::Stop);
        }
        for expr in node.expressions() {
            if let Some(reason) = expression_refusal(&expr) {
                why = Some(reason);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if walked.is_err() {
        return Err("its query could not be analysed".into());
    }
    match why {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Why an expression keeps a query from being maintained incrementally, if it does.
fn expression_refusal(expr: &Expr) -> Option<String> {
    let mut why = None;
    let _ = expr.apply(|e| {
        let refused = match e {
            Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => {
                Some(format!(
                    "its query calls {}(), whose value changes between runs",
                    f.func.name()
                ))
            }
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                Some("its query has a subquery".into())
            }
            Expr::AggregateFunction(_) => Some("its query aggregates over the history".into()),
            Expr::WindowFunction(_) => Some("its query has window functions".into()),
            _ => None,
        };
        match refused {
            Some(r) => {
                why = Some(r);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    why
}

/// `plan` with each scan of a moved input (at its new version) reading only the rows its new
/// commits added.
pub(super) async fn over_appended_rows(
    registry: &flywheel_catalog::Registry,
    plan: LogicalPlan,
    gained: &BTreeMap<String, Gained>,
) -> Result<LogicalPlan> {
    let mut sources = HashMap::new();
    for (input, g) in gained {
        let entry = registry
            .table(input)
            .ok_or_else(|| Error::InvalidInput(format!("input `{input}` has no table")))?;
        let table = load_table(&entry, Some(&TravelTarget::Version(g.now))).await?;
        let provider = table
            .table_provider()
            .with_file_paths(g.files.clone())
            .await?;
        let provider = Arc::new(flywheel_catalog::BoundedPushdownProvider::of_delta_files(
            provider,
            table,
            g.files.clone(),
        ));
        sources.insert(input.clone(), (g.now, provider_as_source(provider)));
    }
    let rewritten = plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some((name, version)) = pinned_scan(scan) else {
                return Ok(Transformed::no(node));
            };
            match sources.get(&name) {
                Some((now, source)) if *now == version => {
                    let mut scan = scan.clone();
                    scan.source = Arc::clone(source);
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                _ => Ok(Transformed::no(node)),
            }
        })
        .map_err(Error::from_datafusion)?;
    Ok(rewritten.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reasons_for_a_full_refresh_name_what_the_query_does() {
        let refusal = |sql: &str| {
            let ctx = datafusion::prelude::SessionContext::new();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                ctx.sql("CREATE TABLE \"t@v2\" (a INT, b INT) AS VALUES (1, 2)")
                    .await
                    .expect("table");
                ctx.sql("CREATE TABLE \"u@v1\" (a INT, c INT) AS VALUES (1, 3)")
                    .await
                    .expect("table");
                let plan = ctx.state().create_logical_plan(sql).await.expect("plans");
                let moved: BTreeSet<String> = ["t".to_string()].into();
                maintainable(&plan, &moved).err()
            })
        };
        assert_eq!(refusal("SELECT a, b * 2 FROM \"t@v2\" WHERE b > 1"), None);
        assert_eq!(
            refusal("SELECT x.a, c FROM \"t@v2\" x JOIN \"u@v1\" y ON x.a = y.a"),
            None
        );
        assert_eq!(
            refusal("SELECT x.a, c FROM \"u@v1\" y LEFT JOIN \"t@v2\" x ON x.a = y.a")
                .map(|w| w.contains("Left join")),
            Some(true)
        );
        for (sql, why) in [
            ("SELECT a, sum(b) FROM \"t@v2\" GROUP BY a", "aggregates"),
            ("SELECT DISTINCT a FROM \"t@v2\"", "DISTINCT"),
            ("SELECT a FROM \"t@v2\" LIMIT 3", "LIMIT"),
            ("SELECT a, random() FROM \"t@v2\"", "random()"),
            ("SELECT a, now() FROM \"t@v2\"", "now()"),
            (
                "SELECT a, sum(b) OVER (PARTITION BY a) FROM \"t@v2\"",
                "window",
            ),
            (
                "SELECT x.a FROM \"t@v2\" x JOIN \"t@v2\" y ON x.a = y.a",
                "both gained rows",
            ),
            (
                "SELECT a FROM \"t@v2\" WHERE a IN (SELECT a FROM \"u@v1\")",
                "subquery",
            ),
        ] {
            let refused = refusal(sql).unwrap_or_else(|| panic!("{sql} is refused"));
            assert!(refused.contains(why), "{sql}: {refused}");
        }
    }
}
