//! The Arrow types answers are sent in, and the conversion of batches to them.
//!
//! arrow-flight's encoder sends dictionary columns decoded; the schemas announced in `FlightInfo`
//! and prepared statements must say so ([`wire_schema`]). Flight SQL answers also send string and
//! binary views as plain strings and binaries ([`sql_wire_schema`], [`hydrate`]).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tonic::Status;

/// The schema a `DoGet` stream of `schema`'s batches announces: dictionary columns (top-level or
/// nested in lists and structs) as their value types, since arrow-flight's encoder sends
/// every answer with dictionaries decoded. `FlightInfo` and
/// prepared statements must report this schema: clients such as ADBC refuse a stream whose schema
/// differs from the one announced (a partitioned Delta table's partition columns are dictionaries).
pub(super) fn wire_schema(schema: &Schema) -> Schema {
    rewrite_schema(schema, false)
}

/// The schema a Flight SQL answer (a statement's or prepared statement's result, a table's schema
/// in `GetTables`) announces and is sent in: [`wire_schema`], with string and binary views as plain
/// strings and binaries. Delta tables' strings come back from DataFusion as views, and the Flight
/// SQL JDBC driver (18.x, what BI tools ship) refuses every result holding one ("Unsupported
/// ArrowType Utf8View", apache/arrow-java#807), as ADBC reports them with no XDBC type. Bulk reads
/// (path descriptors, for training code) keep the views. Each column also carries its SQL type
/// name ([`super::column_metadata`]).
pub(super) fn sql_wire_schema(schema: &Schema) -> Schema {
    super::column_metadata::described(rewrite_schema(schema, true))
}

fn rewrite_schema(schema: &Schema, plain_views: bool) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| wire_field(f, plain_views))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn wire_field(field: &Field, plain_views: bool) -> Field {
    let data_type = match field.data_type() {
        DataType::Dictionary(_, value) => {
            let value = Field::new(field.name(), value.as_ref().clone(), field.is_nullable());
            return wire_field(&value, plain_views).with_metadata(field.metadata().clone());
        }
        DataType::Utf8View if plain_views => DataType::Utf8,
        DataType::BinaryView if plain_views => DataType::Binary,
        DataType::List(inner) => DataType::List(Arc::new(wire_field(inner, plain_views))),
        DataType::LargeList(inner) => DataType::LargeList(Arc::new(wire_field(inner, plain_views))),
        DataType::FixedSizeList(inner, n) => {
            DataType::FixedSizeList(Arc::new(wire_field(inner, plain_views)), *n)
        }
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| wire_field(f, plain_views)).collect())
        }
        other => other.clone(),
    };
    field.clone().with_data_type(data_type)
}

/// `batch` with each column of the type `schema` gives it (dictionaries decoded).
pub(super) fn hydrate(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Status> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|columns| RecordBatch::try_new(Arc::clone(schema), columns))
        .map_err(|e| {
            crate::to_status(flywheel_engine::Error::Internal(format!(
                "cannot send a column as its announced type: {e}"
            )))
        })?;
    Ok(columns)
}

/// `batch` in pieces of about `max_bytes` or less, each piece's string and binary view columns
/// compacted (`gc`), when it has view columns; otherwise `batch` whole. arrow-flight's encoder cuts a
/// large batch into messages by slicing it, and a sliced view column still references all of its
/// data buffers, which the IPC writer then sends with every slice: measured on a table with two
/// string columns, each message carried the whole batch's strings (2.5 times the table's bytes
/// on the wire).
pub(super) fn compact_views(batch: RecordBatch, max_bytes: usize) -> Vec<RecordBatch> {
    let has_views = batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView));
    if !has_views || batch.num_rows() == 0 {
        return vec![batch];
    }
    let size: usize = batch
        .columns()
        .iter()
        .map(|c| c.get_buffer_memory_size())
        .sum();
    let pieces = size.div_ceil(max_bytes.max(1)).max(1);
    let rows = batch.num_rows().div_ceil(pieces).max(1);
    (0..batch.num_rows())
        .step_by(rows)
        .map(|offset| {
            let piece = batch.slice(offset, rows.min(batch.num_rows() - offset));
            let columns = piece
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Utf8View => Arc::new(c.as_string_view().gc()) as ArrayRef,
                    DataType::BinaryView => Arc::new(c.as_binary_view().gc()) as ArrayRef,
                    _ => Arc::clone(c),
                })
                .collect();
            // Same schema, same lengths: cannot fail; fall back to the slice if it did.
            RecordBatch::try_new(piece.schema(), columns).unwrap_or(piece)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringViewArray};

    use super::*;

    #[test]
    fn view_pieces_carry_only_their_own_strings() {
        let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>40}")).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8View, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..10_000)),
                Arc::new(StringViewArray::from_iter_values(long.iter())),
            ],
        )
        .expect("batch");
        let whole: usize = batch
            .columns()
            .iter()
            .map(|c| c.get_buffer_memory_size())
            .sum();
        let strings = |b: &RecordBatch| -> usize {
            b.column(1)
                .as_string_view()
                .data_buffers()
                .iter()
                .map(|d| d.len())
                .sum()
        };
        let pieces = compact_views(batch.clone(), whole / 4);
        assert!(pieces.len() >= 4, "{}", pieces.len());
        // Each piece references only its own strings: together, the batch's once (a plain slice
        // references all of them, every time).
        let sent: usize = pieces.iter().map(strings).sum();
        assert_eq!(sent, strings(&batch));
        assert_eq!(strings(&batch.slice(0, 10)), strings(&batch));
        let rows: Vec<RecordBatch> = pieces;
        let joined = arrow::compute::concat_batches(&schema, &rows).expect("concat");
        assert_eq!(joined, batch);
        // Batches without views go whole.
        let plain = batch.project(&[0]).expect("project");
        assert_eq!(compact_views(plain.clone(), 16).len(), 1);
    }
}
