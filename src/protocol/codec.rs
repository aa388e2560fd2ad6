//! The only file that names bincode: size-limited reads, exact decodes, and
//! one-frame-per-stream writes.
//!
//! A stream direction carries exactly one frame: the reader takes everything up
//! to FIN (at most [`MAX_FRAME_BYTES`]) and decodes exactly one value from it.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::frames::{Reply, RequestRef};
use super::{Version, MAX_FRAME_BYTES};

/// bincode 2 `standard()` (little endian, varints), with a decode limit so a
/// length prefix can never claim more than a few frames' worth of memory.
type WireConfig = Configuration<LittleEndian, Varint, Limit<DECODE_CLAIM_LIMIT>>;

const WIRE: WireConfig = bincode::config::standard().with_limit::<DECODE_CLAIM_LIMIT>();

/// What bincode may "claim" while decoding one frame. The frame itself is
/// already at most [`MAX_FRAME_BYTES`] (checked before decoding); this limit
/// only stops a length prefix from allocating more than the frame could hold.
/// It cannot be [`MAX_FRAME_BYTES`]: bincode charges every varint at its native
/// width (a one-byte `u64` counts 8, a variant index 4), so a valid frame near
/// the limit claims more than its length (a 73,728-byte Send claims 73,741, and
/// a `Users` frame of 2,234 longest names about 89,000). Every encoded byte
/// claims at most 8, so 8 frames' worth admits every frame within the limit.
const DECODE_CLAIM_LIMIT: usize = 8 * MAX_FRAME_BYTES;

/// Why bytes are not exactly one valid frame, or a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding of the expected frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A valid frame followed by more bytes.
    #[error("{0} unexpected bytes after the frame")]
    TrailingBytes(usize),
    /// The frame is larger than the protocol allows.
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The value could not be encoded.
    #[error("could not encode frame: {0}")]
    Encode(String),
    /// A frame that exists only in a later protocol version than the connection's.
    #[error("that frame does not exist in protocol {0}")]
    NotInVersion(Version),
}

/// Why one frame could not be read from or written to a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer sent more than a frame's worth of bytes.
    #[error("frame over the {MAX_FRAME_BYTES}-byte limit")]
    TooLong,
    /// The stream failed while reading.
    #[error("reading the stream failed")]
    Read(#[from] quinn::ReadError),
    /// The stream failed while writing.
    #[error("writing the stream failed")]
    Write(#[from] quinn::WriteError),
    /// The stream was already finished or reset.
    #[error("stream already closed")]
    Closed(#[from] quinn::ClosedStream),
    /// The bytes were not exactly one valid frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl FrameError {
    /// Whether the peer broke the protocol (as opposed to the stream or connection failing).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, FrameError::TooLong | FrameError::Codec(_))
    }
}

/// Encode one frame.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // bincode's own `encode_to_vec` starts from an empty Vec and grows it
    // field by field: two or three reallocations for every receipt and
    // delivery header on the server's hot path. Most frames fit here.
    let mut bytes = Vec::with_capacity(ENCODE_START_BYTES);
    bincode::serde::encode_into_std_write(value, &mut bytes, WIRE)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// The capacity an encoded frame starts with: a receipt, a delivery header
/// (with a name of up to 32 bytes) and every small frame fit.
const ENCODE_START_BYTES: usize = 96;

/// [`encode`] into a [`Bytes`] of exactly the frame's length. A small frame
/// is encoded on the stack and copied once into an allocation of its size:
/// one allocation, where `Bytes::from` a larger `Vec` makes a second for
/// its shared header (the server's receipts and delivery headers).
pub fn encode_to_bytes<T: Serialize>(value: &T) -> Result<Bytes, CodecError> {
    let mut small = [0u8; ENCODE_START_BYTES];
    match bincode::serde::encode_into_slice(value, &mut small, WIRE) {
        Ok(len) => Ok(Bytes::copy_from_slice(&small[..len])),
        // Too long for the stack buffer (or failed): the general path decides.
        Err(_) => encode(value).map(Bytes::from),
    }
}

/// Decode exactly one frame from all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_borrowed(bytes)
}

/// Decode exactly one frame from all of `bytes`, borrowing its strings from `bytes`.
pub fn decode_borrowed<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (value, used) = bincode::serde::borrow_decode_from_slice(bytes, WIRE)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Decode the request a connection of `version` sent, borrowing its strings
/// from `bytes`. A variant that `version` does not have is as malformed as
/// bytes that are no request at all.
pub fn decode_request(version: Version, bytes: &[u8]) -> Result<RequestRef<'_>, CodecError> {
    let request: RequestRef<'_> = decode_borrowed(bytes)?;
    if request.since() > version {
        return Err(CodecError::NotInVersion(version));
    }
    Ok(request)
}

