//! Functions Postgres clients call that `datafusion-pg-catalog` does not register:
//! - `version()`: clients parse `PostgreSQL <major>.<minor>` from it;
//! - `to_regtype(name)`: psycopg and SQLAlchemy look up extension types such as `hstore` with it;
//!   Flywheel has the built-in types only, so anything else is NULL, as PostgreSQL answers for a
//!   type it does not have;
//! - `pg_type_is_visible(oid)` (true: every type is in `pg_catalog`), `pg_is_other_temp_schema(oid)`
//!   (false: there are no temporary schemas), SQLAlchemy's and dbt's catalog queries;
//! - `pg_get_indexdef(oid, column, pretty)`: NULL (Flywheel tables have no indexes);
//! - `pg_cancel_backend(pid)` and `pg_terminate_backend(pid)`: false, as PostgreSQL answers for a
//!   process it did not signal (dbt calls them when interrupted).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array};
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;

use crate::settings::SERVER_VERSION;

/// Every function of this module.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        version(),
        to_regtype(),
        constant("pg_type_is_visible", true),
        constant("pg_is_other_temp_schema", false),
        constant("pg_cancel_backend", false),
        constant("pg_terminate_backend", false),
        no_index_definition(),
    ]
}

fn version() -> ScalarUDF {
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (Flywheel {}, Apache DataFusion)",
        env!("CARGO_PKG_VERSION")
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    )
}

/// `name(oid)`, always `value`.
fn constant(name: &str, value: bool) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(value))))),
    )
}

/// `pg_get_indexdef(oid, column, pretty)`: NULL, there are no indexes.
fn no_index_definition() -> ScalarUDF {
    create_udf(
        "pg_get_indexdef",
        vec![DataType::Int64, DataType::Int64, DataType::Boolean],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// The built-in types `to_regtype` knows, by their names.
const BUILT_IN: &[Type] = &[
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
    Type::TEXT,
    Type::VARCHAR,
    Type::BPCHAR,
    Type::BYTEA,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::INTERVAL,
    Type::JSON,
    Type::JSONB,
    Type::UUID,
    Type::OID,
];

fn oid_of(name: &str) -> Option<i32> {
    let name = name.trim().trim_start_matches("pg_catalog.");
    BUILT_IN
        .iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .and_then(|t| i32::try_from(t.oid()).ok())
}

fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(DataFusionError::Plan(
                    "to_regtype takes one type name".into(),
                ));
            };
            match arg {
                ColumnarValue::Scalar(s) => {
                    let name = match s {
                        ScalarValue::Utf8(v)
                        | ScalarValue::LargeUtf8(v)
                        | ScalarValue::Utf8View(v) => v.clone(),
                        _ => None,
                    };
                    Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                        name.as_deref().and_then(oid_of),
                    )))
                }
                ColumnarValue::Array(a) => {
                    let a = arrow::compute::cast(a, &DataType::Utf8)?;
                    let names = a.as_string::<i32>();
                    let oids: Int32Array = (0..names.len())
                        .map(|i| {
                            (!names.is_null(i))
                                .then(|| oid_of(names.value(i)))
                                .flatten()
                        })
                        .collect();
                    Ok(ColumnarValue::Array(Arc::new(oids) as ArrayRef))
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::oid_of;

    #[test]
    fn built_in_types_have_their_oids_and_others_none() {
        assert_eq!(oid_of("int8"), Some(20));
        assert_eq!(oid_of("pg_catalog.text"), Some(25));
        assert_eq!(oid_of("hstore"), None);
    }
}
