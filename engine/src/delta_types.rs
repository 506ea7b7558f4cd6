//! The Arrow types a new Delta table's columns take.
//!
//! delta-rs names a Delta type for every Arrow type it meets, but not always one that holds the
//! values: unsigned integers become the signed type of the same width (a `uint8` 200 is written,
//! then cannot be read back as a `BYTE`), and timestamps in a zone other than UTC, or in seconds,
//! have no Delta type at all. Before a table is created (`CREATE TABLE [AS]`, `CREATE OR REPLACE`,
//! bulk ingest that creates or replaces), its columns are cast to types Delta stores as they are:
//!
//! - `UInt8`, `UInt16`, `UInt32` widen to the next signed type (`SHORT`, `INT`, `BIGINT`); `UInt64`
//!   becomes `BIGINT`, and a value above its maximum fails the write, naming the cast, with
//!   nothing written;
//! - a timestamp with a zone becomes the same instant in UTC (Delta's `TIMESTAMP`), one in seconds
//!   becomes microseconds;
//! - `Float16` becomes `Float32`;
//! - the same inside lists, structs and maps.
//!
//! A type Delta cannot hold at all (times of day, durations, intervals) is refused up front, naming
//! the column and what to cast it to.
//!
//! Read back, a partitioned table's partition columns come dictionary-encoded: [`value_type`] is
//! the type of their values.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;

use crate::{Error, Result};

/// The type a column of `data_type` takes in a new Delta table, when it differs.
fn storable(data_type: &DataType) -> Option<DataType> {
    use DataType as T;
    let field = |f: &FieldRef| -> Option<FieldRef> {
        storable(f.data_type()).map(|t| Arc::new(f.as_ref().clone().with_data_type(t)))
    };
    match data_type {
        T::UInt8 => Some(T::Int16),
        T::UInt16 => Some(T::Int32),
        T::UInt32 | T::UInt64 => Some(T::Int64),
        T::Float16 => Some(T::Float32),
        T::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => TimeUnit::Microsecond,
                other => *other,
            };
            let tz = tz.as_ref().map(|_| Arc::from("UTC"));
            let to = T::Timestamp(unit, tz);
            (&to != data_type).then_some(to)
        }
        T::List(f) => field(f).map(T::List),
        T::LargeList(f) => field(f).map(T::LargeList),
        T::FixedSizeList(f, n) => field(f).map(|f| T::FixedSizeList(f, *n)),
        T::Map(entries, sorted) => field(entries).map(|e| T::Map(e, *sorted)),
        T::Struct(fields) => {
            let changed: Vec<Option<FieldRef>> = fields.iter().map(field).collect();
            changed.iter().any(Option::is_some).then(|| {
                T::Struct(
                    fields
                        .iter()
                        .zip(changed)
                        .map(|(f, c)| c.unwrap_or_else(|| Arc::clone(f)))
                        .collect(),
                )
            })
        }
        _ => None,
    }
}

/// Refuses a column whose type no Delta type holds, naming it and the fix.
fn check_storable(name: &str, data_type: &DataType) -> Result<()> {
    let field = Field::new(name, data_type.clone(), true);
    let converted: std::result::Result<deltalake::kernel::StructField, _> =
        (&field).try_into_kernel();
    converted.map(|_| ()).map_err(|_| {
        Error::InvalidInput(format!(
            "column `{name}` is {data_type}, which a Delta table cannot hold; cast it (to \
             VARCHAR, BIGINT or TIMESTAMP) before creating the table"
        ))
    })
}

/// The fields of a new table's columns (for a bare column list).
pub(super) fn storable_fields(fields: &[FieldRef]) -> Result<Vec<Field>> {
    fields
        .iter()
        .map(|f| {
            let data_type = storable(f.data_type()).unwrap_or_else(|| f.data_type().clone());
            check_storable(f.name(), &data_type)?;
            Ok(f.as_ref().clone().with_data_type(data_type))
        })
        .collect()
}

/// `input`, its columns cast where a new Delta table needs (see the module docs).
pub(super) fn storable_plan(input: LogicalPlan) -> Result<LogicalPlan> {
    let schema = Arc::clone(input.schema());
    let mut changed = false;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (qualifier, field) in schema.iter() {
        let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        let to = storable(field.data_type());
        check_storable(
            field.name(),
            to.as_ref().unwrap_or_else(|| field.data_type()),
        )?;
        columns.push(match to {
            Some(to) => {
                changed = true;
                cast(column, to).alias(field.name())
            }
            None => column,
        });
    }
    if !changed {
        return Ok(input);
    }
    // The casts keep each column's nullability.
    debug_assert!(
        columns
            .iter()
            .zip(schema.fields())
            .all(|(c, f)| c.nullable(schema.as_ref()).ok() == Some(f.is_nullable()))
    );
    LogicalPlanBuilder::from(input)
        .project(columns)
        .and_then(LogicalPlanBuilder::build)
        .map_err(Error::from_datafusion)
}

/// The type of a column's values: a dictionary column's value type (a partitioned Delta table's
/// partition columns come back dictionary-encoded), any other column's own type.
pub(crate) fn value_type(t: &DataType) -> &DataType {
    match t {
        DataType::Dictionary(_, value) => value,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_zoned_and_half_types_take_types_delta_holds() {
        let cases = [
            (DataType::UInt8, Some(DataType::Int16)),
            (DataType::UInt32, Some(DataType::Int64)),
            (DataType::UInt64, Some(DataType::Int64)),
            (DataType::Int32, None),
            (DataType::Float16, Some(DataType::Float32)),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("Europe/Paris".into())),
                Some(DataType::Timestamp(
                    TimeUnit::Nanosecond,
                    Some("UTC".into()),
                )),
            ),
            (
                DataType::Timestamp(TimeUnit::Second, None),
                Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                None,
            ),
            (
                DataType::new_list(DataType::UInt16, true),
                Some(DataType::new_list(DataType::Int32, true)),
            ),
        ];
        for (from, to) in cases {
            assert_eq!(storable(&from), to, "{from}");
            let kept = to.unwrap_or(from);
            check_storable("c", &kept).unwrap_or_else(|e| panic!("{kept}: {e}"));
        }
        let e = storable_fields(&[Arc::new(Field::new(
            "t",
            DataType::Time64(TimeUnit::Microsecond),
            true,
        ))])
        .expect_err("no Delta type");
        assert!(e.to_string().contains("column `t` is Time64"), "{e}");
    }
}
