//! The on-disk format of the store's records: what an account is as bytes.
//!
//! This format is the store's own, not the wire codec (`protocol::codec`) and
//! not bincode: a serde derive would tie the bytes on disk to the field order
//! of a Rust struct that the wire protocol also shapes, and a renamed or moved
//! field would silently change (or misread) every stored account. Here every
//! byte is written out by hand and each record starts with its own version
//! byte, so the format changes only when this file says so.
//!
//! All integers are little-endian. A string is a `u32` byte length and the
//! UTF-8 bytes. Version 1 of an account:
//!
//! ```text
//! account := version:u8 (= 1)  name:str  created_ms:u64  count:u32  device{count}
//! device  := fingerprint:[u8; 32]  label:str  added_ms:u64  last_seen_ms:u64
//! ```
//!
//! Version 1 of a stored message (the `mail` table, schema 2):
//!
//! ```text
//! mail    := version:u8 (= 1)  id:u64  sent_at_ms:u64  from:str
//!            has_account:u8 (0 or 1)  [account:str]  body:str
//! ```
//!
//! `from` is the name as stamped on the delivery; `account` the lowercased
//! name of the sender's account when the sender was registered.
//!
//! Version 1 of a kept notice (a late receipt for a sender who was not
//! connected; the `notices` table, schema 3):
//!
//! ```text
//! notice  := version:u8 (= 1)  id:u64  outcome:u8 (1 delivered, 2 expired)  made_ms:u64
//! ```
//!
//! Decoding never trusts a length: a record that is truncated, has bytes left
//! over, an unknown version, invalid UTF-8 or a count larger than its bytes
//! could hold is a [`RecordError`], never a panic or a huge allocation.

use crate::protocol::Fingerprint;

use super::{AccountRecord, DeviceRecord, MailRecord, NoticeOutcome, NoticeRecord};

/// The version byte of an account record written by this build.
pub(crate) const ACCOUNT_VERSION: u8 = 1;

/// The version byte of a mail record written by this build.
pub(crate) const MAIL_VERSION: u8 = 1;

/// The version byte of a notice record written by this build.
pub(crate) const NOTICE_VERSION: u8 = 1;

/// The fewest bytes one encoded device takes (an empty label).
const MIN_DEVICE_BYTES: usize = Fingerprint::LEN + 4 + 8 + 8;

/// Why bytes read from the store are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    /// The bytes end before the record does.
    #[error("truncated: {wanted} more bytes needed at offset {at}, {left} left")]
    Truncated {
        /// Where the missing field starts.
        at: usize,
        /// How many bytes the field needs.
        wanted: usize,
        /// How many bytes were left.
        left: usize,
    },
    /// Bytes follow the end of the record.
    #[error("{extra} bytes after the end of the record")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A version byte this build does not know.
    #[error("unknown record version {found}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// A string field that is not UTF-8.
    #[error("the string at offset {at} is not UTF-8")]
    NotUtf8 {
        /// Where the string's bytes start.
        at: usize,
    },
    /// A presence flag other than 0 or 1.
    #[error("flag byte {found} is neither 0 nor 1")]
    BadFlag {
        /// The byte found.
        found: u8,
    },
    /// A notice outcome byte other than 1 (delivered) or 2 (expired).
    #[error("notice outcome byte {found} is neither 1 nor 2")]
    BadOutcome {
        /// The byte found.
        found: u8,
    },
    /// A device count that the remaining bytes cannot hold.
    #[error("{count} devices cannot fit in the {left} bytes left")]
    ImpossibleCount {
        /// The count found.
        count: u32,
        /// How many bytes were left.
        left: usize,
    },
}

/// Encode an account as a version-1 record.
pub(crate) fn encode_account(account: &AccountRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        1 + 4
            + account.name.len()
            + 8
            + 4
            + account
                .devices
                .iter()
                .map(|d| MIN_DEVICE_BYTES + d.label.len())
                .sum::<usize>(),
    );
    out.push(ACCOUNT_VERSION);
    put_str(&mut out, &account.name);
    out.extend_from_slice(&account.created_ms.to_le_bytes());
    put_u32(&mut out, len_u32(account.devices.len()));
    for device in &account.devices {
        out.extend_from_slice(device.fingerprint.as_bytes());
        put_str(&mut out, &device.label);
        out.extend_from_slice(&device.added_ms.to_le_bytes());
        out.extend_from_slice(&device.last_seen_ms.to_le_bytes());
    }
    out
}

