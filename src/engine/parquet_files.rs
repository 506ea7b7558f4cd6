//! How Flywheel writes the Parquet files of the tables it creates: Snappy, in Data Page V2 pages.
//!
//! With V2 pages the writer keeps a page's compressed values only when they are smaller than the
//! values themselves, and otherwise stores them as they are, flagged `is_compressed = false`.
//! Feature columns (floats with random low bits) are the bulk of a training set and do not shrink
//! under Snappy, so most of a training set's bytes are read without decompressing (no copy, no
//! buffer to allocate), while keys, timestamps and categories stay compressed.
//!
//! Values are dictionary-encoded first and fall back to PLAIN, as V1 files do (the 2.0 writer
//! would otherwise pick the DELTA encodings, slower to decode). Every Parquet reader in use
//! (pyarrow, DuckDB, Spark, delta-rs, Polars) reads V2 pages. Appends through `INSERT` and
//! bulk-ingest appends go through delta-rs's table sink, which writes its own defaults (Snappy,
//! V1 pages); a table may therefore hold both kinds of files.

use deltalake::parquet::basic::{Compression, Encoding};
use deltalake::parquet::file::properties::{WriterProperties, WriterVersion};

/// The writer properties of every table Flywheel creates or replaces.
pub(super) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_created_by(format!("flywheel {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY)
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_encoding(Encoding::PLAIN)
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
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

    /// Each column's data pages: (V2 page, compressed).
    fn pages(file: &Bytes, column: usize) -> Vec<(bool, bool)> {
        let reader = SerializedFileReader::new(file.clone()).expect("a Parquet file");
        let mut out = vec![];
        for g in 0..reader.num_row_groups() {
            let mut pages = reader
                .get_row_group(g)
                .and_then(|rg| rg.get_column_page_reader(column))
                .expect("a column's pages");
            while let Some(page) = pages.get_next_page().expect("a page") {
                match page {
                    Page::DataPageV2 { is_compressed, .. } => out.push((true, is_compressed)),
                    Page::DataPage { .. } => out.push((false, true)),
                    Page::DictionaryPage { .. } => {}
                }
            }
        }
        out
    }

    #[test]
    fn incompressible_pages_are_stored_plain_and_the_rest_compressed() {
        // Enough rows that the pages written before the dictionary fills and the writer falls back
        // to PLAIN are a small share.
        let batch = batch(1_000_000);
        let mut file = vec![];
        let mut writer = ArrowWriter::try_new(&mut file, batch.schema(), Some(writer_properties()))
            .expect("a writer");
        writer.write(&batch).expect("written");
        writer.close().expect("closed");
        let file = Bytes::from(file);

        let floats = pages(&file, 0);
        assert!(floats.iter().all(|(v2, _)| *v2), "V2 pages: {floats:?}");
        let stored = |pages: &[(bool, bool)]| pages.iter().filter(|(_, c)| !c).count();
        assert!(
            stored(&floats) * 2 > floats.len(),
            "float pages: {floats:?}"
        );
        let ints = pages(&file, 1);
        assert!(ints.iter().all(|(v2, _)| *v2), "V2 pages: {ints:?}");
        assert!(stored(&ints) * 2 < ints.len(), "id pages: {ints:?}");

        // The values come back as written.
        let back: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .expect("a reader")
            .collect::<Result<_, _>>()
            .expect("read back");
        let back = arrow::compute::concat_batches(&batch.schema(), &back).expect("concat");
        assert_eq!(back, batch);
        assert_eq!(back.column(0).null_count(), 0);
    }
}
