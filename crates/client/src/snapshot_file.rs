//! The snapshot file: what `Maintenance.Snapshot` streams, `kvctl snapshot
//! save` writes and `kvstore restore` reads (the format is written down in
//! `proto/kvstore/v1/kv.proto`, above `SnapshotRecord`, so any language can
//! read one).
//!
//! [`SnapshotEncoder`] makes the bytes (the server), [`SnapshotReader`]
//! reads them back record by record and checks, at the end, the SHA-256,
//! the pair and key counts and that nothing follows; a file is good only
//! once [`SnapshotReader::next_pair`] has returned `Ok(None)`. Both work a
//! record at a time, so neither holds more than one pair in memory.

use std::io::Read;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use sha2::{Digest, Sha256};

use kvstore_proto::kv::{snapshot_record, SnapshotEnd, SnapshotInfo, SnapshotPair, SnapshotRecord};

/// The first 8 bytes of a snapshot file.
pub const MAGIC: &[u8; 8] = b"KVSNAP\0\x01";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the SHA-256 that ends a file.
pub const HASH_LEN: usize = 32;
/// The prefix of user keys among the stored pairs (the state's layout).
pub const USER_KEY_PREFIX: u8 = b'd';
/// The largest record a reader accepts: a 1 MiB value's stored pair is far
/// below it; a corrupt length prefix is refused instead of being read.
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading failed.
    #[error("reading the snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a whole snapshot file of this format.
    #[error("not a valid snapshot file: {0}")]
    Invalid(String),
    /// The SHA-256 does not match: the file is damaged or cut short.
    #[error("the snapshot's SHA-256 does not match (damaged or truncated): computed {computed}, recorded {recorded}")]
    HashMismatch {
        /// What the bytes hash to.
        computed: String,
        /// What the file says.
        recorded: String,
    },
}

fn invalid(reason: impl Into<String>) -> SnapshotFileError {
    SnapshotFileError::Invalid(reason.into())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a whole, verified snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The header record.
    pub info: SnapshotInfo,
    /// Pair records.
    pub pairs: u64,
    /// User keys.
    pub keys: u64,
    /// Bytes of the file, the hash included.
    pub bytes: u64,
    /// The SHA-256 (hex).
    pub sha256: String,
}

/// Writes the records of a snapshot into a buffer the caller drains with
/// [`SnapshotEncoder::take`], hashing every byte.
pub struct SnapshotEncoder {
    buf: BytesMut,
    hasher: Sha256,
    pairs: u64,
    keys: u64,
    bytes: u64,
}

impl SnapshotEncoder {
    /// Starts a file: the magic and the header record.
    pub fn new(info: SnapshotInfo) -> Self {
        let mut encoder = SnapshotEncoder {
            buf: BytesMut::with_capacity(64 << 10),
            hasher: Sha256::new(),
            pairs: 0,
            keys: 0,
            bytes: 0,
        };
        encoder.buf.put_slice(MAGIC);
        encoder.record(snapshot_record::Record::Info(info));
        encoder
    }

    fn record(&mut self, record: snapshot_record::Record) {
        let record = SnapshotRecord {
            record: Some(record),
        };
        // Writing into a BytesMut grows it: this cannot fail.
        let _ = record.encode_length_delimited(&mut self.buf);
    }

    /// Adds a stored pair (each pair once).
    pub fn pair(&mut self, key: Bytes, value: Bytes) {
        self.pairs += 1;
        if key.first() == Some(&USER_KEY_PREFIX) {
            self.keys += 1;
        }
        self.record(snapshot_record::Record::Pair(SnapshotPair { key, value }));
    }

    /// Bytes encoded and not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// User keys so far.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The bytes encoded since the last call, hashed.
    pub fn take(&mut self) -> Bytes {
        let out = self.buf.split().freeze();
        self.hasher.update(&out);
        self.bytes += out.len() as u64;
        out
    }

