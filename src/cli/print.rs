//! Prints statement results as aligned tables.

use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::util::display::FormatOptions;
use arrow::util::pretty::pretty_format_batches_with_options;

use crate::Output;

/// Renders the result of one statement and its timing, as the shell prints it (NULL as `NULL`,
/// so that it differs from an empty string).
pub(super) async fn render(output: Output, start: Instant) -> crate::Result<String> {
    let was_query = output.is_query();
    let count = output.row_count();
    let batches: Vec<RecordBatch> = output.collect().await?;
    let elapsed = start.elapsed();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let columns = batches.first().map(|b| b.num_columns()).unwrap_or(0);
    let mut out = String::new();
    if let (false, Some(n)) = (was_query, count) {
        out.push_str(&format!("{n} row{} affected", plural(n as usize)));
    } else if columns == 0 {
        out.push_str("OK");
    } else {
        let options = FormatOptions::default().with_null("NULL");
        out.push_str(&pretty_format_batches_with_options(&batches, &options)?.to_string());
        out.push_str(&format!("\n{rows} row{}", plural(rows)));
    }
    out.push_str(&format!(" ({:.3}s)", elapsed.as_secs_f64()));
    Ok(out)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
