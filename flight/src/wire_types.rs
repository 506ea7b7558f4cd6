//! The Arrow types answers are sent in, and the conversion of batches to them.
//!
//! arrow-flight's encoder sends dictionary columns decoded; the schemas announced in `FlightInfo`
//! and prepared statements must say so ([`wire_schema`]). Flight SQL answers also send string and
//! binary views as plain strings and binaries ([`sql_wire_schema`], [`hydrate`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
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