/// `part` (a string decoded from `frame`) as a slice of `frame`, sharing its
/// memory. A string that did not come from `frame` is copied instead.
pub fn slice_of(frame: &Bytes, part: &str) -> Bytes {
    let frame_range = frame.as_ptr_range();
    let part_range = part.as_bytes().as_ptr_range();
    if frame_range.start <= part_range.start && part_range.end <= frame_range.end {
        frame.slice_ref(part.as_bytes())
    } else {
        Bytes::copy_from_slice(part.as_bytes())
    }
}

/// Read the stream to its end: the bytes of one frame, at most [`MAX_FRAME_BYTES`].
///
/// A frame that arrived in one piece (every small request does) is
/// returned as the received buffer itself, shared with quinn: no
/// allocation and no copy. A frame in several pieces is joined.
pub async fn read_frame_bytes(recv: &mut quinn::RecvStream) -> Result<Bytes, FrameError> {
    let mut whole: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(chunk) = recv.read_chunk(MAX_FRAME_BYTES, true).await? {
        let len = whole.as_ref().map_or(0, Bytes::len) + joined.len() + chunk.bytes.len();
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLong);
        }
        match whole.take() {
            None if joined.is_empty() => whole = Some(chunk.bytes),
            None => joined.extend_from_slice(&chunk.bytes),
            Some(first) => {
                joined.reserve_exact(len);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk.bytes);
            }
        }
    }
    Ok(whole.unwrap_or_else(|| Bytes::from(joined)))
}

/// Read the stream to its end (at most one frame's worth) and decode exactly one frame.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, FrameError> {
    let bytes = read_frame_bytes(recv).await?;
    Ok(decode(&bytes)?)
}

/// Encode one frame, write it, and finish the stream.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
) -> Result<(), FrameError> {
    write_parts(send, [encode_to_bytes(value)?]).await
}

/// Write a reply on a connection of `version`, and finish the stream. A reply
/// that `version` does not have is never written.
pub async fn write_reply(
    send: &mut quinn::SendStream,
    version: Version,
    reply: &Reply,
) -> Result<(), FrameError> {
    if reply.since() > version {
        return Err(CodecError::NotInVersion(version).into());
    }
    write_frame(send, reply).await
}

/// The most bytes a `Push::Deliver` frame from a sender named `from_len` bytes
/// with a body of `body_len` bytes can take: the variant index (1 byte), id
/// and timestamp (at most 9 each), the name's length (1 byte: names are at
/// most 32 bytes) and the body's length (at most 5 bytes), then the name and body.
pub const fn deliver_frame_len_bound(from_len: usize, body_len: usize) -> usize {
    1 + 9 + 1 + from_len + 9 + 5 + body_len
}

/// How many of the leading `names` (each at most 32 bytes) fit in a
/// `Reply::Users` frame of at most `frame_bytes` bytes.
pub fn users_frame_prefix<'a>(
    names: impl IntoIterator<Item = &'a str>,
    frame_bytes: usize,
) -> usize {
    // The variant (1 byte) and the count (a varint: 3 bytes cover every count
    // that fits), then per name a one-byte length and the name.
    const HEADER: usize = 1 + 3;
    let mut used = HEADER;
    names
        .into_iter()
        .take_while(|name| {
            used += 1 + name.len();
            used <= frame_bytes
        })
        .count()
}

/// The bytes of a `Push::Deliver` frame up to, not including, the body's
/// UTF-8 bytes: with them appended, exactly `encode(&Push::Deliver{..})`. Lets
/// the server forward a received body without copying it into a new frame.
pub fn encode_deliver_header(
    id: u64,
    from: &str,
    sent_at_ms: u64,
    body_len: usize,
) -> Result<Bytes, CodecError> {
    // An enum variant is its index then its fields; a string is its length then
    // its bytes. `Deliver` is variant 0 of `Push`.
    const DELIVER: u32 = 0;
    encode_to_bytes(&(DELIVER, id, from, sent_at_ms, body_len as u64))
}

/// A `Push::Deliver` frame's fields, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverRef<'a> {
    /// The message id.
    pub id: u64,
    /// The sender's name.
    pub from: &'a str,
    /// The server's clock when it accepted the message, Unix milliseconds.
    pub sent_at_ms: u64,
    /// The message text.
    pub body: &'a str,
}

