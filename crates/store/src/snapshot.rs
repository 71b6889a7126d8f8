//! The snapshot format: every key and value of the state machine's column families.
//!
//! A snapshot is a plain sequence of records, `family (u8) | key length (u32 BE) | key |
//! value length (u32 BE) | value`, after a magic line that names the format version. The
//! values are the stored bytes as they are, so a snapshot is built by one scan of a
//! RocksDB snapshot and installed by one write batch, with no re-encoding.

use std::io::{self, Read, Write};

const MAGIC: &[u8] = b"ratchet-snapshot v1\n";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    #[error("not a ratchet v1 snapshot")]
    BadMagic,
    #[error("snapshot names column family #{0}, which does not exist")]
    UnknownFamily(u8),
    #[error("snapshot is truncated: {0}")]
    Truncated(#[from] io::Error),
}

pub struct SnapshotWriter<W: Write> {
    out: W,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(SnapshotWriter { out })
    }

    pub fn record(&mut self, family: u8, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.out.write_all(&[family])?;
        for part in [key, value] {
            self.out.write_all(&(part.len() as u32).to_be_bytes())?;
            self.out.write_all(part)?;
        }
        Ok(())
    }

    pub fn finish(self) -> W {
        self.out
    }
}

/// One stored key and value, and the index of its column family.
pub type Record = (u8, Vec<u8>, Vec<u8>);

/// Reads every record of a snapshot, checking each family index against `families`.
pub fn read_records(mut input: impl Read, families: usize) -> Result<Vec<Record>, SnapshotFormatError> {
    let mut magic = vec![0; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|_| SnapshotFormatError::BadMagic)?;
    if magic != MAGIC {
        return Err(SnapshotFormatError::BadMagic);
    }
    let mut records = Vec::new();
    let mut family = [0u8; 1];
    while input.read(&mut family)? == 1 {
        if usize::from(family[0]) >= families {
            return Err(SnapshotFormatError::UnknownFamily(family[0]));
        }
        let key = read_part(&mut input)?;
        let value = read_part(&mut input)?;
        records.push((family[0], key, value));
    }
    Ok(records)
}

fn read_part(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    input.read_exact(&mut length)?;
    let mut part = vec![0; u32::from_be_bytes(length) as usize];
    input.read_exact(&mut part)?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_round_trip() {
        let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
        writer.record(0, b"applied", b"{}").unwrap();
        writer.record(2, b"demo\0exch1", b"").unwrap();
        let bytes = writer.finish();
        let records = read_records(&bytes[..], 3).unwrap();
        assert_eq!(
            records,
            vec![(0, b"applied".to_vec(), b"{}".to_vec()), (2, b"demo\0exch1".to_vec(), vec![])]
        );
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        assert!(matches!(read_records(&b"garbage"[..], 3), Err(SnapshotFormatError::BadMagic)));
        let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
        writer.record(7, b"k", b"v").unwrap();
        assert!(matches!(
            read_records(&writer.finish()[..], 3),
            Err(SnapshotFormatError::UnknownFamily(7))
        ));
        let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
        writer.record(0, b"key", b"value").unwrap();
        let mut bytes = writer.finish();
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(read_records(&bytes[..], 3), Err(SnapshotFormatError::Truncated(_))));
    }
}
