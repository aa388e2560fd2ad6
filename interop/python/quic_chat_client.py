"""A minimal, independent quic-chat client (protocol v1 and v2) on aioquic.

Written from the wire contracts (protocol-v1.md, and protocol-v2.md, which is
a delta over v1) alone: the bincode-2 "standard" encoding (varints, enums,
strings, vecs, options, bools) is implemented here by hand, not derived from
the Rust code. So are the v2 device identity (a P-256 key with a self-signed
certificate, presented as the TLS client certificate) and its fingerprint
(SHA-256 over the certificate's DER SubjectPublicKeyInfo, found by walking
the DER by hand).

Library use:
    client = await ChatClient.connect("127.0.0.1", 4433, cafile="certs/ca.pem")
    reply = await client.hello("alice")          # Welcome or Refused
    me = Identity()                              # v2: a new device key
    v2 = await ChatClient.connect(host, port, cafile, alpn=[ALPN_V2, ALPN_V1],
                                  identity=me)
    reply = await v2.hello("alice")              # Session or Refused (on quic-chat/2)
    reply = await v2.devices(ListDevices())      # DeviceList or Failed
    receipt = await client.send("bob", "hi")     # Receipt
    names = await client.list_users()            # list[str]
    stream_id, deliver = await client.next_push()
    stream_id, push = await client.next_new_push()   # drops repeated ids (PushDedup)
    await client.close()                         # application close 0 (BYE)

Command line (a tiny interactive client):
    python quic_chat_client.py --ca certs/ca.pem 127.0.0.1:4433 alice
    then type: send USER MESSAGE | users | EXIT
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import collections
import dataclasses
import datetime
import enum
import hashlib
import ipaddress
import os
import socket
import ssl
import sys
import tempfile
import time
from typing import Optional, Union

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

ALPN_V1 = "quic-chat/1"
ALPN_V2 = "quic-chat/2"
ALPN = ALPN_V1  # what connect() offers unless told otherwise
ALPN_VERSIONS = {ALPN_V1: 1, ALPN_V2: 2}
PROTOCOL_VERSION = 1
FRAME_LIMIT = 73_728  # bytes, one frame per stream direction
BODY_LIMIT = 65_536  # bytes of UTF-8
DEDUP_IDS = 4_096  # ids a client remembers to drop repeats (protocol-v2.md: "at least the last 4,096")

# Application close codes (CONNECTION_CLOSE, application variant).
BYE = 0
SERVER_SHUTDOWN = 1
PROTOCOL_ERROR = 2
REFUSED = 3
TOO_SLOW = 4
REPLACED = 5  # v2

U16_MAX = (1 << 16) - 1
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------
# bincode 2.0 `config::standard()` encoding, by hand
# --------------------------------------------------------------------------


class DecodeError(ValueError):
    pass


class Encoder:
    """Little endian, variable-length integers, shortest form."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def varint(self, value: int, max_value: int = U64_MAX) -> "Encoder":
        if not 0 <= value <= max_value:
            raise ValueError(f"integer {value} out of range 0..={max_value}")
        if value < 251:
            self.buf.append(value)
        elif value <= U16_MAX:
            self.buf.append(251)
            self.buf += value.to_bytes(2, "little")
        elif value <= U32_MAX:
            self.buf.append(252)
            self.buf += value.to_bytes(4, "little")
        else:
            self.buf.append(253)
            self.buf += value.to_bytes(8, "little")
        return self

    def u32(self, value: int) -> "Encoder":
        return self.varint(value, U32_MAX)

    def u64(self, value: int) -> "Encoder":
        return self.varint(value, U64_MAX)

    def variant(self, index: int) -> "Encoder":
        # enum discriminant: u32 varint
        return self.u32(index)

    def string(self, value: Union[str, bytes]) -> "Encoder":
        # `bytes` lets tests put arbitrary (even invalid UTF-8) content on the wire
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self.u64(len(raw))  # usize length is encoded as a u64 varint
        self.buf += raw
        return self

    def byte_vec(self, value: bytes) -> "Encoder":
        # Vec<u8>: varint count, then one byte per element
        self.u64(len(value))
        self.buf += bytes(value)
        return self

    def bool(self, value: bool) -> "Encoder":
        self.buf.append(1 if value else 0)
        return self

    def option(self, value, encode_item) -> "Encoder":
        if value is None:
            self.buf.append(0)
        else:
            self.buf.append(1)
            encode_item(self, value)
        return self

    def vec(self, items, encode_item) -> "Encoder":
        self.u64(len(items))
        for item in items:
            encode_item(self, item)
        return self

    def bytes(self) -> bytes:
        return bytes(self.buf)