/// Decode exactly one `Push::Deliver` frame from all of `bytes`, without
/// copying its strings (a node checks a frame another node built).
pub fn decode_deliver(bytes: &[u8]) -> Result<DeliverRef<'_>, CodecError> {
    const DELIVER: u32 = 0;
    let (variant, id, from, sent_at_ms, body): (u32, u64, &str, u64, &str) =
        decode_borrowed(bytes)?;
    if variant != DELIVER {
        return Err(CodecError::Malformed("not a Deliver frame".to_owned()));
    }
    Ok(DeliverRef {
        id,
        from,
        sent_at_ms,
        body,
    })
}

/// Write a frame given as consecutive parts (without copying them), and finish the stream.
pub async fn write_parts(
    send: &mut quinn::SendStream,
    parts: impl IntoIterator<Item = Bytes>,
) -> Result<(), FrameError> {
    for part in parts {
        send.write_chunk(part).await?;
    }
    send.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Push, RefuseReason, Reply, Request, Status};

    #[test]
    fn deliver_frames_decode_borrowed_and_other_pushes_do_not() {
        let deliver = Push::Deliver {
            id: 7,
            from: "alice".into(),
            sent_at_ms: 1_700_000_000_000,
            body: "hi é".into(),
        };
        let bytes = encode(&deliver).unwrap();
        let parts = decode_deliver(&bytes).unwrap();
        assert_eq!(
            (parts.id, parts.from, parts.sent_at_ms, parts.body),
            (7, "alice", 1_700_000_000_000, "hi é")
        );
        let receipt = encode(&Push::Receipt {
            id: 7,
            status: Status::Delivered,
        })
        .unwrap();
        assert!(decode_deliver(&receipt).is_err());
        assert!(decode_deliver(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_deliver(&longer).is_err());
    }

    #[test]
    fn hello_matches_the_contract_bytes() {
        let hello = Request::Hello {
            protocol: 1,
            username: "alice".into(),
        };
        assert_eq!(encode(&hello).unwrap(), b"\x00\x01\x05alice");
    }

    #[test]
    fn v2_frames_match_the_contract_bytes() {
        use crate::protocol::{Account, Device, DeviceOp, Failure};
        // The contract's two examples.
        assert_eq!(encode(&Request::Devices(DeviceOp::List)).unwrap(), [3, 0]);
        let session = Reply::Session {
            server: "s".into(),
            online: 1,
            account: Account::Returning,
            queued: 0,
        };
        assert_eq!(encode(&session).unwrap(), [4, 1, b's', 1, 2, 0]);
        // From the encoding rules: Vec<u8> is a varint length then raw bytes.
        let fingerprint: Vec<u8> = (0..32).collect();
        let add = Request::Devices(DeviceOp::Add {
            fingerprint: fingerprint.clone(),
            label: "phone".into(),
        });
        let mut expected = vec![3, 1, 32];
        expected.extend(0..32u8);
        expected.extend([5, b'p', b'h', b'o', b'n', b'e']);
        assert_eq!(encode(&add).unwrap(), expected);
        let remove = Request::Devices(DeviceOp::Remove {
            fingerprint: fingerprint.clone(),
        });
        let mut expected = vec![3, 2, 32];
        expected.extend(0..32u8);
        assert_eq!(encode(&remove).unwrap(), expected);
        let devices = Reply::Devices {
            devices: vec![Device {
                fingerprint,
                label: "first device".into(),
                added_ms: 1_700_000_000_000,
                last_seen_ms: 0,
                current: true,
            }],
        };
        let mut expected = vec![5, 1, 32];
        expected.extend(0..32u8);
        expected.push(12);
        expected.extend(b"first device");
        expected.push(253);
        expected.extend(1_700_000_000_000u64.to_le_bytes());
        expected.extend([0, 1]);
        assert_eq!(encode(&devices).unwrap(), expected);
        let failed = Reply::Failed {
            reason: Failure::LastDevice,
            detail: "x".into(),
        };
        assert_eq!(encode(&failed).unwrap(), [6, 4, 1, b'x']);
        let refused = Reply::Refused {
            reason: RefuseReason::KeyMismatch,
            detail: String::new(),
        };
        assert_eq!(encode(&refused).unwrap(), [1, 4, 0]);
        let refused = Reply::Refused {
            reason: RefuseReason::AccountRequired,
            detail: String::new(),
        };
        assert_eq!(encode(&refused).unwrap(), [1, 5, 0]);
        let receipt = Push::Receipt {
            id: 300,
            status: Status::Expired,
        };
        assert_eq!(encode(&receipt).unwrap(), [1, 251, 44, 1, 7]);
        for (account, index) in [(Account::Guest, 0), (Account::Registered, 1)] {
            assert_eq!(encode(&account).unwrap(), [index]);
        }
    }

    #[test]
    fn varints_use_the_contract_markers() {
        let receipt = |id| Reply::Receipt {
            id,
            status: Status::RecipientBusy,
        };
        assert_eq!(encode(&receipt(250)).unwrap(), [2, 250, 5]);
        assert_eq!(encode(&receipt(251)).unwrap(), [2, 251, 251, 0, 5]);
        assert_eq!(encode(&receipt(65_536)).unwrap(), [2, 252, 0, 0, 1, 0, 5]);
        assert_eq!(
            encode(&receipt(1 << 32)).unwrap(),
            [2, 253, 0, 0, 0, 0, 1, 0, 0, 0, 5]
        );
    }

    #[test]
    fn longer_varint_forms_are_accepted() {
        // 5 written as 251 + u16: not shortest, but receivers may accept it.
        let reply: Reply = decode(&[2, 251, 5, 0, 0]).unwrap();
        assert_eq!(
            reply,
            Reply::Receipt {
                id: 5,
                status: Status::Delivered
            }
        );
    }

    #[test]
    fn every_frame_round_trips() {
        let requests = [
            Request::Hello {
                protocol: 1,
                username: "bob".into(),
            },
            Request::Send {
                to: "bob".into(),
                body: "hi there".into(),
            },
            Request::ListUsers,
        ];
        for request in requests {
            assert_eq!(
                decode::<Request>(&encode(&request).unwrap()).unwrap(),
                request
            );
        }
        let replies = [
            Reply::Welcome {
                server: "x".into(),
                online: 3,
            },
            Reply::Refused {
                reason: RefuseReason::ServerFull,
                detail: "full".into(),
            },
            Reply::Users {
                names: vec!["a".into(), "B".into()],
            },
        ];
        for reply in replies {
            assert_eq!(decode::<Reply>(&encode(&reply).unwrap()).unwrap(), reply);
        }
        let push = Push::Deliver {
            id: 9,
            from: "a".into(),
            sent_at_ms: 1_700_000_000_000,
            body: "b".into(),
        };
        assert_eq!(decode::<Push>(&encode(&push).unwrap()).unwrap(), push);
    }

    #[test]
    fn borrowed_requests_share_the_owned_wire_format() {
        use crate::protocol::frames::RequestRef;
        let pairs = [
            (
                Request::Hello {
                    protocol: 1,
                    username: "alice".into(),
                },
                RequestRef::Hello {
                    protocol: 1,
                    username: "alice",
                },
            ),
            (
                Request::Send {
                    to: "bob".into(),
                    body: "hé".into(),
                },
                RequestRef::Send {
                    to: "bob",
                    body: "hé",
                },
            ),
            (Request::ListUsers, RequestRef::ListUsers),
        ];
        for (owned, borrowed) in pairs {
            let bytes = encode(&owned).unwrap();
            assert_eq!(bytes, encode(&borrowed).unwrap());
            assert_eq!(decode_borrowed::<RequestRef>(&bytes).unwrap(), borrowed);
        }
        let mut bytes = encode(&Request::ListUsers).unwrap();
        bytes.push(7);
        assert!(matches!(
            decode_borrowed::<RequestRef>(&bytes),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn a_deliver_header_plus_the_body_is_the_whole_frame() {
        let long_name = "n".repeat(32);
        for body_len in [0, 1, 250, 251, 65_535, 65_536] {
            let body = "b".repeat(body_len);
            for (id, from, at) in [
                (0, "a", 0),
                (250, long_name.as_str(), 1_700_000_000_000),
                (u64::MAX, "x", u64::MAX),
            ] {
                let mut parts = encode_deliver_header(id, from, at, body.len())
                    .unwrap()
                    .to_vec();
                parts.extend_from_slice(body.as_bytes());
                let whole = Push::Deliver {
                    id,
                    from: from.into(),
                    sent_at_ms: at,
                    body: body.clone(),
                };
                assert_eq!(parts, encode(&whole).unwrap(), "body {body_len}, id {id}");
            }
        }
    }

    /// A Send frame of exactly `frame_len` bytes to a 13-letter name, its
    /// body length written as `252` + u32 (bodies of 65,536 bytes and more).
    fn send_frame_of(frame_len: usize) -> Vec<u8> {
        let to = "abcdefghijklm";
        let body_len = frame_len - 1 - (1 + to.len()) - 5;
        let mut frame = vec![1, to.len() as u8];
        frame.extend_from_slice(to.as_bytes());
        frame.push(252);
        frame.extend_from_slice(&u32::try_from(body_len).unwrap().to_le_bytes());
        frame.resize(frame_len, b'x');
        frame
    }

    #[test]
    fn every_frame_within_the_limit_decodes_even_with_an_oversized_body() {
        use crate::protocol::frames::RequestRef;
        for frame_len in [65_560, MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES] {
            let frame = send_frame_of(frame_len);
            let request: Request = decode(&frame).expect("a frame within the limit decodes");
            let Request::Send { body, .. } = request else {
                panic!("not a Send");
            };
            assert!(body.len() > crate::protocol::MAX_BODY_BYTES);
            let borrowed: RequestRef = decode_borrowed(&frame).expect("borrowed too");
            assert!(
                matches!(borrowed, RequestRef::Send { body, .. } if body.len() == frame_len - 20)
            );
        }
        assert!(matches!(
            decode::<Request>(&send_frame_of(MAX_FRAME_BYTES + 1)),
            Err(CodecError::TooLarge(73_729))
        ));
    }

    #[test]
    fn the_longest_names_fill_but_never_overflow_a_users_frame() {
        let all: Vec<String> = (0..5000).map(|i| format!("{i:032}")).collect();
        let fit = users_frame_prefix(all.iter().map(String::as_str), MAX_FRAME_BYTES);
        assert_eq!(fit, 2_234);
        let frame = encode(&Reply::Users {
            names: all[..fit].to_vec(),
        })
        .expect("fits");
        assert!(frame.len() <= MAX_FRAME_BYTES);
        let bigger = encode(&Reply::Users {
            names: all[..=fit].to_vec(),
        });
        assert!(
            !matches!(bigger, Ok(frame) if frame.len() <= MAX_FRAME_BYTES),
            "the prefix is as long as fits"
        );
        assert_eq!(users_frame_prefix(["a", "B", "c"], MAX_FRAME_BYTES), 3);
    }

    #[test]
    fn the_deliver_bound_holds_for_the_largest_fields() {
        let from = "n".repeat(32);
        for body_len in [0, 250, 65_536] {
            let whole = Push::Deliver {
                id: u64::MAX,
                from: from.clone(),
                sent_at_ms: u64::MAX,
                body: "b".repeat(body_len),
            };
            let len = encode(&whole).unwrap().len();
            assert!(len <= deliver_frame_len_bound(32, body_len));
            if body_len == 65_536 {
                assert_eq!(
                    len,
                    deliver_frame_len_bound(32, body_len),
                    "the bound is tight"
                );
            }
        }
    }

    #[test]
    fn requests_decode_only_in_a_version_that_has_them() {
        let bytes = encode(&Request::ListUsers).unwrap();
        assert_eq!(
            decode_request(Version::V1, &bytes).unwrap(),
            RequestRef::ListUsers
        );
        assert!(matches!(
            decode_request(Version::V1, &[3]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn a_decoded_body_is_a_slice_of_its_frame_and_anything_else_a_copy() {
        let frame = Bytes::from(
            encode(&Request::Send {
                to: "bob".into(),
                body: "hi".into(),
            })
            .unwrap(),
        );
        let RequestRef::Send { body, .. } = decode_request(Version::V1, &frame).unwrap() else {
            panic!("a Send");
        };
        let slice = slice_of(&frame, body);
        assert_eq!(&slice[..], b"hi");
        assert_eq!(slice.as_ptr(), body.as_ptr(), "shares the frame's memory");
        assert_eq!(&slice_of(&frame, "elsewhere")[..], b"elsewhere");
    }

    #[test]
    fn the_fullest_users_frame_decodes() {
        let names: Vec<String> = (0..2_234).map(|i| format!("{i:032}")).collect();
        let frame = encode(&Reply::Users { names }).unwrap();
        assert!(frame.len() <= MAX_FRAME_BYTES);
        assert!(
            matches!(decode::<Reply>(&frame), Ok(Reply::Users { names }) if names.len() == 2_234)
        );
    }

    #[test]
    fn trailing_bytes_unknown_variants_and_bad_utf8_are_rejected() {
        let mut bytes = encode(&Request::ListUsers).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(CodecError::TrailingBytes(1))
        ));
        assert!(matches!(
            decode::<Request>(&[3]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(&[]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(&[1, 1, b'b', 1, 0xff]),
            Err(CodecError::Malformed(_))
        ));
        // A length prefix claiming far more than the frame holds.
        assert!(matches!(
            decode::<Request>(&[1, 253, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(CodecError::Malformed(_))
        ));
    }
}