    /// Ends the file: the end record (in the returned bytes, the last of
    /// the stream) and the SHA-256 of every byte, which the file then ends
    /// with.
    pub fn finish(mut self) -> (Bytes, [u8; HASH_LEN]) {
        let end = SnapshotEnd {
            pairs: self.pairs,
            keys: self.keys,
        };
        self.record(snapshot_record::Record::End(end));
        let last = self.take();
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&self.hasher.finalize());
        (last, hash)
    }
}

/// A reader that hashes what passes through it and counts it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a snapshot file record by record, verifying it as it goes.
pub struct SnapshotReader<R> {
    input: Hashing<R>,
    info: SnapshotInfo,
    pairs: u64,
    keys: u64,
    summary: Option<SnapshotSummary>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the magic and the header record.
    pub fn new(inner: R) -> Result<Self, SnapshotFileError> {
        let mut input = Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic, "the file's magic")?;
        if &magic != MAGIC {
            return Err(invalid(
                "it does not start with KVSNAP (not a snapshot file, or a newer format)",
            ));
        }
        let info = match read_record(&mut input)? {
            Some(snapshot_record::Record::Info(info)) => info,
            _ => return Err(invalid("the first record is not the header")),
        };
        if info.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {}; this build reads version {FORMAT_VERSION}",
                info.format_version
            )));
        }
        Ok(SnapshotReader {
            input,
            info,
            pairs: 0,
            keys: 0,
            summary: None,
        })
    }

    /// The header: the revision and where the snapshot comes from.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The next pair; `Ok(None)` once the end record, the SHA-256 and the
    /// end of the input were read and all of them check out.
    pub fn next_pair(&mut self) -> Result<Option<SnapshotPair>, SnapshotFileError> {
        if self.summary.is_some() {
            return Ok(None);
        }
        match read_record(&mut self.input)? {
            Some(snapshot_record::Record::Pair(pair)) => {
                self.pairs += 1;
                if pair.key.first() == Some(&USER_KEY_PREFIX) {
                    self.keys += 1;
                }
                Ok(Some(pair))
            }
            Some(snapshot_record::Record::End(end)) => {
                self.finish(end)?;
                Ok(None)
            }
            Some(snapshot_record::Record::Info(_)) => Err(invalid("a second header record")),
            None => Err(invalid("an empty record")),
        }
    }

    /// Checks the end record, the hash and that nothing follows.
    fn finish(&mut self, end: SnapshotEnd) -> Result<(), SnapshotFileError> {
        let computed: [u8; HASH_LEN] = self.input.hasher.clone().finalize().into();
        let mut recorded = [0u8; HASH_LEN];
        read_exact(
            &mut self.input.inner,
            &mut recorded,
            "the SHA-256 at the end",
        )?;
        if computed != recorded {
            return Err(SnapshotFileError::HashMismatch {
                computed: hex(&computed),
                recorded: hex(&recorded),
            });
        }
        let mut after = [0u8; 1];
        if self.input.inner.read(&mut after)? != 0 {
            return Err(invalid("bytes follow the SHA-256"));
        }
        if (end.pairs, end.keys) != (self.pairs, self.keys) {
            return Err(invalid(format!(
                "the end record says {} pairs and {} keys, the file holds {} and {}",
                end.pairs, end.keys, self.pairs, self.keys
            )));
        }
        self.summary = Some(SnapshotSummary {
            info: self.info.clone(),
            pairs: self.pairs,
            keys: self.keys,
            bytes: self.input.bytes + HASH_LEN as u64,
            sha256: hex(&recorded),
        });
        Ok(())
    }

    /// What the file holds, once it was read to its end and verified.
    pub fn summary(&self) -> Option<&SnapshotSummary> {
        self.summary.as_ref()
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), SnapshotFileError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => invalid(format!("it ends before {what} (truncated)")),
        _ => SnapshotFileError::Io(e),
    })
}

