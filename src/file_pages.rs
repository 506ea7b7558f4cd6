//! Bytes that are a file's own pages, mapped read-only, for files that never change once written
//! (and plain reads, for ranges too short to map or where the kernel refuses a mapping).
//!
//! Reading a file into a buffer copies every byte out of the kernel's page cache; a mapping hands
//! those pages to the reader as they are. Flywheel maps two kinds of files, both immutable by
//! construction: Delta data files (a new table version writes new files; `VACUUM` deletes old
//! ones) and download cache entries (written under a temporary name, renamed into place whole,
//! evicted by deletion). Deleting a mapped file is safe: its pages stay valid until the last
//! [`Bytes`] of the mapping is dropped. Truncating one in place while it is mapped, which none of
//! Flywheel's writers nor Delta's do, would stop the process with `SIGBUS`: callers must not map
//! files anything else may rewrite.

use std::fs::File;
use std::io;
use std::ops::Range;

use bytes::Bytes;

/// Mappings start at multiples of this (the smallest page size of the platforms Flywheel runs on,
/// so also aligned for any larger one).
const PAGE: u64 = 4096;

/// `range` of `file` as its mapped pages, mapped at once (so reading them does not fault page by
/// page). The mapping starts at the page holding the range's first byte and lives as long as the
/// returned bytes or any slice of them. The caller checks that the file holds the whole range.
pub(crate) fn mapped(file: &File, range: &Range<u64>) -> io::Result<Bytes> {
    if range.end < range.start {
        return Err(io::Error::other(format!("invalid file range {range:?}")));
    }
    if range.end == range.start {
        return Ok(Bytes::new());
    }
    let start = range.start - range.start % PAGE;
    let len = usize::try_from(range.end - start).map_err(io::Error::other)?;
    let skip = usize::try_from(range.start - start).map_err(io::Error::other)?;
    // SAFETY: the mapping is read-only and owned by the returned bytes; callers map only files that
    // are never modified after they are written (module docs), so its pages keep their contents.
    #[allow(unsafe_code)]
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map).slice(skip..))
}

/// `range` of `file`, read into a buffer that is not zero-filled first (the standard library's
/// `read_to_end` fills spare capacity directly): for ranges too short to be worth a mapping, and
/// where the kernel refuses one. Fails if the file ends before the range does.
pub(crate) fn read_range(file: &mut File, range: &Range<u64>) -> io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let len = range
        .end
        .checked_sub(range.start)
        .ok_or_else(|| io::Error::other(format!("invalid file range {range:?}")))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    file.seek(SeekFrom::Start(range.start))?;
    file.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ends before the range does",
        ));
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_the_files_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3 * PAGE as usize + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).expect("write");
        let mut file = File::open(&path).expect("open");
        for r in [0..1, 1..4097, 4096..8192, 5000..bytes.len() as u64, 7..7] {
            let want = &bytes[r.start as usize..r.end as usize];
            assert_eq!(&mapped(&file, &r).expect("mapped")[..], want, "{r:?}");
            assert_eq!(&read_range(&mut file, &r).expect("read")[..], want, "{r:?}");
        }
        let reversed = Range { start: 10, end: 5 };
        assert!(mapped(&file, &reversed).is_err());
        assert!(read_range(&mut file, &reversed).is_err());
        let past_end = 0..bytes.len() as u64 + 1;
        assert!(read_range(&mut file, &past_end).is_err());
    }
}
