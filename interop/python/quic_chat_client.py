"""A minimal, independent quic-chat protocol-v1 client on aioquic.

Written from the wire contract (protocol-v1.md) alone: the bincode-2
"standard" encoding (varints, enums, strings, vecs, options, bools) is
implemented here by hand, not derived from the Rust code.

Library use:
    client = await ChatClient.connect("127.0.0.1", 4433, cafile="certs/ca.pem")
    reply = await client.hello("alice")          # Welcome or Refused
    receipt = await client.send("bob", "hi")     # Receipt
    names = await client.list_users()            # list[str]
    stream_id, deliver = await client.next_push()
    await client.close()                         # application close 0 (BYE)

Command line (a tiny interactive client):
    python quic_chat_client.py --ca certs/ca.pem 127.0.0.1:4433 alice
    then type: send USER MESSAGE | users | EXIT
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import ipaddress
import socket
import ssl
import sys
import time
from typing import Optional, Union

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

ALPN = "quic-chat/1"
PROTOCOL_VERSION = 1
FRAME_LIMIT = 73_728  # bytes, one frame per stream direction
BODY_LIMIT = 65_536  # bytes of UTF-8

# Application close codes (CONNECTION_CLOSE, application variant).
BYE = 0
SERVER_SHUTDOWN = 1
PROTOCOL_ERROR = 2
REFUSED = 3
TOO_SLOW = 4

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
# Protocol-v1 messages
# --------------------------------------------------------------------------


class RefuseReason(enum.IntEnum):
    NameTaken = 0
    InvalidName = 1
    UnsupportedProtocol = 2
    ServerFull = 3


class Status(enum.IntEnum):
    Delivered = 0
    NotConnected = 1
    Queued = 2
    TooLarge = 3
    RateLimited = 4
    RecipientBusy = 5
    InvalidRecipient = 6


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


Request = Union[Hello, Send, ListUsers]


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


Reply = Union[Welcome, Refused, Receipt, Users]


# Push (server -> client, server-opened unidirectional streams)
@dataclasses.dataclass
class Deliver:
    id: int
    from_: str
    sent_at_ms: int
    body: str


def encode_request(req: Request) -> bytes:
    enc = Encoder()
    if isinstance(req, Hello):
        enc.variant(0).u32(req.protocol).string(req.username)
    elif isinstance(req, Send):
        enc.variant(1).string(req.to).string(req.body)
    elif isinstance(req, ListUsers):
        enc.variant(2)
    else:
        raise TypeError(f"not a Request: {req!r}")
    return enc.bytes()


def _enum(cls, index: int, what: str):
    try:
        return cls(index)
    except ValueError:
        raise DecodeError(f"unknown {what} variant index {index}")


def decode_reply(data: bytes, strict: bool = True) -> Reply:
    """Decode exactly one Reply; trailing bytes are an error."""
    dec = Decoder(data, strict)
    tag = dec.variant()
    if tag == 0:
        reply: Reply = Welcome(server=dec.string(), online=dec.u32())
    elif tag == 1:
        reply = Refused(
            reason=_enum(RefuseReason, dec.variant(), "RefuseReason"),
            detail=dec.string(),
        )
    elif tag == 2:
        reply = Receipt(id=dec.u64(), status=_enum(Status, dec.variant(), "Status"))
    elif tag == 3:
        reply = Users(names=dec.vec(lambda d: d.string()))
    else:
        raise DecodeError(f"unknown Reply variant index {tag}")
    dec.finish()
    return reply


def decode_push(data: bytes, strict: bool = True) -> Deliver:
    """Decode exactly one Push; trailing bytes are an error."""
    dec = Decoder(data, strict)
    tag = dec.variant()
    if tag != 0:
        raise DecodeError(f"unknown Push variant index {tag}")
    push = Deliver(id=dec.u64(), from_=dec.string(), sent_at_ms=dec.u64(), body=dec.string())
    dec.finish()
    return push


def decode_request(data: bytes, strict: bool = True) -> Request:
    """Provided for symmetry and self-tests."""
    dec = Decoder(data, strict)
    tag = dec.variant()
    if tag == 0:
        req: Request = Hello(protocol=dec.u32(), username=dec.string())
    elif tag == 1:
        req = Send(to=dec.string(), body=dec.string())
    elif tag == 2:
        req = ListUsers()
    else:
        raise DecodeError(f"unknown Request variant index {tag}")
    dec.finish()
    return req


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
    def __init__(self, protocol: _ChatProtocol, transport) -> None:
        self._protocol = protocol
        self._transport = transport
        self.username: Optional[str] = None

    # -- connecting ---------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        cafile: str,
        server_name: Optional[str] = None,
        alpn: str = ALPN,
        idle_timeout: float = 30.0,
    ) -> "ChatClient":
        """Handshake with the server; raises ConnectionClosed if it fails."""
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[alpn],
            idle_timeout=idle_timeout,
            verify_mode=ssl.CERT_REQUIRED,
            # the name checked is the dialled host (IP -> IP SAN, DNS -> DNS SAN)
            server_name=server_name if server_name is not None else host,
        )
        config.load_verify_locations(cafile=cafile)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        connection = _Connection(configuration=config)
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
        return cls(protocol, transport)

    @property
    def alpn(self) -> Optional[str]:
        return self._protocol.alpn

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
        return decode_reply(await self.request_raw(encode_request(req)))

    # -- protocol operations -------------------------------------------------

    async def hello(self, username: Union[str, bytes], protocol: int = PROTOCOL_VERSION) -> Reply:
        reply = await self.request(Hello(protocol, username))
        if isinstance(reply, Welcome):
            self.username = username if isinstance(username, str) else None
        return reply

    async def send(self, to: Union[str, bytes], body: Union[str, bytes]) -> Receipt:
        reply = await self.request(Send(to, body))
        if not isinstance(reply, Receipt):
            raise DecodeError(f"expected Receipt, got {reply!r}")
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

    async def next_push(self) -> tuple[int, Deliver]:
        sid, data = await self.next_push_raw()
        return sid, decode_push(data)

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
    client = await ChatClient.connect(host, port, args.ca, server_name=args.server_name)
    reply = await client.hello(args.username)
    if not isinstance(reply, Welcome):
        print(f"refused: {reply.reason.name}: {sanitize(reply.detail)}")
        await client.close()
        return 1
    print(f"connected to {sanitize(reply.server)}; {reply.online} online")

    async def pushes():
        while True:
            _, d = await client.next_push()
            stamp = time.strftime("%H:%M:%S", time.localtime(d.sent_at_ms / 1000))
            print(f"[{stamp}] {sanitize(d.from_)}: {sanitize(d.body)}")

    push_task = asyncio.ensure_future(pushes())
    loop = asyncio.get_running_loop()
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
            elif cmd:
                print("commands: send USER MESSAGE | users | EXIT")
    finally:
        push_task.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description="minimal quic-chat protocol-v1 client")
    p.add_argument("--ca", required=True, help="CA certificate (PEM) to verify the server")
    p.add_argument("--server-name", default=None, help="name to verify instead of the host")
    p.add_argument("addr", help="HOST:PORT")
    p.add_argument("username")
    return asyncio.run(_cli(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
