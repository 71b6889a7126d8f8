//! The snapshot file: every key and value of the state machine's column families, written
//! and read as a stream, so that no snapshot is ever held whole in memory.
//!
//! ```text
//! "ratchet-snapshot\n" | format (u8) | meta length (u32 BE) | SnapshotMeta (codec)
//! records:  family (u8) | key length (u32 BE) | key | value length (u32 BE) | value
//! trailer:  0xFF | record count (u64 BE) | CRC-32 of every byte before it (u32 BE)
//! ```
//!
//! The values are the stored bytes as they are (already in the stored schema), so a
//! snapshot is built by one scan of a RocksDB snapshot with no re-encoding. The header
//! carries the snapshot's description, so a file is self-describing: the same file is a
//! Raft snapshot sent to a lagging follower and an operator's backup (`ctl snapshot save`).
//! The trailer makes truncation and corruption detectable: a reader refuses a file whose
//! count or checksum does not match, and every length is checked against a limit before
//! anything is allocated. Hand-written because it is small and must stay exactly this.

use std::io::{self, BufRead, Read, Write};

use crate::codec::{self, FORMAT_VERSION};
use crate::types::SnapshotMeta;

const MAGIC: &[u8] = b"ratchet-snapshot\n";
const TRAILER: u8 = 0xFF;
/// Longest key and value a snapshot may hold: far above any record, far below memory.
const MAX_KEY_BYTES: u32 = 64 << 10;
const MAX_VALUE_BYTES: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    #[error("not a ratchet snapshot")]
    BadMagic,
    #[error("snapshot written in format v{0}; this release reads v{FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("snapshot header: {0}")]
    BadHeader(#[from] codec::DecodeError),
    #[error("snapshot names column family #{0}, which does not exist")]
    UnknownFamily(u8),
    #[error("snapshot record of {length} bytes is over the limit of {limit}")]
    TooLong { length: u32, limit: u32 },
    #[error("snapshot is truncated: it ends before its trailer")]
    Truncated,
    #[error("snapshot is damaged: {0}")]
    Damaged(String),
    #[error("reading the snapshot: {0}")]
    Io(#[from] io::Error),
}

/// Writes a snapshot to `out`, checksumming as it goes.
pub struct SnapshotWriter<W: Write> {
    out: Checksummed<W>,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(out: W, meta: &SnapshotMeta) -> io::Result<Self> {
        let mut out = Checksummed::new(out);
        out.write_all(MAGIC)?;
        out.write_all(&[FORMAT_VERSION])?;
        let meta = codec::encode(meta);
        out.write_all(&(meta.len() as u32).to_be_bytes())?;
        out.write_all(&meta)?;
        Ok(SnapshotWriter { out, records: 0 })
    }

    pub fn record(&mut self, family: u8, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.out.write_all(&[family])?;
        for part in [key, value] {
            self.out.write_all(&(part.len() as u32).to_be_bytes())?;
            self.out.write_all(part)?;
        }
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and hands back the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[TRAILER])?;
        self.out.write_all(&self.records.to_be_bytes())?;
        let crc = self.out.hasher.clone().finalize();
        let mut out = self.out.inner;
        out.write_all(&crc.to_be_bytes())?;
        out.flush()?;
        Ok(out)
    }
}

/// One stored key and value, and the index of its column family.
pub type Record = (u8, Vec<u8>, Vec<u8>);

/// Reads a snapshot as a stream: the header at once, then one record at a time. The
/// last call of `next_record` checks the trailer; only a reader that got `Ok(None)` has
/// seen a whole, undamaged snapshot.
pub struct SnapshotReader<R: Read> {
    input: Checksummed<R>,
    families: usize,
    records: u64,
    pub meta: SnapshotMeta,
}

impl<R: BufRead> SnapshotReader<R> {
    pub fn new(input: R, families: usize) -> Result<Self, SnapshotFormatError> {
        let mut input = Checksummed::new(input);
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(|_| SnapshotFormatError::BadMagic)?;
        if magic != MAGIC {
            return Err(SnapshotFormatError::BadMagic);
        }
        let version = read_u8(&mut input)?;
        if version != FORMAT_VERSION {
            return Err(SnapshotFormatError::UnknownVersion(version));
        }
        let meta = read_part(&mut input, MAX_KEY_BYTES)?;
        Ok(SnapshotReader {
            meta: codec::decode(&meta)?,
            input,
            families,
            records: 0,
        })
    }

    /// The next record, or `None` once the trailer has been read and checked.
    pub fn next_record(&mut self) -> Result<Option<Record>, SnapshotFormatError> {
        let family = read_u8(&mut self.input)?;
        if family == TRAILER {
            return self.check_trailer().map(|()| None);
        }
        if usize::from(family) >= self.families {
            return Err(SnapshotFormatError::UnknownFamily(family));
        }
        let key = read_part(&mut self.input, MAX_KEY_BYTES)?;
        let value = read_part(&mut self.input, MAX_VALUE_BYTES)?;
        self.records += 1;
        Ok(Some((family, key, value)))
    }

