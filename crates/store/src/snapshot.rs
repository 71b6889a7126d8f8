//! The snapshot file: every key and value of the state machine's column families, written
//! and read as a stream, so that no snapshot is ever held whole in memory.
//!
//! ```text
//! "ratchet-snapshot\n" | layout (u8) | meta length (u32 BE) | SnapshotMeta (codec)
//! body, one LZ4 frame (layout 2) or as it is (layout 1, written before 2026-12-08):
//!   records:  family (u8) | key length (u32 BE) | key | value length (u32 BE) | value
//!   trailer:  0xFF | record count (u64 BE) | CRC-32 of every byte before it (u32 BE)
//! ```
//!
//! The values are the stored bytes as they are (already in the stored schema), so a
//! snapshot is built by one scan of a RocksDB snapshot with no re-encoding. The header
//! carries the snapshot's description, so a file is self-describing: the same file is a
//! Raft snapshot sent to a lagging follower and an operator's backup (`ctl snapshot save`).
//! The body is compressed: the records repeat tenant names, server names and builds, and
//! come out about six times smaller, so a snapshot costs that much less disk, and a learner
//! receives it that much sooner. The CRC is of the uncompressed bytes. Both layouts are
//! read, so a backup of an older release restores; an older release refuses layout 2 by
//! its number. The trailer makes truncation and corruption detectable: a reader refuses a
//! file whose count or checksum does not match, and every length is checked against a
//! limit before anything is allocated. Hand-written because it is small and must stay
//! exactly this.

use std::io::{self, BufRead, Read, Write};

use lz4_flex::frame::{FrameDecoder, FrameEncoder};

use crate::codec;
use crate::types::SnapshotMeta;

const MAGIC: &[u8] = b"ratchet-snapshot\n";
/// The body as it is.
const PLAIN: u8 = 1;
/// The body in one LZ4 frame: what this release writes.
const LZ4: u8 = 2;
const TRAILER: u8 = 0xFF;
/// Longest key and value a snapshot may hold: far above any record, far below memory.
const MAX_KEY_BYTES: u32 = 64 << 10;
const MAX_VALUE_BYTES: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    #[error("not a ratchet snapshot")]
    BadMagic,
    #[error("snapshot written in layout {0}; this release reads layouts {PLAIN} and {LZ4}")]
    UnknownLayout(u8),
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

/// Writes a snapshot to `out` (layout 2), checksumming as it goes.
pub struct SnapshotWriter<W: Write> {
    out: Checksummed<FrameEncoder<W>>,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(mut out: W, meta: &SnapshotMeta) -> io::Result<Self> {
        let meta = codec::encode(meta);
        let mut header = Vec::with_capacity(MAGIC.len() + 5 + meta.len());
        header.extend_from_slice(MAGIC);
        header.push(LZ4);
        header.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        header.extend_from_slice(&meta);
        out.write_all(&header)?;
        let mut out = Checksummed::new(FrameEncoder::new(out));
        out.hasher.update(&header);
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

    /// Writes the trailer, ends the frame and hands back the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[TRAILER])?;
        self.out.write_all(&self.records.to_be_bytes())?;
        let crc = self.out.hasher.clone().finalize();
        let mut body = self.out.inner;
        body.write_all(&crc.to_be_bytes())?;
        let mut out = body.finish().map_err(io::Error::other)?;
        out.flush()?;
        Ok(out)
    }
}

/// A snapshot's body as it is read: decompressed if it was compressed.
enum Body<R: BufRead> {
    Plain(R),
    Lz4(io::BufReader<FrameDecoder<R>>),
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Plain(input) => input.read(buffer),
            Body::Lz4(input) => input.read(buffer),
        }
    }
}

impl<R: BufRead> BufRead for Body<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Body::Plain(input) => input.fill_buf(),
            Body::Lz4(input) => input.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match self {
            Body::Plain(input) => input.consume(amount),
            Body::Lz4(input) => input.consume(amount),
        }
    }
}

/// One stored key and value, and the index of its column family.
pub type Record = (u8, Vec<u8>, Vec<u8>);

/// Reads a snapshot as a stream: the header at once, then one record at a time. The
/// last call of `next_record` checks the trailer; only a reader that got `Ok(None)` has
/// seen a whole, undamaged snapshot.
pub struct SnapshotReader<R: BufRead> {
    input: Checksummed<Body<R>>,
    families: usize,
    records: u64,
    pub meta: SnapshotMeta,
}