class Decoder:
    """Strict decoder. With `strict=True` (the default) integers must be in
    their shortest varint form, as the contract requires of senders."""

    def __init__(self, data: bytes, strict: bool = True) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.strict = strict

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(
                f"unexpected end of frame at offset {self.pos}: need {n} byte(s), "
                f"{len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, max_value: int = U64_MAX) -> int:
        start = self.pos
        first = self.take(1)[0]
        if first < 251:
            value, minimum = first, 0
        elif first == 251:
            value, minimum = int.from_bytes(self.take(2), "little"), 251
        elif first == 252:
            value, minimum = int.from_bytes(self.take(4), "little"), U16_MAX + 1
        elif first == 253:
            value, minimum = int.from_bytes(self.take(8), "little"), U32_MAX + 1
        else:
            raise DecodeError(f"invalid varint marker byte {first} at offset {start}")
        if value > max_value:
            raise DecodeError(f"integer {value} at offset {start} exceeds {max_value}")
        if self.strict and value < minimum:
            raise DecodeError(
                f"integer {value} at offset {start} not in shortest varint form "
                f"(marker {first})"
            )
        return value

    def u32(self) -> int:
        return self.varint(U32_MAX)

    def u64(self) -> int:
        return self.varint(U64_MAX)

    def variant(self) -> int:
        return self.u32()

    def string(self) -> str:
        start = self.pos
        length = self.u64()
        raw = self.take(length)
        try:
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string at offset {start} is not valid UTF-8: {exc}")

    def byte_vec(self) -> bytes:
        return self.take(self.u64())

    def bool(self) -> bool:
        b = self.take(1)[0]
        if b > 1:
            raise DecodeError(f"invalid bool byte {b} at offset {self.pos - 1}")
        return b == 1

    def option(self, decode_item):
        tag = self.take(1)[0]
        if tag == 0:
            return None
        if tag == 1:
            return decode_item(self)
        raise DecodeError(f"invalid Option tag {tag} at offset {self.pos - 1}")

    def vec(self, decode_item) -> list:
        count = self.u64()
        return [decode_item(self) for _ in range(count)]

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(
                f"{len(self.data) - self.pos} trailing byte(s) after the frame "
                f"(frame ends at offset {self.pos} of {len(self.data)})"
            )


# --------------------------------------------------------------------------
# Protocol messages: v1's, and the variants v2 appends
# --------------------------------------------------------------------------


# Variant indexes that exist only from protocol version 2 on. A decoder for a
# `quic-chat/1` connection rejects them exactly as it rejects unknown indexes
# (protocol-v2.md: "on a quic-chat/1 connection Request variant 3 is as
# malformed as it was in v1").
V2 = 2


class RefuseReason(enum.IntEnum):
    NameTaken = 0
    InvalidName = 1
    UnsupportedProtocol = 2
    ServerFull = 3
    KeyMismatch = 4  # v2
    AccountRequired = 5  # v2


class Status(enum.IntEnum):
    Delivered = 0
    NotConnected = 1
    Queued = 2
    TooLarge = 3
    RateLimited = 4
    RecipientBusy = 5
    InvalidRecipient = 6
    Expired = 7  # v2: only in Push::Receipt


class Account(enum.IntEnum):  # v2
    Guest = 0
    Registered = 1
    Returning = 2


class Failure(enum.IntEnum):  # v2
    NotRegistered = 0
    TooMany = 1
    InUse = 2
    UnknownDevice = 3
    LastDevice = 4
    Invalid = 5


# first index of each enum that a v1 connection does not have
_V1_LIMIT = {RefuseReason: 4, Status: 7}


# Request (client -> server, bidirectional streams)
@dataclasses.dataclass
class Hello:
    protocol: int
    username: Union[str, bytes]


@dataclasses.dataclass
class Send:
    to: Union[str, bytes]
    body: Union[str, bytes]


@dataclasses.dataclass
class ListUsers:
    pass


# Request::Devices(DeviceOp) (v2). The contract's names: Devices(List),
# Devices(Add{fingerprint, label}), Devices(Remove{fingerprint}).
@dataclasses.dataclass
class ListDevices:  # DeviceOp::List (0)
    pass


@dataclasses.dataclass
class AddDevice:  # DeviceOp::Add (1)
    fingerprint: bytes  # 32 bytes (tests send other lengths on purpose)
    label: Union[str, bytes]  # 1..=64 bytes


@dataclasses.dataclass
class RemoveDevice:  # DeviceOp::Remove (2)
    fingerprint: bytes


DeviceOp = Union[ListDevices, AddDevice, RemoveDevice]


@dataclasses.dataclass
class Devices:  # Request::Devices (3), v2
    op: DeviceOp


Request = Union[Hello, Send, ListUsers, Devices]


# Reply (server -> client, same stream)
@dataclasses.dataclass
class Welcome:
    server: str
    online: int


@dataclasses.dataclass
class Refused:
    reason: RefuseReason
    detail: str


@dataclasses.dataclass
class Receipt:
    id: int
    status: Status


@dataclasses.dataclass
class Users:
    names: list


@dataclasses.dataclass
class Session:  # Reply::Session (4), v2: the answer to an accepted v2 Hello
    server: str
    online: int
    account: Account
    queued: int


@dataclasses.dataclass
class Device:  # struct: its fields in order, no prefix
    fingerprint: bytes
    label: str
    added_ms: int
    last_seen_ms: int
    current: bool


@dataclasses.dataclass
class DeviceList:  # Reply::Devices (5), v2
    devices: list  # list[Device], in the order they were added


@dataclasses.dataclass
class Failed:  # Reply::Failed (6), v2
    reason: Failure
    detail: str


Reply = Union[Welcome, Refused, Receipt, Users, Session, DeviceList, Failed]


# Push (server -> client, server-opened unidirectional streams)
@dataclasses.dataclass
class Deliver:
    id: int
    from_: str
    sent_at_ms: int
    body: str


@dataclasses.dataclass
class LateReceipt:  # Push::Receipt (1), v2: final outcome of a Queued message
    id: int
    status: Status


Push = Union[Deliver, LateReceipt]


def _encode_device_op(enc: Encoder, op: DeviceOp) -> None:
    if isinstance(op, ListDevices):
        enc.variant(0)
    elif isinstance(op, AddDevice):
        enc.variant(1).byte_vec(op.fingerprint).string(op.label)
    elif isinstance(op, RemoveDevice):
        enc.variant(2).byte_vec(op.fingerprint)
    else:
        raise TypeError(f"not a DeviceOp: {op!r}")


def encode_request(req: Request) -> bytes:
    enc = Encoder()
    if isinstance(req, Hello):
        enc.variant(0).u32(req.protocol).string(req.username)
    elif isinstance(req, Send):
        enc.variant(1).string(req.to).string(req.body)
    elif isinstance(req, ListUsers):
        enc.variant(2)
    elif isinstance(req, Devices):
        enc.variant(3)
        _encode_device_op(enc, req.op)
    else:
        raise TypeError(f"not a Request: {req!r}")
    return enc.bytes()


def _encode_device(enc: Encoder, d: Device) -> None:
    enc.byte_vec(d.fingerprint).string(d.label).u64(d.added_ms).u64(d.last_seen_ms).bool(d.current)


def encode_reply(reply: Reply) -> bytes:
    """The canonical (shortest-form) encoding; used to check the server's bytes."""
    enc = Encoder()
    if isinstance(reply, Welcome):
        enc.variant(0).string(reply.server).u32(reply.online)
    elif isinstance(reply, Refused):
        enc.variant(1).variant(reply.reason).string(reply.detail)
    elif isinstance(reply, Receipt):
        enc.variant(2).u64(reply.id).variant(reply.status)
    elif isinstance(reply, Users):
        enc.variant(3).vec(reply.names, lambda e, n: e.string(n))
    elif isinstance(reply, Session):
        enc.variant(4).string(reply.server).u32(reply.online).variant(reply.account)
        enc.u32(reply.queued)
    elif isinstance(reply, DeviceList):
        enc.variant(5).vec(reply.devices, _encode_device)
    elif isinstance(reply, Failed):
        enc.variant(6).variant(reply.reason).string(reply.detail)
    else:
        raise TypeError(f"not a Reply: {reply!r}")
    return enc.bytes()


def encode_push(push: Push) -> bytes:
    enc = Encoder()
    if isinstance(push, Deliver):
        enc.variant(0).u64(push.id).string(push.from_).u64(push.sent_at_ms).string(push.body)
    elif isinstance(push, LateReceipt):
        enc.variant(1).u64(push.id).variant(push.status)
    else:
        raise TypeError(f"not a Push: {push!r}")
    return enc.bytes()


def _enum(cls, index: int, what: str, version: int = V2):
    limit = _V1_LIMIT.get(cls)
    if version < V2 and limit is not None and index >= limit:
        raise DecodeError(f"{what} variant index {index} does not exist in protocol v{version}")
    try:
        return cls(index)
    except ValueError:
        raise DecodeError(f"unknown {what} variant index {index}")


def _v2_only(tag: int, what: str, version: int) -> None:
    if version < V2:
        raise DecodeError(f"{what} variant index {tag} does not exist in protocol v{version}")


def _decode_device(dec: "Decoder") -> Device:
    return Device(
        fingerprint=dec.byte_vec(),
        label=dec.string(),
        added_ms=dec.u64(),
        last_seen_ms=dec.u64(),
        current=dec.bool(),
    )


def decode_reply(data: bytes, strict: bool = True, version: int = V2) -> Reply:
    """Decode exactly one Reply; trailing bytes are an error. `version` is the
    connection's protocol version: with 1, the v2-only variants are rejected."""
    dec = Decoder(data, strict)
    tag = dec.variant()
    if tag == 0:
        reply: Reply = Welcome(server=dec.string(), online=dec.u32())
    elif tag == 1:
        reply = Refused(
            reason=_enum(RefuseReason, dec.variant(), "RefuseReason", version),
            detail=dec.string(),
        )
    elif tag == 2:
        reply = Receipt(id=dec.u64(), status=_enum(Status, dec.variant(), "Status", version))
    elif tag == 3:
        reply = Users(names=dec.vec(lambda d: d.string()))
    elif tag == 4:
        _v2_only(tag, "Reply", version)
        reply = Session(
            server=dec.string(),
            online=dec.u32(),
            account=_enum(Account, dec.variant(), "Account"),
            queued=dec.u32(),
        )
    elif tag == 5:
        _v2_only(tag, "Reply", version)
        reply = DeviceList(devices=dec.vec(_decode_device))
    elif tag == 6:
        _v2_only(tag, "Reply", version)
        reply = Failed(reason=_enum(Failure, dec.variant(), "Failure"), detail=dec.string())
    else:
        raise DecodeError(f"unknown Reply variant index {tag}")
    dec.finish()
    return reply


def decode_push(data: bytes, strict: bool = True, version: int = V2) -> Push:
    """Decode exactly one Push; trailing bytes are an error."""
    dec = Decoder(data, strict)
    tag = dec.variant()
    if tag == 0:
        push: Push = Deliver(
            id=dec.u64(), from_=dec.string(), sent_at_ms=dec.u64(), body=dec.string()
        )
    elif tag == 1:
        _v2_only(tag, "Push", version)
        push = LateReceipt(id=dec.u64(), status=_enum(Status, dec.variant(), "Status", version))
    else:
        raise DecodeError(f"unknown Push variant index {tag}")
    dec.finish()
    return push


def decode_request(data: bytes, strict: bool = True, version: int = V2) -> Request:
    """Provided for symmetry and self-tests."""
    dec = Decoder(data, strict)
    tag = dec.variant()
    if tag == 0:
        req: Request = Hello(protocol=dec.u32(), username=dec.string())
    elif tag == 1:
        req = Send(to=dec.string(), body=dec.string())
    elif tag == 2:
        req = ListUsers()
    elif tag == 3:
        _v2_only(tag, "Request", version)
        op_tag = dec.variant()
        if op_tag == 0:
            op: DeviceOp = ListDevices()
        elif op_tag == 1:
            op = AddDevice(fingerprint=dec.byte_vec(), label=dec.string())
        elif op_tag == 2:
            op = RemoveDevice(fingerprint=dec.byte_vec())
        else:
            raise DecodeError(f"unknown DeviceOp variant index {op_tag}")
        req = Devices(op)
    else:
        raise DecodeError(f"unknown Request variant index {tag}")
    dec.finish()
    return req


# --------------------------------------------------------------------------
# Device identity (v2): a P-256 key and a self-signed end-entity certificate
# --------------------------------------------------------------------------


def _der_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """One DER element at `pos`: returns (tag, start of contents, end of element)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4:
            raise DecodeError(f"unsupported DER length form at offset {pos - 1}")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise DecodeError("DER element runs past the end")
    return tag, pos, end


def spki_der_of_certificate(cert_der: bytes) -> bytes:
    """The certificate's SubjectPublicKeyInfo exactly as encoded in it (the whole
    SEQUENCE, header included), found by walking the DER by hand (RFC 5280:
    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...")."""
    tag, start, _ = _der_tlv(cert_der, 0)
    if tag != 0x30:
        raise DecodeError("certificate is not a SEQUENCE")
    tag, pos, _ = _der_tlv(cert_der, start)  # tbsCertificate
    if tag != 0x30:
        raise DecodeError("tbsCertificate is not a SEQUENCE")
    if cert_der[pos] == 0xA0:  # explicit [0] version
        pos = _der_tlv(cert_der, pos)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = _der_tlv(cert_der, pos)[2]
    tag, _, end = _der_tlv(cert_der, pos)
    if tag != 0x30:
        raise DecodeError("subjectPublicKeyInfo is not a SEQUENCE")
    return cert_der[pos:end]


def fingerprint_of_spki(spki_der: bytes) -> bytes:
    return hashlib.sha256(spki_der).digest()


def fingerprint_text(fp: bytes) -> str:
    """`SHA256:` + unpadded standard base64 (43 characters for 32 bytes)."""
    return "SHA256:" + base64.b64encode(fp).decode("ascii").rstrip("=")


def parse_fingerprint(text: str) -> bytes:
    """Inverse of fingerprint_text (the `SHA256:` prefix is optional)."""
    b64 = text[len("SHA256:"):] if text.startswith("SHA256:") else text
    try:
        fp = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except ValueError:
        raise ValueError(f"not a fingerprint: {text!r}") from None
    if len(fp) != 32:
        raise ValueError(f"not a fingerprint (want 32 bytes, got {len(fp)}): {text!r}")
    return fp


class Identity:
    """A device key (P-256) and a self-signed end-entity certificate for it."""

    def __init__(self, private_key=None, common_name: str = "quic-chat device") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.private_key, hashes.SHA256())
        )

    def reissue(self, common_name: str = "re-issued") -> "Identity":
        """A new certificate for the same key (the fingerprint stays the same)."""
        return Identity(self.private_key, common_name)

    @property
    def certificate_der(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.certificate.public_bytes(Encoding.DER)

    @property
    def fingerprint(self) -> bytes:
        return fingerprint_of_spki(spki_der_of_certificate(self.certificate_der))

    @property
    def fingerprint_text(self) -> str:
        return fingerprint_text(self.fingerprint)

    def pem(self) -> bytes:
        """Certificate and private key, as `load_cert_chain` reads them."""
        from cryptography.hazmat.primitives import serialization as s

        return self.certificate.public_bytes(s.Encoding.PEM) + self.private_key.private_bytes(
            s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()
        )

    def save(self, path: str) -> str:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.pem())
        return path

    @classmethod
    def load(cls, path: str) -> "Identity":
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        data = open(path, "rb").read()
        ident = cls.__new__(cls)
        ident.certificate = x509.load_pem_x509_certificate(data)
        ident.private_key = load_pem_private_key(data, password=None)
        return ident

    def pem_file(self) -> str:
        """The PEM (certificate, then key) in a private temporary file, written
        once, for QuicConfiguration.load_cert_chain."""
        path = getattr(self, "_pem_file", None)
        if path is None or not os.path.exists(path):
            fd, path = tempfile.mkstemp(prefix="quic-chat-device-", suffix=".pem")
            os.close(fd)
            self.save(path)
            self._pem_file = path
            atexit.register(lambda p=path: os.path.exists(p) and os.unlink(p))
        return path