/// Decode an account record, whatever its bytes.
pub(crate) fn decode_account(bytes: &[u8]) -> Result<AccountRecord, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    if version != ACCOUNT_VERSION {
        return Err(RecordError::UnknownVersion { found: version });
    }
    let name = reader.string()?;
    let created_ms = reader.u64()?;
    let count = reader.u32()?;
    let left = reader.left();
    // Bounds the allocation below by the record's own size.
    let capacity = usize::try_from(count)
        .ok()
        .filter(|&n| n <= left / MIN_DEVICE_BYTES)
        .ok_or(RecordError::ImpossibleCount { count, left })?;
    let mut devices = Vec::with_capacity(capacity);
    for _ in 0..count {
        let fingerprint = Fingerprint::new(reader.array()?);
        let label = reader.string()?;
        let added_ms = reader.u64()?;
        let last_seen_ms = reader.u64()?;
        devices.push(DeviceRecord {
            fingerprint,
            label,
            added_ms,
            last_seen_ms,
        });
    }
    reader.finish()?;
    Ok(AccountRecord {
        name,
        created_ms,
        devices,
    })
}

/// Encode a stored message as a version-1 mail record.
pub(crate) fn encode_mail(mail: &MailRecord) -> Vec<u8> {
    let account_len = mail.sender_account.as_ref().map_or(0, |a| 4 + a.len());
    let mut out =
        Vec::with_capacity(1 + 8 + 8 + 4 + mail.from.len() + 1 + account_len + 4 + mail.body.len());
    out.push(MAIL_VERSION);
    out.extend_from_slice(&mail.id.to_le_bytes());
    out.extend_from_slice(&mail.sent_at_ms.to_le_bytes());
    put_str(&mut out, &mail.from);
    match &mail.sender_account {
        Some(account) => {
            out.push(1);
            put_str(&mut out, account);
        }
        None => out.push(0),
    }
    put_str(&mut out, &mail.body);
    out
}

/// Decode a mail record, whatever its bytes.
pub(crate) fn decode_mail(bytes: &[u8]) -> Result<MailRecord, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    if version != MAIL_VERSION {
        return Err(RecordError::UnknownVersion { found: version });
    }
    let id = reader.u64()?;
    let sent_at_ms = reader.u64()?;
    let from = reader.string()?;
    let sender_account = match reader.u8()? {
        0 => None,
        1 => Some(reader.string()?),
        found => return Err(RecordError::BadFlag { found }),
    };
    let body = reader.string()?;
    reader.finish()?;
    Ok(MailRecord {
        id,
        from,
        sent_at_ms,
        body,
        sender_account,
    })
}

/// Encode a kept notice as a version-1 notice record.
pub(crate) fn encode_notice(notice: &NoticeRecord) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[0] = NOTICE_VERSION;
    out[1..9].copy_from_slice(&notice.id.to_le_bytes());
    out[9] = match notice.outcome {
        NoticeOutcome::Delivered => 1,
        NoticeOutcome::Expired => 2,
    };
    out[10..18].copy_from_slice(&notice.made_ms.to_le_bytes());
    out
}

/// Decode a notice record, whatever its bytes.
pub(crate) fn decode_notice(bytes: &[u8]) -> Result<NoticeRecord, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    if version != NOTICE_VERSION {
        return Err(RecordError::UnknownVersion { found: version });
    }
    let id = reader.u64()?;
    let outcome = match reader.u8()? {
        1 => NoticeOutcome::Delivered,
        2 => NoticeOutcome::Expired,
        found => return Err(RecordError::BadOutcome { found }),
    };
    let made_ms = reader.u64()?;
    reader.finish()?;
    Ok(NoticeRecord {
        id,
        outcome,
        made_ms,
    })
}

/// A length as the format's `u32`. Every length the store writes is far
/// smaller (names are at most 32 bytes, labels 64, devices a handful); a
/// larger one saturates, which decoding then rejects rather than misreads.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Append a `u32`, little-endian.
fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Append a string: its byte length, then its bytes.
fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u32(out, len_u32(text.len()));
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over a record's bytes that fails, rather than panics, at the end.
struct Reader<'a> {
    /// The whole record.
    bytes: &'a [u8],
    /// Where the next field starts.
    at: usize,
}

