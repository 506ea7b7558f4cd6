//! What the server tells clients about itself: `GetSqlInfo` and `GetXdbcTypeInfo`, built once.

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType,
    XdbcDatetimeSubcode,
};

/// The server's `GetSqlInfo` answers.
pub static SQL_INFO: LazyLock<Option<SqlInfoData>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Flywheel");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    // Statements are autocommitted Delta commits; there are no client transactions.
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        SupportedSqlGrammar::SqlCoreGrammar as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.build().ok()
});

/// The SQL types Flywheel's tables hold (`GetXdbcTypeInfo`).
pub static XDBC_TYPE_INFO: LazyLock<Option<XdbcTypeInfoData>> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types: &[(&str, XdbcDataType, Option<i32>, Option<i32>)] = &[
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None),
        ("TINYINT", XdbcDataType::XdbcTinyint, Some(3), Some(10)),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), Some(10)),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(10), Some(10)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19), Some(10)),
        ("REAL", XdbcDataType::XdbcReal, Some(24), Some(2)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), Some(2)),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), Some(10)),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, None),
        ("BINARY", XdbcDataType::XdbcBinary, None, None),
        ("DATE", XdbcDataType::XdbcDate, Some(10), None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(26), None),
    ];
    for (name, data_type, column_size, radix) in types {
        let is_text = matches!(data_type, XdbcDataType::XdbcVarchar);
        let is_datetime = matches!(
            data_type,
            XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp
        );
        b.append(XdbcTypeInfo {
            type_name: (*name).into(),
            data_type: *data_type,
            column_size: *column_size,
            literal_prefix: (is_text || is_datetime).then(|| "'".into()),
            literal_suffix: (is_text || is_datetime).then(|| "'".into()),
            create_params: matches!(data_type, XdbcDataType::XdbcDecimal)
                .then(|| vec!["precision".into(), "scale".into()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: is_text,
            searchable: Searchable::Full,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
            auto_increment: Some(false),
            local_type_name: Some((*name).into()),
            minimum_scale: None,
            maximum_scale: matches!(data_type, XdbcDataType::XdbcDecimal).then_some(38),
            sql_data_type: if is_datetime {
                XdbcDataType::XdbcDatetime
            } else {
                *data_type
            },
            datetime_subcode: match data_type {
                XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
                XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
                _ => None,
            },
            num_prec_radix: *radix,
            interval_precision: None,
        });
    }
    b.build().ok()
});