class RawCertificate:
    """Stands in for an x509.Certificate in aioquic's configuration so that a
    test can put arbitrary bytes in the TLS Certificate message."""

    def __init__(self, der: bytes) -> None:
        self._der = bytes(der)

    def public_bytes(self, encoding=None) -> bytes:
        return self._der


def sanitize(text: str) -> str:
    """Make control characters harmless for a terminal (C0 except tab, DEL, C1)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if ch == "\t" or not (cp < 0x20 or 0x7F <= cp <= 0x9F):
            out.append(ch)
        else:
            out.append(f"\\x{cp:02x}")
    return "".join(out)


# --------------------------------------------------------------------------
# Dropping repeats (v2 "Store and forward": at least once, late receipts)
# --------------------------------------------------------------------------


class SeenIds:
    """The last `capacity` distinct ids seen, forgotten first-in first-out.
    `add(id)` is True for an id not among them (and remembers it), False for a
    repeat (which does not refresh its place)."""

    def __init__(self, capacity: int = DEDUP_IDS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._order: collections.deque = collections.deque()
        self._set: set = set()

    def add(self, id_: int) -> bool:
        if id_ in self._set:
            return False
        self._set.add(id_)
        self._order.append(id_)
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft())
        return True

    def __contains__(self, id_: int) -> bool:
        return id_ in self._set

    def __len__(self) -> int:
        return len(self._order)


class PushDedup:
    """What a v2 client does with the pushes it receives before it shows them:
    a `Deliver` whose id it has already seen is dropped (after a server crash
    a message may come again with the same id), and so is a late receipt
    (`Push::Receipt`) for an id it already has a receipt for. Message ids and
    late-receipt ids are remembered separately (a receipt's id is one of my
    messages, a Deliver's id one sent to me). Keep one PushDedup per user for
    as long as the program runs, across its connections."""

    def __init__(self, capacity: int = DEDUP_IDS) -> None:
        self.delivers = SeenIds(capacity)
        self.receipts = SeenIds(capacity)
        self.dropped = 0  # how many pushes were dropped as repeats
        self.last_dropped: collections.deque = collections.deque(maxlen=64)

    def accept(self, push: "Push") -> bool:
        """True: show `push`. False: a repeat, dropped."""
        seen = self.receipts if isinstance(push, LateReceipt) else self.delivers
        if seen.add(push.id):
            return True
        self.dropped += 1
        self.last_dropped.append(push)
        return False


# --------------------------------------------------------------------------
# QUIC plumbing
# --------------------------------------------------------------------------


@dataclasses.dataclass
class CloseInfo:
    by_peer: bool  # True: the peer sent CONNECTION_CLOSE
    application: bool  # True: application variant (frame type 0x1d)
    code: int
    reason: str

    def describe(self) -> str:
        who = "peer" if self.by_peer else "local"
        kind = "application" if self.application else "transport"
        return f"{who} {kind} close code {self.code} reason {self.reason!r}"


class ConnectionClosed(Exception):
    def __init__(self, info: CloseInfo):
        super().__init__(info.describe())
        self.info = info


class StreamReset(Exception):
    def __init__(self, stream_id: int, code: int):
        super().__init__(f"stream {stream_id} reset by peer with code {code}")
        self.stream_id = stream_id
        self.code = code


class FrameTooLarge(Exception):
    pass


class _Connection(QuicConnection):
    """Records the peer's CONNECTION_CLOSE exactly as received (aioquic only
    reports it once the draining period ends, and does not expose the frame
    type that tells transport closes from application closes)."""

    on_peer_close = None

    def _handle_connection_close_frame(self, context, frame_type, buf):
        start = buf.tell()
        try:
            code = buf.pull_uint_var()
            if frame_type == 0x1C:  # transport variant carries a frame type
                buf.pull_uint_var()
            length = buf.pull_uint_var()
            reason = buf.pull_bytes(length).decode("utf-8", errors="replace")
        finally:
            buf.seek(start)
        if self.on_peer_close is not None:
            self.on_peer_close(CloseInfo(True, frame_type == 0x1D, code, reason))
        return super()._handle_connection_close_frame(context, frame_type, buf)


class _ChatProtocol(QuicConnectionProtocol):
    def __init__(self, quic: _Connection, stream_handler=None):
        super().__init__(quic, stream_handler)
        self._loop_ = asyncio.get_running_loop()
        self._bufs: dict[int, bytearray] = {}
        self._waiters: dict[int, asyncio.Future] = {}
        self.pushes: asyncio.Queue = asyncio.Queue()  # (stream_id, bytes)
        self.unexpected: list[tuple[int, bytes]] = []  # complete streams nobody awaited
        self.closed: asyncio.Future = self._loop_.create_future()
        self.alpn: Optional[str] = None
        self.session_resumed: bool = False
        self.early_data_accepted: bool = False
        quic.on_peer_close = self._on_close

    def expect_reply(self, stream_id: int) -> asyncio.Future:
        fut = self._loop_.create_future()
        if self.closed.done():
            fut.set_exception(ConnectionClosed(self.closed.result()))
        else:
            self._waiters[stream_id] = fut
        return fut

    def _on_close(self, info: CloseInfo) -> None:
        if not self.closed.done():
            self.closed.set_result(info)
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(info))

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.alpn = event.alpn_protocol
            self.session_resumed = event.session_resumed
            self.early_data_accepted = event.early_data_accepted
        elif isinstance(event, events.StreamDataReceived):
            sid = event.stream_id
            buf = self._bufs.setdefault(sid, bytearray())
            buf += event.data
            if len(buf) > FRAME_LIMIT:
                self._bufs.pop(sid, None)
                fut = self._waiters.pop(sid, None)
                err = FrameTooLarge(f"stream {sid}: more than {FRAME_LIMIT} bytes")
                if fut is not None and not fut.done():
                    fut.set_exception(err)
                else:
                    self.unexpected.append((sid, b"<over frame limit>"))
                return
            if event.end_stream:
                data = bytes(self._bufs.pop(sid))
                fut = self._waiters.pop(sid, None)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(data)
                elif sid & 0x3 == 0x3:  # server-initiated unidirectional
                    self.pushes.put_nowait((sid, data))
                else:
                    self.unexpected.append((sid, data))
        elif isinstance(event, events.StreamReset):
            fut = self._waiters.pop(event.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(StreamReset(event.stream_id, event.error_code))
        elif isinstance(event, events.ConnectionTerminated):
            # Only reached first for local closes / idle timeouts / local TLS failures.
            self._on_close(
                CloseInfo(False, event.frame_type is None, event.error_code, event.reason_phrase)
            )


class ChatClient:
    def __init__(self, protocol: _ChatProtocol, transport, dedup: Optional[PushDedup] = None) -> None:
        self._protocol = protocol
        self._transport = transport
        self.username: Optional[str] = None
        self.dedup = dedup if dedup is not None else PushDedup()

    # -- connecting ---------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        cafile: str,
        server_name: Optional[str] = None,
        alpn: Union[str, list] = ALPN,
        idle_timeout: float = 30.0,
        identity: Optional[Identity] = None,
        certificate=None,
        private_key=None,
        session_ticket=None,
        on_session_ticket=None,
        dedup: Optional[PushDedup] = None,
    ) -> "ChatClient":
        """Handshake with the server; raises ConnectionClosed if it fails.

        `alpn` is one protocol or a list to offer. `identity` (v2) is presented
        as the client certificate when the server asks for one.
        `certificate`/`private_key` override it, for tests that present a
        broken certificate (a RawCertificate) or sign with another key.
        `session_ticket` resumes a session (TLS 1.3 PSK); `on_session_ticket`
        receives the tickets the server issues. `dedup` (what next_new_push
        drops repeats with) is shared with earlier connections of the same user
        when given; otherwise the connection starts with a fresh one."""
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[alpn] if isinstance(alpn, str) else list(alpn),
            idle_timeout=idle_timeout,
            verify_mode=ssl.CERT_REQUIRED,
            # the name checked is the dialled host (IP -> IP SAN, DNS -> DNS SAN)
            server_name=server_name if server_name is not None else host,
        )
        config.load_verify_locations(cafile=cafile)
        if identity is not None:
            config.load_cert_chain(identity.pem_file())
        if certificate is not None:
            config.certificate = certificate
        if private_key is not None:
            config.private_key = private_key
        if session_ticket is not None:
            config.session_ticket = session_ticket
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        connection = _Connection(configuration=config, session_ticket_handler=on_session_ticket)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(("::", 0, 0, 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _ChatProtocol(connection), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        protocol.connect(addr)
        try:
            await protocol.wait_connected()
        except ConnectionError:
            transport.close()
            info = protocol.closed.result() if protocol.closed.done() else CloseInfo(
                False, False, -1, "handshake failed"
            )
            raise ConnectionClosed(info) from None
        except BaseException:
            transport.close()
            raise
        return cls(protocol, transport, dedup)

    @property
    def alpn(self) -> Optional[str]:
        return self._protocol.alpn

    @property
    def version(self) -> int:
        """The protocol version the negotiated ALPN names."""
        return ALPN_VERSIONS.get(self._protocol.alpn, 1)

    @property
    def certificate_request(self):
        """The TLS CertificateRequest the server sent in this handshake (an
        aioquic CertificateRequest: signature_algorithms, other_extensions), or None."""
        return getattr(self._protocol._quic.tls, "_certificate_request", None)

    @property
    def session_resumed(self) -> bool:
        return self._protocol.session_resumed

    @property
    def early_data_accepted(self) -> bool:
        return self._protocol.early_data_accepted

    @property
    def unexpected_streams(self) -> list:
        return list(self._protocol.unexpected)

    # -- raw stream access (used by tests to send malformed input) -------------

    def open_stream(self, data: bytes, unidirectional: bool = False, end: bool = True) -> int:
        quic = self._protocol._quic
        sid = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        quic.send_stream_data(sid, data, end_stream=end)
        self._protocol.transmit()
        return sid

    async def request_raw(self, data: bytes) -> bytes:
        """Open a bidirectional stream, write `data` + FIN, read the answer to FIN."""
        quic = self._protocol._quic
        sid = quic.get_next_available_stream_id(is_unidirectional=False)
        fut = self._protocol.expect_reply(sid)
        if not fut.done():
            quic.send_stream_data(sid, data, end_stream=True)
            self._protocol.transmit()
        return await fut

    async def request(self, req: Request) -> Reply:
        return decode_reply(await self.request_raw(encode_request(req)), version=self.version)

    # -- protocol operations -------------------------------------------------

    async def hello(self, username: Union[str, bytes], protocol: Optional[int] = None) -> Reply:
        """Welcome (v1) or Session (v2), or Refused. `protocol` defaults to the
        negotiated ALPN's version, as the contract requires."""
        reply = await self.request(Hello(self.version if protocol is None else protocol, username))
        if isinstance(reply, (Welcome, Session)):
            self.username = username if isinstance(username, str) else None
        return reply

    async def send(self, to: Union[str, bytes], body: Union[str, bytes]) -> Receipt:
        reply = await self.request(Send(to, body))
        if not isinstance(reply, Receipt):
            raise DecodeError(f"expected Receipt, got {reply!r}")
        return reply

    async def devices(self, op: DeviceOp) -> Reply:
        """v2: DeviceList (the account's devices after the operation) or Failed."""
        reply = await self.request(Devices(op))
        if not isinstance(reply, (DeviceList, Failed)):
            raise DecodeError(f"expected Devices or Failed, got {reply!r}")
        return reply

    async def list_users(self) -> list:
        reply = await self.request(ListUsers())
        if not isinstance(reply, Users):
            raise DecodeError(f"expected Users, got {reply!r}")
        return reply.names

    async def next_push_raw(self) -> tuple[int, bytes]:
        """Wait for the next complete server-opened unidirectional stream."""
        get = asyncio.ensure_future(self._protocol.pushes.get())
        done, _ = await asyncio.wait(
            {get, self._protocol.closed}, return_when=asyncio.FIRST_COMPLETED
        )
        if get in done:
            return get.result()
        get.cancel()
        raise ConnectionClosed(self._protocol.closed.result())

    async def next_push(self) -> tuple[int, Push]:
        sid, data = await self.next_push_raw()
        return sid, decode_push(data, version=self.version)

    async def next_new_push(self) -> tuple[int, Push]:
        """The next push that is not a repeat (see PushDedup): what a client shows."""
        while True:
            sid, push = await self.next_push()
            if self.dedup.accept(push):
                return sid, push

    # -- closing -------------------------------------------------------------

    async def wait_closed(self) -> CloseInfo:
        """Wait until the connection is closed (by the peer or locally)."""
        return await asyncio.shield(self._protocol.closed)

    @property
    def close_info(self) -> Optional[CloseInfo]:
        c = self._protocol.closed
        return c.result() if c.done() else None

    async def close(self, code: int = BYE, reason: str = "", timeout: float = 2.0) -> None:
        """Close with an application close code (0 = BYE) and release the socket."""
        try:
            if not self._protocol.closed.done():
                self._protocol.close(error_code=code, reason_phrase=reason)
            try:
                await asyncio.wait_for(self._protocol.wait_closed(), timeout)
            except asyncio.TimeoutError:
                pass
        finally:
            self._transport.close()


