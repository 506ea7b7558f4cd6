//! Range reads of local warehouse files, straight from the page cache.
//!
//! object_store's `LocalFileSystem` answers every byte range (a Parquet column chunk, a row group)
//! by zero-filling a fresh buffer and reading the file into it: two passes over every byte before
//! decoding starts, the kernel's copy out of the page cache alone 16% of a server's CPU when it
//! streamed a local table to a client. [`MappedRanges`] wraps it and answers a range of at least
//! [`MAP_FROM`] bytes with the file's own pages, mapped read-only (populated at once, so decoding
//! does not fault page by page), and a shorter one by reading it into a buffer that is never
//! zeroed. Everything else (writes, listing, renames, deletes, streaming reads) goes to the
//! wrapped store unchanged, and so do errors: a range past the end, a missing file or a mapping the
//! kernel refuses is answered by the wrapped store, with its usual error or bytes. The engine's
//! session registers it for `file://`, the store Delta scans of local tables read through.
//!
//! Mapping is sound because the files read this way are Delta data files, never changed once
//! written (see [`crate::file_pages`] for what that relies on).

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use deltalake::logstore::object_store::local::LocalFileSystem;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use futures::stream::BoxStream;

use crate::file_pages;

/// Ranges at least this long are mapped; shorter ones (footers, page indexes, small column
/// chunks) are read, which costs less than a mapping.
pub const MAP_FROM: u64 = 64 * 1024;

/// The local file system, with range reads served from the page cache.
#[derive(Debug)]
pub struct MappedRanges {
    inner: LocalFileSystem,
}

impl MappedRanges {
    /// Wraps `inner`.
    pub fn new(inner: LocalFileSystem) -> Self {
        Self { inner }
    }
}

impl fmt::Display for MappedRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedRanges({})", self.inner)
    }
}

/// `ranges` of the file at `path`; `None` when the file ends before a range does (the wrapped
/// store then reports that as it always does).
fn read_ranges(
    path: &std::path::Path,
    ranges: &[Range<u64>],
) -> std::io::Result<Option<Vec<Bytes>>> {
    let mut file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        if r.end < r.start || r.end > file_len {
            return Ok(None);
        }
        out.push(if r.end - r.start >= MAP_FROM {
            file_pages::mapped(&file, r)?
        } else {
            file_pages::read_range(&mut file, r)?
        });
    }
    Ok(Some(out))
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for MappedRanges {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let owned = ranges.to_vec();
        let read = tokio::task::spawn_blocking(move || read_ranges(&path, &owned))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "MappedRanges",
                source: Box::new(e),
            })?;
        match read {
            Ok(Some(bytes)) => Ok(bytes),
            // Short or missing files, permissions: the wrapped store's read reports them with its
            // usual errors (NotFound and so on).
            Ok(None) | Err(_) => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_file(len: usize) -> (tempfile::TempDir, MappedRanges, LocalFileSystem, Path) {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("part-0.parquet"), bytes).expect("write");
        let local = || LocalFileSystem::new_with_prefix(dir.path()).expect("prefix");
        let (mapped, plain) = (MappedRanges::new(local()), local());
        (dir, mapped, plain, Path::from("part-0.parquet"))
    }

    #[tokio::test]
    async fn ranges_read_the_same_bytes_as_the_wrapped_store() {
        let (_dir, mapped, plain, location) = store_with_file(3 << 20);
        // Mapped (at least `MAP_FROM` bytes, page-aligned or not, to the file's last byte) and
        // read (shorter, empty) ranges, in any order.
        let ranges = [
            5..300_000,
            1_000_000..1_000_000,
            2_999_999..3_145_728,
            17..40,
            8192..8192 + MAP_FROM,
            8193..8192 + MAP_FROM,
        ];
        let got = mapped.get_ranges(&location, &ranges).await.expect("mapped");
        let want = plain.get_ranges(&location, &ranges).await.expect("pread");
        assert_eq!(got, want);
        assert_eq!(got[2].len(), 3_145_728 - 2_999_999);
    }

    #[tokio::test]
    async fn mapped_ranges_stay_valid_after_the_file_is_deleted() {
        let (dir, mapped, plain, location) = store_with_file(1 << 20);
        let ranges = [4096..(1 << 20), 100..200];
        let want = plain.get_ranges(&location, &ranges).await.expect("pread");
        let got = mapped.get_ranges(&location, &ranges).await.expect("mapped");
        // As `VACUUM` removes a file a download may still be decoding.
        std::fs::remove_file(dir.path().join("part-0.parquet")).expect("delete");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn errors_are_the_wrapped_stores() {
        let (_dir, mapped, _plain, location) = store_with_file(1 << 20);
        // A range past the end of the file fails as it does with the wrapped store alone.
        let past_end = [Range {
            start: 0,
            end: 2 << 20,
        }];
        let err = mapped
            .get_ranges(&location, &past_end)
            .await
            .expect_err("past the end");
        assert!(err.to_string().contains("Out of range"), "{err}");
        let missing = Path::from("part-9.parquet");
        let err = mapped
            .get_ranges(&missing, &past_end)
            .await
            .expect_err("missing file");
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    }
}