impl<R: BufRead> SnapshotReader<R> {
    pub fn new(input: R, families: usize) -> Result<Self, SnapshotFormatError> {
        let mut header = Checksummed::new(input);
        let mut magic = [0u8; MAGIC.len()];
        header.read_exact(&mut magic).map_err(|_| SnapshotFormatError::BadMagic)?;
        if magic != MAGIC {
            return Err(SnapshotFormatError::BadMagic);
        }
        let layout = read_u8(&mut header)?;
        let meta = match layout {
            PLAIN | LZ4 => read_part(&mut header, MAX_KEY_BYTES)?,
            other => return Err(SnapshotFormatError::UnknownLayout(other)),
        };
        let body = match layout {
            PLAIN => Body::Plain(header.inner),
            _ => Body::Lz4(io::BufReader::new(FrameDecoder::new(header.inner))),
        };
        Ok(SnapshotReader {
            meta: codec::decode(&meta)?,
            input: Checksummed {
                inner: body,
                hasher: header.hasher,
            },
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
        match self.input.inner.fill_buf() {
            Ok(rest) if rest.is_empty() => Ok(()),
            Ok(_) => Err(SnapshotFormatError::Damaged("bytes follow its trailer".into())),
            Err(e) => Err(SnapshotFormatError::Damaged(format!("what follows its trailer does not read: {e}"))),
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

    /// A snapshot as this release writes it (layout 2).
    fn snapshot(records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
        for (family, key, value) in records {
            writer.record(*family, key, value).unwrap();
        }
        writer.finish().unwrap()
    }

    /// The same in layout 1, as earlier releases wrote it, composed by hand.
    fn plain(records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let meta = codec::encode(&meta());
        let mut bytes = MAGIC.to_vec();
        bytes.push(PLAIN);
        bytes.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&meta);
        for (family, key, value) in records {
            bytes.push(*family);
            for part in [key, value] {
                bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
                bytes.extend_from_slice(part);
            }
        }
        bytes.push(TRAILER);
        bytes.extend_from_slice(&(records.len() as u64).to_be_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn read_all(bytes: &[u8], families: usize) -> Result<Vec<Record>, SnapshotFormatError> {
        let mut reader = SnapshotReader::new(bytes, families)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok(records)
    }

    const THREE: [(u8, &[u8], &[u8]); 3] = [(0, b"applied", b"x"), (1, b"tenant", b"t"), (2, b"demo\0exch1", b"")];

    #[test]
    fn records_survive_a_round_trip_in_either_layout() {
        for bytes in [snapshot(&THREE), plain(&THREE)] {
            let expected: Vec<Record> = THREE.iter().map(|(f, k, v)| (*f, k.to_vec(), v.to_vec())).collect();
            assert_eq!(read_all(&bytes, 3).unwrap(), expected);
            assert_eq!(verify(&bytes[..], 3).unwrap().snapshot_id, "test-1");
        }
    }

    #[test]
    fn the_body_is_compressed() {
        let servers: Vec<(u8, Vec<u8>, Vec<u8>)> = (0..1_000)
            .map(|i| {
                (
                    2,
                    format!("bear\0exch{i}.bear.example").into_bytes(),
                    b"\x01 15.0.1497.48 2026-03-01".to_vec(),
                )
            })
            .collect();
        let records: Vec<(u8, &[u8], &[u8])> = servers.iter().map(|(f, k, v)| (*f, k.as_slice(), v.as_slice())).collect();
        let (compressed, as_is) = (snapshot(&records), plain(&records));
        assert!(
            compressed.len() * 3 < as_is.len(),
            "{} bytes, {} as is",
            compressed.len(),
            as_is.len()
        );
        assert_eq!(read_all(&compressed, 3).unwrap(), read_all(&as_is, 3).unwrap());
    }

    /// What a damaged copy of `whole` may read as: an error, or every record as written
    /// (a compressed body may lose bytes that hold no data, like the frame's end mark, or
    /// have a match point at another copy of the same bytes). Never other records.
    fn refused_or_intact(damaged: &[u8], whole: &[u8]) -> bool {
        read_all(damaged, 3).map_or(true, |records| records == read_all(whole, 3).unwrap())
    }

    #[test]
    fn a_snapshot_cut_at_any_byte_is_refused_or_loses_nothing() {
        for bytes in [snapshot(&THREE), plain(&THREE)] {
            for cut in 0..bytes.len() {
                assert!(
                    refused_or_intact(&bytes[..cut], &bytes),
                    "cut at {cut} of {} was read as other records",
                    bytes.len()
                );
            }
        }
        // The plain body has nothing to spare: any cut is refused.
        let bytes = plain(&THREE);
        assert!((0..bytes.len()).all(|cut| read_all(&bytes[..cut], 3).is_err()));
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        assert!(matches!(read_all(b"garbage", 3), Err(SnapshotFormatError::BadMagic)));
        let mut unknown = plain(&[]);
        unknown[MAGIC.len()] = 3;
        assert!(matches!(read_all(&unknown, 3), Err(SnapshotFormatError::UnknownLayout(3))));
        for write in [snapshot as fn(&[(u8, &[u8], &[u8])]) -> Vec<u8>, plain] {
            assert!(matches!(
                read_all(&write(&[(7, b"k", b"v")]), 3),
                Err(SnapshotFormatError::UnknownFamily(7))
            ));
            let whole = write(&[(0, b"key", b"value"), (1, b"other key", b"other value")]);
            for at in 0..whole.len() {
                let mut flipped = whole.clone();
                flipped[at] ^= 1;
                assert!(
                    refused_or_intact(&flipped, &whole),
                    "a bit flipped at {at} of {} read as other records",
                    whole.len()
                );
            }
            let mut longer = whole.clone();
            longer.push(0);
            assert!(refused_or_intact(&longer, &whole));
        }
        let mut longer = plain(&[(0, b"key", b"value")]);
        longer.push(0);
        assert!(matches!(read_all(&longer, 3), Err(SnapshotFormatError::Damaged(_))));
    }

    #[test]
    fn lengths_are_checked_before_anything_is_allocated() {
        let mut bytes = plain(&[]);
        bytes.truncate(bytes.len() - 13);
        bytes.extend_from_slice(&[0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(read_all(&bytes, 3), Err(SnapshotFormatError::TooLong { .. })));
    }
}