    fn check_trailer(&mut self) -> Result<(), SnapshotFormatError> {
        let mut count = [0u8; 8];
        read_exact(&mut self.input, &mut count)?;
        let expected_crc = self.input.hasher.clone().finalize();
        let mut crc = [0u8; 4];
        self.input.inner.read_exact(&mut crc).map_err(truncated)?;
        if u64::from_be_bytes(count) != self.records {
            return Err(SnapshotFormatError::Damaged(format!(
                "it holds {} records but its trailer says {}",
                self.records,
                u64::from_be_bytes(count)
            )));
        }
        if u32::from_be_bytes(crc) != expected_crc {
            return Err(SnapshotFormatError::Damaged("its checksum does not match its contents".into()));
        }
        if self.input.inner.fill_buf()?.is_empty() {
            Ok(())
        } else {
            Err(SnapshotFormatError::Damaged("bytes follow its trailer".into()))
        }
    }
}

/// Reads a whole snapshot once, checking every record and the trailer, keeping nothing.
pub fn verify<R: BufRead>(input: R, families: usize) -> Result<SnapshotMeta, SnapshotFormatError> {
    let mut reader = SnapshotReader::new(input, families)?;
    while reader.next_record()?.is_some() {}
    Ok(reader.meta)
}

fn truncated(error: io::Error) -> SnapshotFormatError {
    match error.kind() {
        io::ErrorKind::UnexpectedEof => SnapshotFormatError::Truncated,
        _ => SnapshotFormatError::Io(error),
    }
}

fn read_exact(input: &mut impl Read, buffer: &mut [u8]) -> Result<(), SnapshotFormatError> {
    input.read_exact(buffer).map_err(truncated)
}

fn read_u8(input: &mut impl Read) -> Result<u8, SnapshotFormatError> {
    let mut byte = [0u8; 1];
    read_exact(input, &mut byte)?;
    Ok(byte[0])
}

fn read_part(input: &mut impl Read, limit: u32) -> Result<Vec<u8>, SnapshotFormatError> {
    let mut length = [0u8; 4];
    read_exact(input, &mut length)?;
    let length = u32::from_be_bytes(length);
    if length > limit {
        return Err(SnapshotFormatError::TooLong { length, limit });
    }
    let mut part = vec![0; length as usize];
    read_exact(input, &mut part)?;
    Ok(part)
}

/// A reader or writer that checksums every byte that passes through it.
struct Checksummed<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::StoredMembership;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "test-1".into(),
        }
    }

    fn snapshot(records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
        for (family, key, value) in records {
            writer.record(*family, key, value).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(bytes: &[u8], families: usize) -> Result<Vec<Record>, SnapshotFormatError> {
        let mut reader = SnapshotReader::new(bytes, families)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok(records)
    }

    #[test]
    fn records_survive_a_round_trip() {
        let bytes = snapshot(&[(0, b"applied", b"x"), (2, b"demo\0exch1", b"")]);
        assert_eq!(
            read_all(&bytes, 3).unwrap(),
            vec![(0, b"applied".to_vec(), b"x".to_vec()), (2, b"demo\0exch1".to_vec(), vec![])]
        );
        assert_eq!(verify(&bytes[..], 3).unwrap().snapshot_id, "test-1");
    }

    #[test]
    fn a_snapshot_cut_at_any_byte_is_refused() {
        let bytes = snapshot(&[(0, b"applied", b"x"), (1, b"tenant", b"t"), (2, b"server", b"s")]);
        for cut in 0..bytes.len() {
            assert!(
                read_all(&bytes[..cut], 3).is_err(),
                "cut at {cut} of {} was read as whole",
                bytes.len()
            );
        }
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        assert!(matches!(read_all(b"garbage", 3), Err(SnapshotFormatError::BadMagic)));
        assert!(matches!(
            read_all(&snapshot(&[(7, b"k", b"v")]), 3),
            Err(SnapshotFormatError::UnknownFamily(7))
        ));
        let mut flipped = snapshot(&[(0, b"key", b"value")]);
        let middle = flipped.len() - 10;
        flipped[middle] ^= 1;
        assert!(read_all(&flipped, 3).is_err());
        let mut longer = snapshot(&[(0, b"key", b"value")]);
        longer.push(0);
        assert!(matches!(read_all(&longer, 3), Err(SnapshotFormatError::Damaged(_))));
    }

    #[test]
    fn lengths_are_checked_before_anything_is_allocated() {
        let mut bytes = snapshot(&[]);
        bytes.truncate(bytes.len() - 13);
        bytes.extend_from_slice(&[0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(read_all(&bytes, 3), Err(SnapshotFormatError::TooLong { .. })));
    }
}
