//! How Flywheel writes the Parquet files of its tables: Snappy, in Data Page V2 pages.
//!
//! With V2 pages the writer keeps a page's compressed values only when they are smaller than the
//! values themselves, and otherwise stores them as they are, flagged `is_compressed = false`.
//! Feature columns (floats with random low bits) are the bulk of a training set and do not shrink
//! under Snappy, so most of a training set's bytes are read without decompressing (no copy, no
//! buffer to allocate), while keys, timestamps and categories stay compressed.
//!
//! Values are dictionary-encoded first and fall back to PLAIN, as V1 files do (the 2.0 writer
//! would otherwise pick the DELTA encodings, slower to decode), except floating-point columns,
//! written PLAIN from the start: a feature column rarely repeats values, and the writer only gives
//! up on a dictionary once it holds 1 MiB, so each row group would start with a megabyte of
//! dictionary (always compressed) and pages of indices that are larger than the values, for
//! every reader to decode. A float column that does repeat still shrinks: Snappy compresses
//! its PLAIN pages.
//!
//! pyarrow, Polars, DuckDB and delta-rs read V2 pages, and Spark since 3.3. For readers that do
//! not, the `parquet_data_pages = "v1"` setting ([`DataPages::V1`]) writes V1 pages (every page
//! compressed), keeping the rest. Appends (`INSERT`, bulk ingest) are written with the same
//! properties (`super::append`).

use arrow::datatypes::{DataType, Fields};
use deltalake::parquet::basic::{Compression, Encoding};
use deltalake::parquet::file::properties::{WriterProperties, WriterVersion};
use deltalake::parquet::schema::types::ColumnPath;

/// Which Parquet data pages Flywheel writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DataPages {
    /// Data Page V2: a page Snappy does not shrink is stored uncompressed (the default).
    #[default]
    V2,
    /// Data Page V1, every page compressed: for readers without V2 support.
    V1,
}

impl std::str::FromStr for DataPages {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v2" | "2" => Ok(Self::V2),
            "v1" | "1" => Ok(Self::V1),
            _ => Err(format!(
                "parquet_data_pages `{s}` is not a page version: use \"v2\" (the default) or \"v1\" \
                 for readers without Data Page V2 support"
            )),
        }
    }
}

/// The writer properties of the files Flywheel writes for a table with columns `fields`.
pub(super) fn writer_properties(fields: &Fields, pages: DataPages) -> WriterProperties {
    let version = match pages {
        DataPages::V2 => WriterVersion::PARQUET_2_0,
        DataPages::V1 => WriterVersion::PARQUET_1_0,
    };
    let mut floats = vec![];
    float_columns(fields, &mut vec![], &mut floats);
    floats
        .into_iter()
        .fold(
            WriterProperties::builder()
                .set_created_by(format!("flywheel {}", env!("CARGO_PKG_VERSION")))
                .set_compression(Compression::SNAPPY)
                .set_writer_version(version)
                .set_encoding(Encoding::PLAIN),
            |builder, path| builder.set_column_dictionary_enabled(path, false),
        )
        .build()
}