# --------------------------------------------------------------------------
# Tiny interactive CLI
# --------------------------------------------------------------------------


def _split_addr(addr: str) -> tuple[str, int]:
    if addr.startswith("["):
        host, _, port = addr[1:].partition("]:")
    else:
        host, _, port = addr.rpartition(":")
    return host, int(port)


async def _cli(args) -> int:
    host, port = _split_addr(args.addr)
    identity = None
    if args.identity:
        if os.path.exists(args.identity):
            identity = Identity.load(args.identity)
        else:
            identity = Identity()
            identity.save(args.identity)
            print(f"created device key {args.identity}")
        print(f"device fingerprint {identity.fingerprint_text}")
    alpn = [ALPN_V1] if args.v1 else [ALPN_V2, ALPN_V1]
    client = await ChatClient.connect(
        host, port, args.ca, server_name=args.server_name, alpn=alpn, identity=identity
    )
    reply = await client.hello(args.username)
    if isinstance(reply, Refused):
        print(f"refused: {reply.reason.name}: {sanitize(reply.detail)}")
        await client.close()
        return 1
    if isinstance(reply, Session):
        print(
            f"connected to {sanitize(reply.server)} (protocol 2, {reply.account.name}); "
            f"{reply.online} online, {reply.queued} stored message(s) follow"
        )
    elif isinstance(reply, Welcome):
        print(f"connected to {sanitize(reply.server)}; {reply.online} online")
    else:
        await client.close(PROTOCOL_ERROR)
        print(f"unexpected reply to Hello: {reply!r}")
        return 1

    async def pushes():
        while True:
            _, p = await client.next_new_push()  # repeats are dropped
            if isinstance(p, LateReceipt):
                print(f"message {p.id}: {p.status.name}")
                continue
            stamp = time.strftime("%H:%M:%S", time.localtime(p.sent_at_ms / 1000))
            print(f"[{stamp}] {sanitize(p.from_)}: {sanitize(p.body)}")

    def show_devices(r) -> None:
        if isinstance(r, Failed):
            print(f"failed: {r.reason.name}: {sanitize(r.detail)}")
            return
        for d in r.devices:
            mark = "*" if d.current else " "
            print(f"{mark} {fingerprint_text(d.fingerprint)}  {sanitize(d.label)}")

    push_task = asyncio.ensure_future(pushes())
    loop = asyncio.get_running_loop()
    help_text = (
        "commands: send USER MESSAGE | users | devices | add-device FINGERPRINT LABEL"
        " | remove-device FINGERPRINT | EXIT"
    )
    try:
        while True:
            line_fut = loop.run_in_executor(None, sys.stdin.readline)
            done, _ = await asyncio.wait(
                {line_fut, push_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if push_task in done:
                exc = push_task.exception()
                if isinstance(exc, ConnectionClosed) and exc.info.code == SERVER_SHUTDOWN:
                    print("server is shutting down")
                elif isinstance(exc, ConnectionClosed) and exc.info.code == REPLACED:
                    print("this account connected elsewhere, or this device was removed")
                else:
                    print(f"connection closed: {exc}")
                return 0 if isinstance(exc, ConnectionClosed) else 1
            line = line_fut.result()
            if not line or line.strip() == "EXIT":
                await client.close(BYE)
                return 0
            cmd, _, rest = line.strip().partition(" ")
            if cmd == "send":
                to, _, body = rest.partition(" ")
                r = await client.send(to, body)
                print(f"message {r.id}: {r.status.name}")
            elif cmd == "users":
                print(", ".join(sanitize(n) for n in await client.list_users()))
            elif cmd == "devices":
                show_devices(await client.devices(ListDevices()))
            elif cmd in ("add-device", "remove-device"):
                fp_text, _, label = rest.partition(" ")
                try:
                    fp = parse_fingerprint(fp_text)
                except ValueError as e:
                    print(e)
                    continue
                op = AddDevice(fp, label) if cmd == "add-device" else RemoveDevice(fp)
                show_devices(await client.devices(op))
            elif cmd:
                print(help_text)
    finally:
        push_task.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description="minimal quic-chat client (protocol v2, or v1)")
    p.add_argument("--ca", required=True, help="CA certificate (PEM) to verify the server")
    p.add_argument("--server-name", default=None, help="name to verify instead of the host")
    p.add_argument(
        "--identity",
        default=None,
        help="device key and certificate (PEM); created if it does not exist. Without "
        "it you connect as a guest",
    )
    p.add_argument("--v1", action="store_true", help="offer only quic-chat/1")
    p.add_argument("addr", help="HOST:PORT")
    p.add_argument("username")
    return asyncio.run(_cli(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
