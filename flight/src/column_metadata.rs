//! Flight SQL column metadata: the `ARROW:FLIGHT:SQL:*` keys on the fields of the schemas Flight
//! SQL answers announce.
//!
//! JDBC's `ResultSetMetaData.getColumnTypeName` and `DatabaseMetaData.getColumns`, and ADBC's
//! `xdbc_type_name`, come from these keys (the Flight SQL JDBC driver and ADBC's Go driver read
//! them): a column's SQL type name (the names `GetXdbcTypeInfo` lists), a decimal's precision and
//! scale, and in `GetTables` schemas the catalog, schema and table a column belongs to.

use std::collections::HashMap;

use arrow::datatypes::{DataType, Field, Schema};

const TYPE_NAME: &str = "ARROW:FLIGHT:SQL:TYPE_NAME";
const PRECISION: &str = "ARROW:FLIGHT:SQL:PRECISION";
const SCALE: &str = "ARROW:FLIGHT:SQL:SCALE";
const CATALOG_NAME: &str = "ARROW:FLIGHT:SQL:CATALOG_NAME";
const SCHEMA_NAME: &str = "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME";
const TABLE_NAME: &str = "ARROW:FLIGHT:SQL:TABLE_NAME";

/// The SQL name of an Arrow type, as `GetXdbcTypeInfo` lists it; `None` for types it does not.
fn type_name(data_type: &DataType) -> Option<&'static str> {
    Some(match data_type {
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => "DECIMAL",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        _ => return None,
    })
}

/// `field` with its type name (and a decimal's precision and scale) among its metadata.
fn typed(field: &Field) -> Field {
    let mut metadata: HashMap<String, String> = field.metadata().clone();
    if let Some(name) = type_name(field.data_type()) {
        metadata.insert(TYPE_NAME.into(), name.into());
    }
    if let DataType::Decimal128(p, s) | DataType::Decimal256(p, s) = field.data_type() {
        metadata.insert(PRECISION.into(), p.to_string());
        metadata.insert(SCALE.into(), s.to_string());
    }
    field.clone().with_metadata(metadata)
}

/// `schema` with every column's type metadata.
pub(super) fn described(schema: Schema) -> Schema {
    let fields: Vec<Field> = schema.fields().iter().map(|f| typed(f)).collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// A table's `schema` (for `GetTables`): type metadata and where each column comes from.
pub(super) fn of_table(schema: Schema, catalog: &str, db_schema: &str, table: &str) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut field = typed(f);
            let mut metadata = field.metadata().clone();
            metadata.insert(CATALOG_NAME.into(), catalog.into());
            metadata.insert(SCHEMA_NAME.into(), db_schema.into());
            metadata.insert(TABLE_NAME.into(), table.into());
            field.set_metadata(metadata);
            field
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn columns_are_described_with_the_names_xdbc_type_info_lists() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
        ]);
        let described = of_table(schema, "flywheel", "public", "orders");
        let meta = |i: usize| described.field(i).metadata().clone();
        assert_eq!(meta(0)[TYPE_NAME], "BIGINT");
        assert_eq!(meta(0)[TABLE_NAME], "orders");
        assert_eq!(meta(0)[SCHEMA_NAME], "public");
        assert_eq!(
            (
                meta(1)[TYPE_NAME].as_str(),
                meta(1)[PRECISION].as_str(),
                meta(1)[SCALE].as_str()
            ),
            ("DECIMAL", "10", "2")
        );
        assert_eq!(meta(2)[TYPE_NAME], "TIMESTAMP");
        assert!(!meta(3).contains_key(TYPE_NAME));
        let listed: Vec<String> = crate::sql_info::XDBC_TYPE_INFO
            .as_ref()
            .map(|d| {
                let batch = d.record_batch(None).expect("batch");
                let names = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .expect("names");
                names.iter().flatten().map(str::to_string).collect()
            })
            .unwrap_or_default();
        for i in 0..3 {
            assert!(listed.contains(&meta(i)[TYPE_NAME]), "{listed:?}");
        }
    }
}