/// The Parquet paths of the floating-point columns in `fields`, struct fields included (lists
/// and maps keep the defaults).
fn float_columns(fields: &Fields, prefix: &mut Vec<String>, out: &mut Vec<ColumnPath>) {
    for field in fields {
        prefix.push(field.name().clone());
        match field.data_type() {
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                out.push(ColumnPath::new(prefix.clone()));
            }
            DataType::Struct(children) => float_columns(children, prefix, out),
            _ => {}
        }
        prefix.pop();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, RecordBatch, RecordBatchReader};
    use arrow::datatypes::{Field, Schema};
    use bytes::Bytes;
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use deltalake::parquet::column::page::Page;
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// A float column of pseudo-random values (xorshift) and a column of sequential ids.
    fn batch(rows: usize) -> RecordBatch {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let floats: Float64Array = (0..rows)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect();
        let ints: Int64Array = (0..rows as i64).collect();
        let schema = Schema::new(vec![
            Field::new("feature", DataType::Float64, false),
            Field::new("id", DataType::Int64, false),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(floats), Arc::new(ints)])
            .expect("a valid batch")
    }

    /// What a column chunk's pages are, in order.
    #[derive(Debug, PartialEq)]
    pub(crate) enum Kind {
        Dictionary,
        V1,
        V2 { compressed: bool },
    }

    /// The kinds of the pages of `column` in the Parquet `file`, row group after row group.
    pub(crate) fn pages(file: &Bytes, column: usize) -> Vec<Kind> {
        let reader = SerializedFileReader::new(file.clone()).expect("a Parquet file");
        let mut out = vec![];
        for g in 0..reader.num_row_groups() {
            let mut pages = reader
                .get_row_group(g)
                .and_then(|rg| rg.get_column_page_reader(column))
                .expect("a column's pages");
            while let Some(page) = pages.get_next_page().expect("a page") {
                out.push(match page {
                    Page::DictionaryPage { .. } => Kind::Dictionary,
                    Page::DataPage { .. } => Kind::V1,
                    Page::DataPageV2 { is_compressed, .. } => Kind::V2 {
                        compressed: is_compressed,
                    },
                });
            }
        }
        out
    }

    fn write(batch: &RecordBatch, pages: DataPages) -> Bytes {
        let mut file = vec![];
        let properties = writer_properties(batch.schema().fields(), pages);
        let mut writer =
            ArrowWriter::try_new(&mut file, batch.schema(), Some(properties)).expect("a writer");
        writer.write(batch).expect("written");
        writer.close().expect("closed");
        Bytes::from(file)
    }

    /// The file's rows, in one batch.
    fn read_back(file: Bytes) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .expect("a reader");
        let schema = reader.schema();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read back");
        arrow::compute::concat_batches(&schema, &batches).expect("concat")
    }

    #[test]
    fn float_pages_are_plain_and_uncompressed_the_rest_compressed() {
        let batch = batch(1_000_000);
        let file = write(&batch, DataPages::V2);

        // Random floats: no dictionary, and pages stored as they are.
        let floats = pages(&file, 0);
        assert!(!floats.is_empty());
        assert!(
            floats.iter().all(|p| *p == Kind::V2 { compressed: false }),
            "{floats:?}"
        );
        // Ids: a dictionary first (it fills up, then PLAIN), and pages that Snappy shrinks.
        let ids = pages(&file, 1);
        assert_eq!(ids.first(), Some(&Kind::Dictionary), "{ids:?}");
        let compressed = ids
            .iter()
            .filter(|p| **p == Kind::V2 { compressed: true })
            .count();
        assert!(compressed * 2 > ids.len(), "{ids:?}");

        // The values come back as written.
        assert_eq!(read_back(file), batch);
    }

    #[test]
    fn v1_pages_for_readers_without_v2_support() {
        let batch = batch(100_000);
        let file = write(&batch, DataPages::V1);
        for column in 0..2 {
            let pages = pages(&file, column);
            assert!(pages.contains(&Kind::V1), "{pages:?}");
            assert!(
                pages
                    .iter()
                    .all(|p| matches!(p, Kind::V1 | Kind::Dictionary)),
                "{pages:?}"
            );
        }
        // Floats still skip the dictionary.
        assert!(!pages(&file, 0).contains(&Kind::Dictionary));
        assert_eq!(read_back(file), batch);
    }

    #[test]
    fn page_versions_parse_and_a_wrong_one_says_what_to_write() {
        assert_eq!("v2".parse::<DataPages>(), Ok(DataPages::V2));
        assert_eq!("V1".parse::<DataPages>(), Ok(DataPages::V1));
        let error = "v3".parse::<DataPages>().expect_err("no such version");
        assert!(
            error.contains("parquet_data_pages") && error.contains("\"v1\""),
            "{error}"
        );
    }

    #[test]
    fn float_columns_are_found_inside_structs() {
        let fields = Fields::from(vec![
            Field::new("f", DataType::Float32, true),
            Field::new("n", DataType::Int32, true),
            Field::new(
                "s",
                DataType::Struct(Fields::from(vec![
                    Field::new("score", DataType::Float64, true),
                    Field::new("label", DataType::Utf8, true),
                ])),
                true,
            ),
        ]);
        let mut found = vec![];
        float_columns(&fields, &mut vec![], &mut found);
        let found: Vec<String> = found.iter().map(|p| p.string()).collect();
        assert_eq!(found, ["f", "s.score"]);
    }
}