/// A varint length, then a record of that length.
fn read_record(
    input: &mut impl Read,
) -> Result<Option<snapshot_record::Record>, SnapshotFileError> {
    let mut len = 0u64;
    let mut shift = 0;
    loop {
        let mut byte = [0u8; 1];
        read_exact(input, &mut byte, "the next record")?;
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(invalid("a record length is not a varint"));
        }
    }
    if len > MAX_RECORD_BYTES {
        return Err(invalid(format!(
            "a record of {len} bytes (at most {MAX_RECORD_BYTES})"
        )));
    }
    let mut raw = Vec::new();
    // Grows as bytes arrive: a length past the end of a cut file
    // allocates no more than what is there.
    input.take(len).read_to_end(&mut raw)?;
    if raw.len() as u64 != len {
        return Err(invalid("it ends inside a record (truncated)"));
    }
    let record = SnapshotRecord::decode(raw.as_slice())
        .map_err(|e| invalid(format!("a record does not decode: {e}")))?;
    Ok(record.record)
}

/// Reads a whole snapshot file and verifies it.
pub fn verify(input: impl Read) -> Result<SnapshotSummary, SnapshotFileError> {
    let mut reader = SnapshotReader::new(input)?;
    while reader.next_pair()?.is_some() {}
    reader
        .summary()
        .cloned()
        .ok_or_else(|| invalid("the file did not end"))
}

/// Reads and verifies the snapshot file at `path`.
pub fn verify_file(path: &std::path::Path) -> Result<SnapshotSummary, SnapshotFileError> {
    let file = std::fs::File::open(path)?;
    verify(std::io::BufReader::with_capacity(1 << 20, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `n` user keys and one metadata pair, as bytes.
    fn file(n: u64) -> Vec<u8> {
        let mut enc = SnapshotEncoder::new(SnapshotInfo {
            format_version: FORMAT_VERSION,
            revision: 42,
            term: 3,
            cluster_id: 7,
            member: "kvstore-1".into(),
            taken_unix_ms: 1,
        });
        let mut out = Vec::new();
        for i in 0..n {
            enc.pair(
                Bytes::from(format!("dkey{i}")),
                Bytes::from(vec![i as u8; 100]),
            );
            out.extend_from_slice(&enc.take());
        }
        enc.pair(Bytes::from_static(b"mapplied"), Bytes::from_static(b"x"));
        let (last, hash) = enc.finish();
        out.extend_from_slice(&last);
        out.extend_from_slice(&hash);
        out
    }

    /// A whole file reads back with its header, counts and hash.
    #[test]
    fn a_file_reads_back() {
        let bytes = file(10);
        let summary = verify(bytes.as_slice()).expect("a good file");
        assert_eq!(summary.info.revision, 42);
        assert_eq!((summary.pairs, summary.keys), (11, 10));
        assert_eq!(summary.bytes, bytes.len() as u64);
        let hash: [u8; 32] = Sha256::digest(&bytes[..bytes.len() - 32]).into();
        assert_eq!(summary.sha256, hex(&hash));
    }

    /// A file cut anywhere is refused.
    #[test]
    fn a_truncated_file_is_refused() {
        let bytes = file(10);
        for cut in [
            0,
            5,
            8,
            20,
            bytes.len() / 2,
            bytes.len() - 33,
            bytes.len() - 1,
        ] {
            let err = verify(&bytes[..cut]).expect_err("a cut file");
            assert!(
                matches!(err, SnapshotFileError::Invalid(_)),
                "cut at {cut}: {err}"
            );
        }
    }

    /// A single flipped bit anywhere is refused.
    #[test]
    fn a_flipped_bit_is_refused() {
        let bytes = file(10);
        for at in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(verify(bad.as_slice()).is_err(), "a flipped bit at {at}");
        }
    }

    /// Bytes after the hash are refused.
    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = file(2);
        bytes.push(0);
        assert!(verify(bytes.as_slice()).is_err());
    }
}
