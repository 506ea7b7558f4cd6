//! The point-in-time `ASOF JOIN`: for every left row, the right row with equal keys and the greatest
//! right time at or before (or strictly before) the left time; left rows without one keep NULLs.
//!
//! ```sql
//! SELECT l.user_id, l.ts, f.f0 FROM labels l
//! ASOF JOIN features f MATCH_CONDITION (l.ts >= f.ts) ON l.user_id = f.user_id
//! ```
//!
//! sqlparser parses Snowflake's syntax; DataFusion 55 refuses to plan it. The pieces, in the order a
//! statement meets them:
//! 1. [`rewrite`]: before planning, each `ASOF JOIN` in the AST becomes a `LEFT JOIN` whose `ON` carries
//!    the match condition inside a marker function (`flywheel_udfs::asof_marker`);
//! 2. [`analyzer`]: after type coercion, an analyzer rule turns every such join into an
//!    [`AsOfJoinNode`] (and explains what is supported when the condition is not);
//! 3. [`planner`]: the extension planner lowers the node to [`AsOfJoinExec`];
//! 4. [`exec`] + [`left_index`] + [`candidates`]: the operator indexes the left side by key and
//!    time, buckets the right rows by key as they stream in, matches them bucket by bucket against
//!    the index, and emits the left rows with their matches.
//!
//! On equal right times the row of the later Delta commit wins, then the row read last
//! ([`commit_order`]).

mod analyzer;
mod candidates;
mod commit_order;
mod exec;
mod left_index;
mod node;
mod planner;
mod rewrite;

pub use analyzer::AsOfJoinAnalyzer;
pub use commit_order::in_commit_order;
pub use exec::AsOfJoinExec;
pub(crate) use exec::{blocking, is_exhausted, read_partitions};
pub use flywheel_udfs::asof_marker::{ASOF_MATCH_FN, AsOfMatchUdf};
pub(crate) use node::column_indices;
pub use node::{AsOfJoinNode, MatchOp};
pub use planner::AsOfJoinPlanner;
pub use rewrite::rewrite_asof_joins;

#[cfg(test)]
mod tests;