impl<'a> Reader<'a> {
    /// Bytes not read yet.
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let truncated = RecordError::Truncated {
            at: self.at,
            wanted: n,
            left: self.left(),
        };
        let end = self.at.checked_add(n).ok_or(truncated.clone())?;
        let slice = self.bytes.get(self.at..end).ok_or(truncated)?;
        self.at = end;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// The next byte.
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    /// The next `u32`, little-endian.
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.array().map(u32::from_le_bytes)
    }

    /// The next `u64`, little-endian.
    fn u64(&mut self) -> Result<u64, RecordError> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next string: a `u32` length and that many UTF-8 bytes.
    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.u32()?;
        let at = self.at;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::NotUtf8 { at })
    }

    /// Succeed only if every byte was read.
    fn finish(self) -> Result<(), RecordError> {
        match self.left() {
            0 => Ok(()),
            extra => Err(RecordError::TrailingBytes { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AccountRecord {
        AccountRecord {
            name: "Alice".into(),
            created_ms: 1_764_000_000_123,
            devices: vec![
                DeviceRecord {
                    fingerprint: Fingerprint::new([7; 32]),
                    label: "first device".into(),
                    added_ms: 1_764_000_000_123,
                    last_seen_ms: 0,
                },
                DeviceRecord {
                    fingerprint: Fingerprint::new([0xfe; 32]),
                    label: "laptöp".into(),
                    added_ms: 2,
                    last_seen_ms: u64::MAX,
                },
            ],
        }
    }

    #[test]
    fn mail_round_trips_and_truncations_are_errors() {
        for sender_account in [None, Some("alice".to_owned())] {
            let mail = MailRecord {
                id: 7 << 40 | 3,
                from: "Alice".into(),
                sent_at_ms: 1_764_000_000_123,
                body: "hé".into(),
                sender_account,
            };
            let bytes = encode_mail(&mail);
            assert_eq!(bytes[0], MAIL_VERSION);
            assert_eq!(decode_mail(&bytes), Ok(mail));
            for len in 0..bytes.len() {
                assert!(decode_mail(&bytes[..len]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                decode_mail(&longer),
                Err(RecordError::TrailingBytes { extra: 1 })
            );
        }
    }

    #[test]
    fn notices_round_trip_with_the_documented_layout() {
        for outcome in [NoticeOutcome::Delivered, NoticeOutcome::Expired] {
            let notice = NoticeRecord {
                id: 7 << 40 | 3,
                outcome,
                made_ms: 0x0102,
            };
            let bytes = encode_notice(&notice);
            assert_eq!(decode_notice(&bytes), Ok(notice));
            for len in 0..bytes.len() {
                assert!(decode_notice(&bytes[..len]).is_err());
            }
        }
        let bytes = encode_notice(&NoticeRecord {
            id: 5,
            outcome: NoticeOutcome::Expired,
            made_ms: 0x0102,
        });
        assert_eq!(
            bytes,
            [1, 5, 0, 0, 0, 0, 0, 0, 0, 2, 2, 1, 0, 0, 0, 0, 0, 0]
        );
        let mut bad = bytes;
        bad[9] = 3;
        assert_eq!(
            decode_notice(&bad),
            Err(RecordError::BadOutcome { found: 3 })
        );
        bad[0] = 2;
        assert_eq!(
            decode_notice(&bad),
            Err(RecordError::UnknownVersion { found: 2 })
        );
    }

    #[test]
    fn accounts_round_trip() {
        for account in [
            sample(),
            AccountRecord {
                name: "b".into(),
                created_ms: 0,
                devices: Vec::new(),
            },
        ] {
            let bytes = encode_account(&account);
            assert_eq!(decode_account(&bytes), Ok(account));
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let account = AccountRecord {
            name: "ab".into(),
            created_ms: 0x0102,
            devices: vec![DeviceRecord {
                fingerprint: Fingerprint::new([9; 32]),
                label: "x".into(),
                added_ms: 3,
                last_seen_ms: 4,
            }],
        };
        let mut expected = vec![
            1, 2, 0, 0, 0, b'a', b'b', 2, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        ];
        expected.extend_from_slice(&[9; 32]);
        expected.extend_from_slice(&[1, 0, 0, 0, b'x']);
        expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_account(&account), expected);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode_account(&sample());
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    decode_account(&bytes[..len]),
                    Err(RecordError::Truncated { .. } | RecordError::ImpossibleCount { .. })
                ),
                "{len} of {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        let good = encode_account(&sample());

        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            decode_account(&longer),
            Err(RecordError::TrailingBytes { extra: 1 })
        );

        let mut version = good.clone();
        version[0] = 9;
        assert_eq!(
            decode_account(&version),
            Err(RecordError::UnknownVersion { found: 9 })
        );

        // The name's first byte (after the version and its 4-byte length).
        let mut utf8 = good.clone();
        utf8[5] = 0xff;
        assert_eq!(decode_account(&utf8), Err(RecordError::NotUtf8 { at: 5 }));

        // A device count of u32::MAX must not be trusted for an allocation.
        let mut count = encode_account(&AccountRecord {
            devices: Vec::new(),
            ..sample()
        });
        let at = count.len() - 4;
        count[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_account(&count),
            Err(RecordError::ImpossibleCount { .. })
        ));

        // A name length of u32::MAX.
        let mut name = good;
        name[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_account(&name),
            Err(RecordError::Truncated { at: 5, .. })
        ));

        for garbage in [&b""[..], b"\x01", b"garbage", &[0xff; 100]] {
            assert!(decode_account(garbage).is_err(), "{garbage:?}");
        }
    }
}
