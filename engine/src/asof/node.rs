//! [`AsOfJoinNode`]: the logical `ASOF JOIN`.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};

use datafusion::common::{DFSchemaRef, Result, plan_err};

use super::commit_order::SharedRanks;
use datafusion::logical_expr::{
    Expr, JoinType, LogicalPlan, UserDefinedLogicalNodeCore,
    logical_plan::builder::build_join_schema,
};

/// How the right time must relate to the left time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchOp {
    /// `left.t >= right.t`: the latest right row at or before the left time.
    AtOrBefore,
    /// `left.t > right.t`: the latest right row strictly before the left time.
    StrictlyBefore,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::AtOrBefore => ">=",
            MatchOp::StrictlyBefore => ">",
        })
    }
}

/// `left ASOF JOIN right MATCH_CONDITION (left_time op right_time) ON left_keys = right_keys`.
///
/// Output: every left column, then every right column (nullable), one row per left row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOfJoinNode {
    pub left: LogicalPlan,
    pub right: LogicalPlan,
    /// Equality keys: (left expression, right expression).
    pub on: Vec<(Expr, Expr)>,
    pub left_time: Expr,
    pub right_time: Expr,
    pub op: MatchOp,
    /// The right side's file column and its files' commit order, when the right side is a Delta
    /// table: on equal times the row of the later commit wins ([`super::commit_order`]).
    pub right_file: Option<(Expr, SharedRanks)>,
    schema: DFSchemaRef,
}

impl AsOfJoinNode {
    pub fn try_new(
        left: LogicalPlan,
        right: LogicalPlan,
        on: Vec<(Expr, Expr)>,
        left_time: Expr,
        right_time: Expr,
        op: MatchOp,
    ) -> Result<Self> {
        let schema = build_join_schema(left.schema(), right.schema(), &JoinType::Left)?;
        Ok(Self {
            left,
            right,
            on,
            left_time,
            right_time,
            op,
            right_file: None,
            schema: schema.into(),
        })
    }

    /// This join, breaking ties by the commit order of the right rows' files (`file`: a column of
    /// the right side).
    pub fn with_right_file(mut self, file: Expr, ranks: SharedRanks) -> Self {
        self.right_file = Some((file, ranks));
        self
    }
}

impl Hash for AsOfJoinNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.left.hash(state);
        self.right.hash(state);
        self.on.hash(state);
        self.left_time.hash(state);
        self.right_time.hash(state);
        self.op.hash(state);
        self.right_file.as_ref().map(|(e, _)| e).hash(state);
    }
}

impl PartialOrd for AsOfJoinNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.left.partial_cmp(&other.left)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match self.right.partial_cmp(&other.right)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match self.on.partial_cmp(&other.on)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match self.left_time.partial_cmp(&other.left_time)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match self.right_time.partial_cmp(&other.right_time)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match self.op.cmp(&other.op) {
            Ordering::Equal => {}
            o => return Some(o),
        }
        self.right_file
            .as_ref()
            .map(|(e, _)| e)
            .partial_cmp(&other.right_file.as_ref().map(|(e, _)| e))
    }
}

/// Indices (in `plan`'s schema) of the columns `exprs` reference.
pub(crate) fn column_indices<'a>(
    plan: &LogicalPlan,
    exprs: impl Iterator<Item = &'a Expr>,
) -> Option<HashSet<usize>> {
    let mut out = HashSet::new();
    for e in exprs {
        for c in e.column_refs() {
            out.insert(plan.schema().index_of_column(c).ok()?);
        }
    }
    Some(out)
}

impl UserDefinedLogicalNodeCore for AsOfJoinNode {
    fn name(&self) -> &str {
        "AsOfJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        let mut out: Vec<Expr> = self.on.iter().map(|(l, _)| l.clone()).collect();
        out.extend(self.on.iter().map(|(_, r)| r.clone()));
        out.push(self.left_time.clone());
        out.push(self.right_time.clone());
        out.extend(self.right_file.as_ref().map(|(e, _)| e.clone()));
        out
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AsOfJoin: match=({} {} {})",
            self.left_time, self.op, self.right_time
        )?;
        if !self.on.is_empty() {
            let keys: Vec<String> = self.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
            write!(f, ", on=[{}]", keys.join(", "))?;
        }
        if self.right_file.is_some() {
            write!(f, ", ties=commit order")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let n = self.on.len();
        let [left, right]: [LogicalPlan; 2] = match inputs.try_into() {
            Ok(pair) => pair,
            Err(_) => return plan_err!("AsOfJoin takes exactly two inputs"),
        };
        let expected = 2 * n + 2 + usize::from(self.right_file.is_some());
        if exprs.len() != expected {
            return plan_err!(
                "AsOfJoin expected {expected} expressions, got {}",
                exprs.len()
            );
        }
        let on = exprs[..n]
            .iter()
            .cloned()
            .zip(exprs[n..2 * n].iter().cloned())
            .collect();
        let node = Self::try_new(
            left,
            right,
            on,
            exprs[2 * n].clone(),
            exprs[2 * n + 1].clone(),
            self.op,
        )?;
        Ok(match (&self.right_file, exprs.get(2 * n + 2)) {
            (Some((_, ranks)), Some(file)) => node.with_right_file(file.clone(), ranks.clone()),
            _ => node,
        })
    }

    /// Lets projection pushdown prune both inputs: each keeps the output columns asked for plus
    /// the columns its keys and time read.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let n_left = self.left.schema().fields().len();
        let mut left = column_indices(
            &self.left,
            self.on.iter().map(|(l, _)| l).chain([&self.left_time]),
        )?;
        let mut right = column_indices(
            &self.right,
            self.on
                .iter()
                .map(|(_, r)| r)
                .chain([&self.right_time])
                .chain(self.right_file.as_ref().map(|(e, _)| e)),
        )?;
        for &i in output_columns {
            if i < n_left {
                left.insert(i);
            } else {
                right.insert(i - n_left);
            }
        }
        let mut left: Vec<usize> = left.into_iter().collect();
        let mut right: Vec<usize> = right.into_iter().collect();
        left.sort_unstable();
        right.sort_unstable();
        Some(vec![left, right])
    }
}
