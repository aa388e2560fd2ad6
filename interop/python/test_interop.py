#!/usr/bin/env python3
"""Independent interoperability checks for a quic-chat server (protocol v1 and v2).

Usage: python test_interop.py [path/to/quic-chat]      (or env QUIC_CHAT_BIN)

Every check starts its own server process
    <binary> server --port 0 --bind 127.0.0.1 --cert-dir <tmpdir> --rate-limit 0
        [--data-dir <tmpdir>/data]    only if `server --help` mentions --data-dir
        [--accounts open]             v2 checks, only if `server --help` mentions --accounts
talks to it with the hand-written client in quic_chat_client.py, stops it
with `EXIT` on stdin and requires exit status 0. Every wait is bounded by
asyncio.wait_for; nothing sleeps to wait for an event.

The v2 checks (names starting with "v2 ") run only if the server offers
quic-chat/2, which is probed once at the start; otherwise the runner prints
`SKIP v2: server does not offer quic-chat/2`. With QUIC_CHAT_EXPECT_V2=1 that
skip is a failure instead.

Prints one line per check and finishes with `N passed, M failed`; the exit
status is non-zero if any check failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quic_chat_client import (  # noqa: E402
    ALPN,
    ALPN_V1,
    ALPN_V2,
    PROTOCOL_ERROR,
    REFUSED,
    REPLACED,
    SERVER_SHUTDOWN,
    Account,
    AddDevice,
    ChatClient,
    ConnectionClosed,
    Decoder,
    DecodeError,
    DEDUP_IDS,
    Deliver,
    Device,
    DeviceList,
    Devices,
    Encoder,
    Failed,
    Failure,
    Hello,
    Identity,
    LateReceipt,
    ListDevices,
    ListUsers,
    RawCertificate,
    Receipt,
    Refused,
    RefuseReason,
    RemoveDevice,
    Send,
    Session,
    PushDedup,
    SeenIds,
    Status,
    Users,
    Welcome,
    decode_push,
    decode_reply,
    decode_request,
    encode_push,
    encode_reply,
    encode_request,
    fingerprint_of_spki,
    fingerprint_text,
    parse_fingerprint,
    spki_der_of_certificate,
)

# aioquic logs failed handshakes (expected in the negative checks) at ERROR level
logging.getLogger("quic").setLevel(logging.CRITICAL)

STEP = 10.0  # seconds: bound on any single wait for the server
CHECK_TIMEOUT = 25.0  # seconds: bound on a whole check (incl. server start/stop)
HOST = "127.0.0.1"


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


async def bounded(aw, what: str, timeout: float = STEP):
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise CheckFailed(f"timed out after {timeout:g}s waiting for {what}") from None


# --------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------


_HELP: dict = {}


def server_help(binary: str) -> str:
    """`<binary> server --help`, run once per binary (decides optional flags)."""
    if binary not in _HELP:
        try:
            out = subprocess.run(
                [binary, "server", "--help"], capture_output=True, timeout=10, text=True
            )
            _HELP[binary] = out.stdout + out.stderr
        except (OSError, subprocess.SubprocessError):
            _HELP[binary] = ""
    return _HELP[binary]


def has_flag(binary: str, flag: str) -> bool:
    return re.search(re.escape(flag) + r"(?![\w-])", server_help(binary)) is not None


class Server:
    def __init__(self, binary: str, extra_args: tuple = ()) -> None:
        self.binary = binary
        self.extra_args = list(extra_args)
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.cafile = ""
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._tmp = tempfile.mkdtemp(prefix="quic-chat-interop-")
        self._drains: list[asyncio.Task] = []
        self.returncode: int | None = None

    @property
    def data_dir(self) -> str:
        return os.path.join(self._tmp, "data")

    def _args(self) -> list:
        # a fresh data dir per server (kept across restart()), but only for a
        # binary that has the flag, so the suite still runs against v1 servers
        if has_flag(self.binary, "--data-dir"):
            return ["--data-dir", self.data_dir, *self.extra_args]
        return list(self.extra_args)

    async def restart(self, extra_args: tuple | None = None) -> None:
        """EXIT (status 0 required), then start again on the same data dir
        (optionally with other arguments). The port changes."""
        rc = await self.exit()
        expect(rc == 0, f"server exited with status {rc} before the restart, want 0")
        for t in self._drains:
            t.cancel()
        self._drains = []
        if extra_args is not None:
            self.extra_args = list(extra_args)
        self.proc, self.port, self.cafile, self.returncode = None, 0, "", None
        self.stdout.append("--- restart ---")
        self.stderr.append("--- restart ---")
        await bounded(self.start(), "server restart")

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "server", "--port", "0", "--bind", HOST,
            "--cert-dir", os.path.join(self._tmp, "certs"), "--rate-limit", "0",
            *self._args(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._drains.append(asyncio.ensure_future(self._drain(self.proc.stderr, self.stderr)))
        while not (self.port and self.cafile):
            line = await bounded(self.proc.stdout.readline(), "the server's startup lines")
            if not line:
                raise CheckFailed(
                    "server exited before announcing its address; stdout="
                    f"{self.stdout!r} stderr={self.stderr[-5:]!r}"
                )
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout.append(text)
            m = re.match(r"listening on (\S+):(\d+)$", text)
            if m:
                self.port = int(m.group(2))
            m = re.match(r"CA certificate for clients: (.+)$", text)
            if m:
                self.cafile = m.group(1)
        self._drains.append(asyncio.ensure_future(self._drain(self.proc.stdout, self.stdout)))

    @staticmethod
    async def _drain(stream, sink: list) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            sink.append(line.decode("utf-8", "replace").rstrip("\r\n"))

    async def client(self, **kw) -> ChatClient:
        return await bounded(
            ChatClient.connect(HOST, self.port, self.cafile, **kw), "the QUIC handshake"
        )

    async def registered(self, name: str) -> ChatClient:
        c = await self.client()
        reply = await bounded(c.hello(name), f"the reply to Hello({name!r})")
        expect(isinstance(reply, Welcome), f"Hello({name!r}) got {reply!r}, want Welcome")
        return c

    async def exit(self) -> int:
        """Write EXIT to stdin and wait for the process to end; returns its status."""
        if self.returncode is not None:
            return self.returncode
        try:
            self.proc.stdin.write(b"EXIT\n")
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.returncode = await bounded(self.proc.wait(), "the server to exit after EXIT")
        return self.returncode

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for t in self._drains:
            t.cancel()
        shutil.rmtree(self._tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


async def expect_close(client: ChatClient, code: int, what: str) -> None:
    info = await bounded(client.wait_closed(), f"the server to close the connection ({what})")
    expect(
        info.by_peer and info.application and info.code == code,
        f"{what}: want the server's application close code {code}, got {info.describe()}",
    )


async def expect_refused(srv: Server, username, reason: RefuseReason, protocol: int = 1) -> str:
    c = await srv.client()
    try:
        raw = await bounded(
            c.request_raw(encode_request(Hello(protocol, username))),
            f"the reply to Hello(protocol={protocol}, {username!r})",
        )
        reply = decode_reply(raw)
        expect(
            isinstance(reply, Refused) and reply.reason == reason,
            f"Hello(protocol={protocol}, {username!r}): sent "
            f"{encode_request(Hello(protocol, username)).hex()}, got {raw.hex()} = {reply!r}, "
            f"want Refused {reason.name}",
        )
        await expect_close(c, REFUSED, f"after Refused {reason.name}")
        return raw.hex()
    finally:
        await c.close()


async def expect_protocol_error(c: ChatClient, pending, what: str) -> None:
    """`pending` is an awaitable reply (or None); the server must close with 2
    and must not answer the offending stream."""
    if pending is not None:
        try:
            data = await bounded(pending, f"the server's reaction to {what}")
        except ConnectionClosed:
            pass
        else:
            raise CheckFailed(
                f"{what}: the server answered {data.hex()} instead of closing with "
                f"PROTOCOL_ERROR (2)"
            )
    await expect_close(c, PROTOCOL_ERROR, what)


async def send_and_deliver(sender: ChatClient, recipient: ChatClient, to: str, body):
    receipt_task = asyncio.ensure_future(sender.send(to, body))
    push_task = asyncio.ensure_future(recipient.next_push_raw())
    try:
        receipt = await bounded(receipt_task, "the Receipt")
        sid, raw = await bounded(push_task, "the Deliver push")
    finally:
        receipt_task.cancel()
        push_task.cancel()
    return receipt, sid, raw, decode_push(raw)


# --------------------------------------------------------------------------
# Checks. Each gets a fresh server; returns an optional detail string.
# --------------------------------------------------------------------------

CHECKS: list = []


def check(name: str, server_args: tuple = (), v2: bool = False):
    """Register a check. `v2=True`: it needs a server that offers quic-chat/2,
    and its name must start with "v2 "."""

    def deco(fn):
        assert name.startswith("v2 ") == v2, name
        CHECKS.append((name, server_args, fn, v2))
        return fn

    return deco


@check("codec: hand-written bincode-2 standard encoding self-test")
async def _codec(srv: Server):
    # independent of the server: pin the encoding rules of the contract
    def v(n):
        return Encoder().u64(n).bytes()

    expect(v(0) == b"\x00" and v(250) == b"\xfa", "1-byte varints")
    expect(v(251) == b"\xfb\xfb\x00" and v(65535) == b"\xfb\xff\xff", "u16 varints")
    expect(v(65536) == b"\xfc\x00\x00\x01\x00", "u32 varints")
    expect(v(1 << 32) == b"\xfd\x00\x00\x00\x00\x01\x00\x00\x00", "u64 varints")
    expect(encode_request(Hello(1, "alice")) == b"\x00\x01\x05alice", "Hello")
    expect(encode_request(Send("bob", "hi")) == b"\x01\x03bob\x02hi", "Send")
    expect(encode_request(ListUsers()) == b"\x02", "ListUsers")
    expect(Encoder().option(None, None).bytes() == b"\x00", "Option None")
    expect(Encoder().option(7, lambda e, x: e.u32(x)).bytes() == b"\x01\x07", "Option Some")
    expect(Encoder().bool(True).bool(False).bytes() == b"\x01\x00", "bool")
    expect(
        decode_reply(b"\x03\x02\x01a\x01B") == Users(["a", "B"]), "Vec<String> decode"
    )
    expect(decode_reply(b"\x02\xfb\x00\x01\x03") == Receipt(256, Status.TooLarge), "Receipt")
    for bad, why in [
        (b"\x00\x01a\x01\x00", "trailing byte"),
        (b"\x00\x05ab", "truncated string"),
        (b"\x02\xfb\x05\x00\x00", "non-shortest varint"),
        (b"\x00\x01a\xfd\x00\x00\x00\x00\x01\x00\x00\x00", "u32 out of range"),
        (b"\x09", "unknown variant"),
        (b"\x00\x02\xc3\x28\x01", "invalid UTF-8"),
    ]:
        try:
            decode_reply(bad)
        except ValueError:
            continue
        raise CheckFailed(f"decoder accepted {bad.hex()} ({why})")
    expect(decode_request(b"\x01\x03bob\x02hi") == Send("bob", "hi"), "request roundtrip")


@check("hello: Welcome with online count, exact bytes, ALPN quic-chat/1")
async def _welcome(srv: Server):
    details = []
    clients = []
    try:
        for i, name in enumerate(["alice", "bob", "Carol"], start=1):
            c = await srv.client()
            clients.append(c)
            expect(c.alpn == ALPN, f"negotiated ALPN {c.alpn!r}, want {ALPN!r}")
            raw = await bounded(c.request_raw(encode_request(Hello(1, name))), "Welcome")
            w = decode_reply(raw)  # strict: shortest varints, valid UTF-8, no trailing bytes
            expect(isinstance(w, Welcome), f"Hello({name!r}) got {w!r} ({raw.hex()})")
            expect(w.online == i, f"Welcome.online for user #{i} is {w.online}, want {i}")
            expect(w.server != "", "Welcome.server is empty")
            # the exact byte layout: variant 0, server string, online varint, nothing more
            expect(
                raw == Encoder().variant(0).string(w.server).u32(i).bytes(),
                f"Welcome bytes {raw.hex()} are not the canonical encoding",
            )
            details.append(f"{name}: {raw.hex()}")
        expect(not any(c.unexpected_streams for c in clients), "unexpected server streams")
    finally:
        for c in clients:
            await c.close()
    return f"server={w.server!r}; " + details[0]


@check("hello: NameTaken for the same name in other letter case, then close 3")
async def _name_taken(srv: Server):
    alice = await srv.registered("alice")
    try:
        hexes = [await expect_refused(srv, n, RefuseReason.NameTaken) for n in ("ALICE", "aLiCe", "alice")]
        names = await bounded(alice.list_users(), "Users")
        expect(names == ["alice"], f"after refusals ListUsers is {names!r}, want ['alice']")
    finally:
        await alice.close()
    return f"Refused bytes {hexes[0]}"


@check("hello: InvalidName (space/!, empty, 33 chars, non-ASCII, invalid chars), then close 3")
async def _invalid_name(srv: Server):
    for name in ["bad name!", "", "a" * 33, "\u00e9mile", "a/b", "a@b", "tab\t"]:
        await expect_refused(srv, name, RefuseReason.InvalidName)


@check("hello: boundary-valid names accepted (32 chars, A-Z a-z 0-9 _ . -, 1 char)")
async def _valid_names(srv: Server):
    clients = []
    try:
        for name in ["a" * 32, "Az09_.-", "x", "-", "."]:
            clients.append(await srv.registered(name))
        names = await bounded(clients[0].list_users(), "Users")
        expect(
            sorted(names) == sorted(["a" * 32, "Az09_.-", "x", "-", "."]),
            f"ListUsers {names!r} does not show the names as registered",
        )
    finally:
        for c in clients:
            await c.close()


@check("hello: UnsupportedProtocol for protocol 2 (and 0), then close 3")
async def _unsupported(srv: Server):
    h = await expect_refused(srv, "alice", RefuseReason.UnsupportedProtocol, protocol=2)
    await expect_refused(srv, "alice", RefuseReason.UnsupportedProtocol, protocol=0)
    return f"Refused bytes {h}"


@check("send: alice->bob Deliver on server uni stream, from stamped, ids match, Delivered")
async def _send(srv: Server):
    alice = await srv.registered("alice")
    bob = await srv.registered("bob")
    try:
        before = int(time.time() * 1000)
        receipt, sid, raw, d = await send_and_deliver(alice, bob, "bob", "hello, bob \u2603")
        after = int(time.time() * 1000)
        expect(sid & 0x3 == 0x3, f"Deliver arrived on stream {sid}, not a server-opened uni stream")
        expect(receipt.status == Status.Delivered, f"Receipt {receipt!r}, want Delivered")
        expect(d.from_ == "alice", f"Deliver.from is {d.from_!r}, want 'alice'")
        expect(d.id == receipt.id, f"Deliver.id {d.id} != Receipt.id {receipt.id}")
        expect(d.body == "hello, bob \u2603", f"Deliver.body is {d.body!r}")
        expect(
            before - 60_000 <= d.sent_at_ms <= after + 60_000,
            f"sent_at_ms {d.sent_at_ms} is not near the local clock {before}",
        )
        # a second message gets a fresh id; the reverse direction stamps "bob"
        r2, _, _, d2 = await send_and_deliver(bob, alice, "alice", "hi alice")
        expect(r2.status == Status.Delivered and d2.id == r2.id, f"{r2!r} / {d2!r}")
        expect(r2.id != receipt.id, f"two Sends got the same id {r2.id}")
        expect(d2.from_ == "bob", f"Deliver.from is {d2.from_!r}, want 'bob'")
        expect(not alice.unexpected_streams and not bob.unexpected_streams, "unexpected streams")
    finally:
        await alice.close()
        await bob.close()
    return f"Deliver bytes {raw.hex()}; Receipt id {receipt.id}"


@check("send: NotConnected (1) for an unknown user")
async def _not_connected(srv: Server):
    alice = await srv.registered("alice")
    try:
        raw = await bounded(alice.request_raw(encode_request(Send("nobody", "hi"))), "Receipt")
        r = decode_reply(raw)
        expect(
            isinstance(r, Receipt) and r.status == Status.NotConnected,
            f"sent {encode_request(Send('nobody', 'hi')).hex()}, got {raw.hex()} = {r!r}",
        )
    finally:
        await alice.close()
    return f"Receipt bytes {raw.hex()}"


@check("send: InvalidRecipient (6) for 'bad name!'")
async def _invalid_recipient(srv: Server):
    alice = await srv.registered("alice")
    try:
        for to in ["bad name!", "", "a" * 33]:
            raw = await bounded(alice.request_raw(encode_request(Send(to, "hi"))), "Receipt")
            r = decode_reply(raw)
            expect(
                isinstance(r, Receipt) and r.status == Status.InvalidRecipient,
                f"Send to {to!r}: got {raw.hex()} = {r!r}, want InvalidRecipient",
            )
    finally:
        await alice.close()


@check("send: TooLarge (3) for a body over 65,536 bytes, up to a 73,728-byte frame; nothing delivered")
async def _too_large(srv: Server):
    alice = await srv.registered("alice")
    bob = await srv.registered("bob")
    # Send to "bob" with a body of 65,536 bytes or more: 1 + 4 + 5 bytes of header.
    at_frame_limit = 73_728 - 10
    try:
        for body in [
            "x" * 65_537,
            "\u00e9" * 32_768 + "a",  # bytes, not characters
            "z" * (at_frame_limit - 1),  # a 73,727-byte frame
            "z" * at_frame_limit,  # exactly the frame limit
        ]:
            frame = encode_request(Send("bob", body))
            expect(len(frame) <= 73_728, "test bug: frame over the limit")
            r = await bounded(alice.send("bob", body), "Receipt")
            expect(
                r.status == Status.TooLarge,
                f"body of {len(body.encode())} bytes ({len(body)} chars): {r!r}, want TooLarge",
            )
        # nothing was sent: bob's next delivery is the marker that follows
        receipt, _, _, d = await send_and_deliver(alice, bob, "bob", "marker")
        expect(
            d.body == "marker" and d.id == receipt.id,
            f"bob's first delivery is {d.id}/{len(d.body)} bytes, not the marker {receipt.id}",
        )
    finally:
        await alice.close()
        await bob.close()


@check("send: Delivered for exactly 65,536 bytes (ASCII and 2-byte UTF-8)")
async def _max_body(srv: Server):
    alice = await srv.registered("alice")
    bob = await srv.registered("bob")
    try:
        for body in ["y" * 65_536, "\u00e9" * 32_768]:
            receipt, _, raw, d = await send_and_deliver(alice, bob, "bob", body)
            expect(receipt.status == Status.Delivered, f"{receipt!r}, want Delivered")
            expect(d.body == body and d.id == receipt.id, "delivered body/id mismatch")
            expect(len(raw) <= 73_728, f"Deliver frame {len(raw)} bytes exceeds the frame limit")
    finally:
        await alice.close()
        await bob.close()


@check("users: ListUsers sorted by lowercased name")
async def _list_users(srv: Server):
    # raw byte order differs from lowercased order: 'Z' < '_' < 'a' but 'z' > '_'
    names = ["Zed", "_x", "alice", "Bob", "9lives", "-dash", ".dot", "mike", "ALFRED"]
    want = sorted(names, key=lambda n: n.lower())
    expect(want != sorted(names), "test bug: names do not discriminate")
    clients = []
    try:
        for n in names:
            clients.append(await srv.registered(n))
        raw = await bounded(clients[3].request_raw(encode_request(ListUsers())), "Users")
        r = decode_reply(raw)
        expect(isinstance(r, Users), f"got {r!r}")
        expect(r.names == want, f"ListUsers returned {r.names!r}, want {want!r}")
    finally:
        for c in clients:
            await c.close()
    return ", ".join(r.names)


@check("protocol error (2): garbage bytes as the Hello")
async def _garbage_hello(srv: Server):
    for garbage in [b"GET / HTTP/1.1\r\n\r\n", b"\x00\x01\x05ali", b"\xff\xff\xff\xff", b""]:
        c = await srv.client()
        try:
            await expect_protocol_error(
                c, c.request_raw(garbage), f"garbage Hello {garbage.hex() or '(empty)'}"
            )
        finally:
            await c.close()


@check("protocol error (2): a Send before Hello")
async def _send_before_hello(srv: Server):
    bob = await srv.registered("bob")
    c = await srv.client()
    try:
        frame = encode_request(Send("bob", "sneaky"))
        await expect_protocol_error(c, c.request_raw(frame), f"Send {frame.hex()} as first stream")
        # and the server did not act on it: bob's first delivery is the marker
        alice = await srv.registered("alice")
        try:
            receipt, _, _, d = await send_and_deliver(alice, bob, "bob", "marker")
            expect(d.body == "marker", f"bob received {d!r} before the marker")
        finally:
            await alice.close()
    finally:
        await c.close()
        await bob.close()


@check("protocol error (2): trailing byte after a valid Send frame")
async def _trailing_send(srv: Server):
    bob = await srv.registered("bob")
    alice = await srv.registered("alice")
    try:
        frame = encode_request(Send("bob", "hi")) + b"\x00"
        await expect_protocol_error(alice, alice.request_raw(frame), f"Send+trailing {frame.hex()}")
        carol = await srv.registered("carol")
        try:
            receipt, _, _, d = await send_and_deliver(carol, bob, "bob", "marker")
            expect(d.body == "marker", f"bob received {d!r} before the marker")
        finally:
            await carol.close()
    finally:
        await alice.close()
        await bob.close()


@check("protocol error (2): trailing byte after Hello; ListUsers with trailing byte")
async def _trailing_other(srv: Server):
    c = await srv.client()
    try:
        frame = encode_request(Hello(1, "alice")) + b"\x00"
        await expect_protocol_error(c, c.request_raw(frame), f"Hello+trailing {frame.hex()}")
    finally:
        await c.close()
    c = await srv.registered("alice")
    try:
        await expect_protocol_error(c, c.request_raw(b"\x02\x02"), "ListUsers+trailing 0202")
    finally:
        await c.close()


@check("protocol error (2): a client-opened unidirectional stream")
async def _client_uni(srv: Server):
    c = await srv.registered("alice")
    try:
        c.open_stream(encode_request(ListUsers()), unidirectional=True)
        await expect_protocol_error(c, None, "client-opened unidirectional stream")
    finally:
        await c.close()


@check("protocol error (2): a frame over 73,728 bytes")
async def _oversized(srv: Server):
    c = await srv.registered("alice")
    try:
        frame = encode_request(Send("alice", "z" * 73_728))
        await expect_protocol_error(c, c.request_raw(frame), f"Send frame of {len(frame)} bytes")
    finally:
        await c.close()


@check("protocol error (2): a second Hello on a later stream")
async def _second_hello(srv: Server):
    c = await srv.registered("alice")
    try:
        frame = encode_request(Hello(1, "bob"))
        await expect_protocol_error(c, c.request_raw(frame), f"second Hello {frame.hex()}")
    finally:
        await c.close()


@check("protocol error (2): invalid UTF-8 in a Send body")
async def _bad_utf8(srv: Server):
    c = await srv.registered("alice")
    try:
        frame = Encoder().variant(1).string("alice").string(b"\xc3\x28").bytes()
        await expect_protocol_error(c, c.request_raw(frame), f"Send {frame.hex()}")
    finally:
        await c.close()


@check("protocol error (2): no Hello in time (server run with --hello-timeout 1)",
       server_args=("--hello-timeout", "1"))
async def _hello_timeout(srv: Server):
    c = await srv.client()
    try:
        await expect_close(c, PROTOCOL_ERROR, "no Hello within the hello timeout")
    finally:
        await c.close()
    return c.close_info.describe()


@check("transport: other ALPN refused with TLS no_application_protocol")
async def _alpn(srv: Server):
    try:
        c = await srv.client(alpn="h3")
    except ConnectionClosed as e:
        # CRYPTO_ERROR range 0x100 + TLS alert 120 (no_application_protocol)
        expect(
            not e.info.application and e.info.code == 0x100 + 120,
            f"handshake with ALPN h3 ended with {e.info.describe()}, want transport 0x178",
        )
        return e.info.describe()
    await c.close()
    raise CheckFailed("the server accepted ALPN h3")


@check("transport: client verifies the server certificate (IP SAN, DNS SAN 'localhost', wrong name rejected)")
async def _verify(srv: Server):
    c = await srv.client()  # checks 127.0.0.1 against IP SANs with the CA file
    await c.close()
    c = await srv.client(server_name="localhost")  # a DNS name against DNS SANs
    await c.close()
    try:
        c = await srv.client(server_name="not-in-the-cert.invalid")
    except ConnectionClosed as e:
        expect(not e.info.by_peer, f"unexpected {e.info.describe()}")
        return "mismatched name rejected locally: " + e.info.reason
    await c.close()
    raise CheckFailed("certificate accepted for a name it does not carry")


@check("shutdown: EXIT closes connected clients with code 1 and exits 0")
async def _exit(srv: Server):
    alice = await srv.registered("alice")
    bob = await srv.registered("bob")
    try:
        rc_task = asyncio.ensure_future(srv.exit())
        await expect_close(alice, SERVER_SHUTDOWN, "alice on server EXIT")
        await expect_close(bob, SERVER_SHUTDOWN, "bob on server EXIT")
        rc = await bounded(rc_task, "server exit")
        expect(rc == 0, f"server exited with status {rc}, want 0")
    finally:
        await alice.close()
        await bob.close()


# --------------------------------------------------------------------------
# Protocol v2 (accounts, devices, takeover). Written from protocol-v2.md.
# --------------------------------------------------------------------------

# The server's maximum number of devices per account. The contract says "at
# least 5"; this server's documented maximum is 5.
MAX_DEVICES = int(os.environ.get("QUIC_CHAT_MAX_DEVICES", "5"))
V2_ONLY = [ALPN_V2]


def now_ms() -> int:
    return int(time.time() * 1000)


def near_now(ms: int, slack: int = 60_000) -> bool:
    return abs(ms - now_ms()) <= slack


def fps(r: DeviceList) -> list:
    return [d.fingerprint for d in r.devices]


def show(r) -> str:
    if isinstance(r, DeviceList):
        return "Devices[" + ", ".join(
            f"{fingerprint_text(d.fingerprint)[:15]}… {d.label!r}"
            f"{' current' if d.current else ''}" for d in r.devices
        ) + "]"
    return repr(r)


async def v2_hello_raw(c: ChatClient, name, protocol: int = 2) -> tuple[bytes, object]:
    frame = encode_request(Hello(protocol, name))
    raw = await bounded(c.request_raw(frame), f"the reply to Hello(protocol={protocol}, {name!r})")
    reply = decode_reply(raw, version=c.version)  # strict, v2 variants only on v2
    expect(
        raw == encode_reply(reply),
        f"reply {raw.hex()} to Hello {frame.hex()} is not the canonical encoding of {reply!r}",
    )
    return raw, reply


async def v2_session(srv: Server, name, ident, account: Account, what: str = "",
                     queued: int = 0, dedup=None):
    """Connect on quic-chat/2 (with `ident` as the client certificate, or as a
    guest if None), say Hello(2, name) and require Session{account} with
    `queued` stored messages (0 unless told). `dedup`: the PushDedup of this
    user's earlier connections."""
    c = await srv.client(alpn=V2_ONLY, identity=ident, dedup=dedup)
    try:
        expect(c.alpn == ALPN_V2, f"negotiated ALPN {c.alpn!r}, want {ALPN_V2!r}")
        raw, r = await v2_hello_raw(c, name)
        who = "a guest (no certificate)" if ident is None else f"key {ident.fingerprint_text}"
        expect(
            isinstance(r, Session) and r.account == account,
            f"{what + ': ' if what else ''}Hello(2, {name!r}) from {who}: got {raw.hex()} "
            f"= {r!r}, want Session{{account: {account.name}}}",
        )
        expect(r.queued == queued,
               f"{what + ': ' if what else ''}Session.queued is {r.queued}, want {queued}"
               + (" (nothing was stored)" if queued == 0 else ""))
        expect(r.server != "", "Session.server is empty")
        return c, r
    except BaseException:
        await c.close()
        raise


async def v2_refused(srv: Server, name, ident, reason: RefuseReason, protocol: int = 2,
                     alpn=V2_ONLY, what: str = "") -> Refused:
    """Hello must get Refused{reason}, then the server closes with code 3."""
    c = await srv.client(alpn=alpn, identity=ident)
    try:
        raw, r = await v2_hello_raw(c, name, protocol)
        who = "a guest (no certificate)" if ident is None else f"key {ident.fingerprint_text}"
        expect(
            isinstance(r, Refused) and r.reason == reason,
            f"{what + ': ' if what else ''}Hello(protocol={protocol}, {name!r}) on {c.alpn} "
            f"from {who}: got {raw.hex()} = {r!r}, want Refused{{{reason.name}}}",
        )
        await expect_close(c, REFUSED, f"after Refused {reason.name}")
        return r
    finally:
        await c.close()


async def wait_gone(srv: Server, name: str, timeout: float = 5.0) -> None:
    """After a guest closed its connection, wait (bounded) until the server
    no longer lists its name: the server learns of the close asynchronously,
    and a Hello for the name that arrives first is rightly NameTaken. Polls
    ListUsers from a watcher guest."""
    w = await srv.client(alpn=V2_ONLY)
    try:
        _, r = await v2_hello_raw(w, f"watcher{os.getpid() % 1000}x{int(time.time() * 1000) % 10**6}")
        expect(isinstance(r, Session), f"the watcher's Hello got {r!r}")
        deadline = time.monotonic() + timeout
        while name.lower() in [n.lower() for n in await bounded(w.list_users(), "Users")]:
            if time.monotonic() > deadline:
                raise CheckFailed(f"{name!r} is still listed {timeout:g}s after its connection closed")
            await asyncio.sleep(0.02)
    finally:
        await w.close()


async def dev_ok(c: ChatClient, op, what: str) -> DeviceList:
    frame = encode_request(Devices(op))
    raw = await bounded(c.request_raw(frame), f"the reply to {what}")
    r = decode_reply(raw, version=c.version)
    expect(isinstance(r, DeviceList), f"{what}: sent {frame.hex()}, got {raw.hex()} = {r!r}, "
                                      f"want Devices")
    expect(raw == encode_reply(r), f"{what}: reply {raw.hex()} is not canonical")
    for d in r.devices:
        expect(len(d.fingerprint) == 32, f"{what}: a device fingerprint of {len(d.fingerprint)} bytes")
    expect(sum(d.current for d in r.devices) <= 1, f"{what}: more than one device is current")
    return r


async def dev_failed(c: ChatClient, op, reason: Failure, what: str) -> Failed:
    frame = encode_request(Devices(op))
    raw = await bounded(c.request_raw(frame), f"the reply to {what}")
    r = decode_reply(raw, version=c.version)
    expect(
        isinstance(r, Failed) and r.reason == reason,
        f"{what}: sent {frame.hex()}, got {raw.hex()} = {show(r)}, want Failed{{{reason.name}}}",
    )
    expect(raw == encode_reply(r), f"{what}: reply {raw.hex()} is not canonical")
    return r


async def expect_handshake_failure(srv: Server, what: str, **kw) -> str:
    """The handshake must fail with a TLS alert from the server (a transport
    CONNECTION_CLOSE with a CRYPTO_ERROR code 0x100..0x1ff). A TLS 1.3 client
    sends its certificate after it has the server's Finished, so aioquic may
    report the handshake complete before the server has judged the
    certificate: then the Hello must get no answer."""
    try:
        c = await srv.client(alpn=V2_ONLY, **kw)
    except ConnectionClosed as e:
        info = e.info
    else:
        try:
            raw = await bounded(c.request_raw(encode_request(Hello(2, "mallory"))),
                                f"the server's reaction to {what}")
            raise CheckFailed(f"{what}: the handshake succeeded and Hello got {raw.hex()}")
        except ConnectionClosed as e:
            info = e.info
        finally:
            await c.close()
    expect(
        info.by_peer and not info.application and 0x100 <= info.code <= 0x1FF,
        f"{what}: want the server to fail the handshake with a TLS alert (transport "
        f"CRYPTO_ERROR 0x100..0x1ff), got {info.describe()}",
    )
    return f"{what}: {info.describe()} (TLS alert {info.code - 0x100})"


@check("codec v2: golden bytes of the new frames, the contract's examples, fingerprints")
async def _codec_v2(srv: Server):
    # server-independent (runs against v1 servers too)
    h = bytes.fromhex
    fp = bytes(range(32))
    expect(encode_request(Devices(ListDevices())) == h("0300"), "contract example Devices(List)")
    expect(
        encode_reply(Session("s", 1, Account.Returning, 0)) == h("040173010200"),
        "contract example Session{server:'s',online:1,account:Returning,queued:0}",
    )
    golden_requests = [
        (Hello(2, "alice"), "0002" "05616c696365"),
        (Devices(ListDevices()), "0300"),
        (Devices(AddDevice(fp, "phone")), "0301" "20" + fp.hex() + "05" "70686f6e65"),
        (Devices(RemoveDevice(fp)), "0302" "20" + fp.hex()),
    ]
    dev = Device(fp, "first device", 1_700_000_000_000, 0, True)
    golden_replies = [
        (Session("s", 1, Account.Returning, 0), "040173010200"),
        (Session("s", 300, Account.Registered, 70_000), "040173" "fb2c01" "01" "fc70110100"),
        (Session("", 2, Account.Guest, 0), "0400020000"),
        (DeviceList([]), "0500"),
        (DeviceList([dev]), "0501" "20" + fp.hex() + "0c" + b"first device".hex()
         + "fd0068e5cf8b010000" "00" "01"),
        (Failed(Failure.NotRegistered, ""), "060000"),
        (Failed(Failure.TooMany, "x"), "06010178"),
        (Failed(Failure.Invalid, ""), "060500"),
        (Refused(RefuseReason.KeyMismatch, ""), "010400"),
        (Refused(RefuseReason.AccountRequired, "a"), "01050161"),
        (Receipt(7, Status.Queued), "020702"),
    ]
    golden_pushes = [
        (LateReceipt(7, Status.Delivered), "010700"),
        (LateReceipt(300, Status.Expired), "01fb2c0107"),
    ]
    for value, hx in golden_requests:
        expect(encode_request(value) == h(hx), f"{value!r}: {encode_request(value).hex()} != {hx}")
        expect(decode_request(h(hx)) == value, f"decode {hx}")
    for value, hx in golden_replies:
        expect(encode_reply(value) == h(hx), f"{value!r}: {encode_reply(value).hex()} != {hx}")
        expect(decode_reply(h(hx)) == value, f"decode {hx}")
    for value, hx in golden_pushes:
        expect(encode_push(value) == h(hx), f"{value!r}: {encode_push(value).hex()} != {hx}")
        expect(decode_push(h(hx)) == value, f"decode {hx}")
    # every v1 frame keeps its bytes: a v1 and a v2 decoder agree on them
    for hx in ["000f717569632d6368617420302e312e3002", "010017" + b"the name alice is taken".hex(),
               "02fb2c0100", "0302" "05616c696365" "03626f62"]:
        expect(decode_reply(h(hx), version=1) == decode_reply(h(hx), version=2), f"v1 frame {hx}")
    # on a quic-chat/1 connection the v2 variants are as malformed as in v1
    for bad, fn in [("0300", decode_request), ("040173010200", decode_reply), ("0500", decode_reply),
                    ("060000", decode_reply), ("010400", decode_reply), ("010500", decode_reply),
                    ("020707", decode_reply), ("010700", decode_push)]:
        try:
            fn(h(bad), version=1)
        except DecodeError:
            continue
        raise CheckFailed(f"a v1 decoder accepted the v2 frame {bad}")
    # malformed v2 frames
    for bad, fn, why in [
        ("040173010300", decode_reply, "Account 3"),
        ("060600", decode_reply, "Failure 6"),
        ("0303", decode_request, "DeviceOp 3"),
        ("010708", decode_push, "Status 8"),
        ("0501" "20" + fp.hex() + "00" "00" "00" "02", decode_reply, "bool 2"),
        ("0302" "20" + fp[:31].hex(), decode_request, "truncated fingerprint"),
        ("030000", decode_request, "trailing byte after Devices(List)"),
        ("0401730102fb0000", decode_reply, "non-shortest queued"),
    ]:
        try:
            fn(h(bad))
        except DecodeError:
            continue
        raise CheckFailed(f"decoder accepted {bad} ({why})")
    # device fingerprint: SHA-256 over the certificate's DER SubjectPublicKeyInfo
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    one = Identity(ec.derive_private_key(1, ec.SECP256R1()))  # public key = the P-256 generator
    spki = spki_der_of_certificate(one.certificate_der)
    expect(spki == one.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "the hand DER walk does not find the SubjectPublicKeyInfo")
    expect(spki[:27] == h("3059301306072a8648ce3d020106082a8648ce3d03010703420004"),
           f"P-256 SPKI header {spki[:27].hex()}")
    expect(one.fingerprint_text == "SHA256:XNJS+wzokyQ2+vjM0QQJgbie5K1rn+niorfnGqyyfNM",
           f"fingerprint of the P-256 generator key is {one.fingerprint_text}")
    expect(one.fingerprint == fingerprint_of_spki(spki) and len(one.fingerprint) == 32, "fp")
    expect(one.reissue("another name").fingerprint == one.fingerprint,
           "re-issuing a certificate for the same key changed its fingerprint")
    expect(one.reissue().certificate_der != one.certificate_der, "test bug: same certificate")
    other = Identity()
    t = other.fingerprint_text
    expect(t.startswith("SHA256:") and len(t) == 7 + 43 and "=" not in t, f"text form {t!r}")
    expect(other.fingerprint != one.fingerprint, "two keys, one fingerprint")
    expect(parse_fingerprint(t) == other.fingerprint, "text form does not round-trip")
    # the identity loads with aioquic's own loader
    from aioquic.quic.configuration import QuicConfiguration

    cfg = QuicConfiguration(is_client=True)
    cfg.load_cert_chain(other.pem_file())
    expect(cfg.certificate == other.certificate and cfg.private_key is not None,
           "load_cert_chain did not load the identity")
    return f"{one.fingerprint_text} (P-256 generator key)"


@check("v2 transport: offering quic-chat/2 and /1 (either order) gets quic-chat/2; /1 alone gets v1; "
       "CertificateRequest without CA names", v2=True)
async def _v2_alpn(srv: Server):
    got = []
    ident = Identity()
    for offer in ([ALPN_V2, ALPN_V1], [ALPN_V1, ALPN_V2], [ALPN_V2]):
        c = await srv.client(alpn=offer, identity=ident)
        try:
            expect(c.alpn == ALPN_V2, f"offered {offer}, negotiated {c.alpn!r}, want {ALPN_V2!r}")
            req = c.certificate_request
            expect(req is not None, f"offered {offer}: the server sent no CertificateRequest "
                                    "in a full handshake")
            exts = [t for t, _ in req.other_extensions]
            expect(47 not in exts, "the CertificateRequest carries certificate_authorities "
                                   "(extension 47); the contract says no CA names")
            expect(0x0403 in (req.signature_algorithms or []),
                   f"CertificateRequest signature algorithms {req.signature_algorithms} lack "
                   "ecdsa_secp256r1_sha256 (0x0403)")
            got.append(f"{'+'.join(offer)} -> {c.alpn}")
        finally:
            await c.close()
    c = await srv.client(alpn=[ALPN_V1], identity=ident)
    try:
        expect(c.alpn == ALPN_V1, f"offered quic-chat/1 only, negotiated {c.alpn!r}")
        raw, r = await v2_hello_raw(c, "alice", protocol=1)
        expect(isinstance(r, Welcome) and r.online == 1,
               f"v1 Hello on quic-chat/1 got {raw.hex()} = {r!r}, want Welcome (online 1)")
    finally:
        await c.close()
    return "; ".join(got)


@check("v2 hello: Hello.protocol must match the ALPN (1 or 3 on quic-chat/2, 2 on quic-chat/1: "
       "UnsupportedProtocol); InvalidName with a key; nothing registered by a refused Hello", v2=True)
async def _v2_protocol_mismatch(srv: Server):
    k = Identity()
    await v2_refused(srv, "alice", k, RefuseReason.UnsupportedProtocol, protocol=1)
    await v2_refused(srv, "alice", k, RefuseReason.UnsupportedProtocol, protocol=3)
    await v2_refused(srv, "alice", None, RefuseReason.UnsupportedProtocol, protocol=1)
    await v2_refused(srv, "alice", k, RefuseReason.UnsupportedProtocol, protocol=2, alpn=[ALPN_V1])
    for bad in ["bad name!", "", "a" * 33]:
        await v2_refused(srv, bad, k, RefuseReason.InvalidName)
    # the refused Hellos registered nothing: another key takes "alice", and k is
    # still free for a name of its own
    c, _ = await v2_session(srv, "alice", Identity(), Account.Registered,
                            "after refused Hellos from another key")
    await c.close()
    c, _ = await v2_session(srv, "kim", k, Account.Registered, "the refused key registers")
    await c.close()


@check("v2 accounts: registration (Session{Registered}, queued 0), then Returning with the same key "
       "(also a re-issued certificate, other letter case); name shown as first registered", v2=True)
async def _v2_register(srv: Server):
    k = Identity()
    c, s = await v2_session(srv, "Alice", k, Account.Registered, "first Hello")
    raw_registered = encode_reply(s).hex()
    try:
        expect(s.online == 1, f"Session.online {s.online}, want 1")
        names = await bounded(c.list_users(), "Users")
        expect(names == ["Alice"], f"ListUsers {names!r}, want ['Alice']")
    finally:
        await c.close()
    c, s = await v2_session(srv, "Alice", k, Account.Returning, "same key, new connection")
    await c.close()
    c, s = await v2_session(srv, "aLICE", k.reissue("other CN"), Account.Returning,
                            "a re-issued certificate for the same key, other letter case")
    try:
        expect(s.online == 1, f"Session.online {s.online}, want 1")
        names = await bounded(c.list_users(), "Users")
        expect(names == ["Alice"], f"ListUsers {names!r}, want the name as first registered")
    finally:
        await c.close()
    return f"Session bytes (Registered) {raw_registered}; Returning {encode_reply(s).hex()}"


@check("v2 accounts: KeyMismatch for no certificate and for another key (owner offline and online), "
       "then close 3", v2=True)
async def _v2_key_mismatch(srv: Server):
    k = Identity()
    c, _ = await v2_session(srv, "bob", k, Account.Registered)
    await c.close()
    r = await v2_refused(srv, "bob", None, RefuseReason.KeyMismatch, what="owner offline, no cert")
    await v2_refused(srv, "BOB", Identity(), RefuseReason.KeyMismatch, what="owner offline, other key")
    c, _ = await v2_session(srv, "bob", k, Account.Returning)
    try:
        await v2_refused(srv, "Bob", None, RefuseReason.KeyMismatch, what="owner online, no cert")
        await v2_refused(srv, "bob", Identity(), RefuseReason.KeyMismatch,
                         what="owner online, other key")
        # the owner's connection was not disturbed
        names = await bounded(c.list_users(), "Users")
        expect(names == ["bob"], f"ListUsers {names!r}, want ['bob']")
    finally:
        await c.close()
    return f"Refused bytes {encode_reply(r).hex()}"


@check("v2 accounts: one key cannot register a second name (KeyMismatch)", v2=True)
async def _v2_one_key_one_name(srv: Server):
    k = Identity()
    c, _ = await v2_session(srv, "carol", k, Account.Registered)
    await c.close()
    await v2_refused(srv, "carol2", k, RefuseReason.KeyMismatch, what="owner offline")
    c, _ = await v2_session(srv, "carol", k, Account.Returning)
    try:
        await v2_refused(srv, "dave", k, RefuseReason.KeyMismatch, what="owner online")
    finally:
        await c.close()
    # the refusals registered nothing: "dave" is free for another key
    c, _ = await v2_session(srv, "dave", Identity(), Account.Registered)
    await c.close()


@check("v2 accounts: guests (Session{Guest}, unique while connected, cannot take a registered name); "
       "v1 Hello for a registered name NameTaken; v1 ignores client certificates", v2=True)
async def _v2_guests(srv: Server):
    owner = Identity()
    c, _ = await v2_session(srv, "erin", owner, Account.Registered)
    await c.close()
    g, s = await v2_session(srv, "gus", None, Account.Guest, "no certificate")
    guest_bytes = encode_reply(s).hex()
    try:
        expect(s.online == 1, f"Session.online {s.online}, want 1")
        # a guest's name is unique among connected users, whatever the connection
        await v2_refused(srv, "GUS", None, RefuseReason.NameTaken, what="another guest")
        await v2_refused(srv, "gus", Identity(), RefuseReason.NameTaken,
                         what="a new key for a connected guest's name")
        await v2_refused(srv, "gus", owner, RefuseReason.NameTaken,
                         what="another account's key for a connected guest's name")
        await v2_refused(srv, "gus", None, RefuseReason.NameTaken, protocol=1, alpn=[ALPN_V1],
                         what="v1 Hello for a connected guest's name")
    finally:
        await g.close()
    await wait_gone(srv, "gus")
    # a guest cannot take a registered name
    await v2_refused(srv, "erin", None, RefuseReason.KeyMismatch, what="guest, registered name")
    # v1: NameTaken, with a detail that says the name is registered; the owner's
    # own key on quic-chat/1 is ignored (a guest)
    r = await v2_refused(srv, "erin", None, RefuseReason.NameTaken, protocol=1, alpn=[ALPN_V1],
                         what="v1 Hello for a registered name")
    expect("regist" in r.detail.lower(),
           f"Refused detail {r.detail!r} does not say that the name is registered")
    await v2_refused(srv, "ERIN", owner, RefuseReason.NameTaken, protocol=1, alpn=[ALPN_V1],
                     what="v1 Hello with the owner's certificate (v1 ignores it)")
    # a guest left: its name is free again, and a new key registers it
    c, _ = await v2_session(srv, "gus", Identity(), Account.Registered, "after the guest left")
    await c.close()
    # a v1 connection with a new key registers nothing
    c = await srv.client(alpn=[ALPN_V1], identity=Identity())
    try:
        _, r = await v2_hello_raw(c, "v1user", protocol=1)
        expect(isinstance(r, Welcome), f"v1 Hello got {r!r}, want Welcome")
    finally:
        await c.close()
    await wait_gone(srv, "v1user")
    c, _ = await v2_session(srv, "v1user", None, Account.Guest, "the v1 user registered nothing")
    await c.close()
    return f"Session bytes (Guest) {guest_bytes}; v1 detail {r.detail!r}" if isinstance(r, Refused) \
        else f"Session bytes (Guest) {guest_bytes}"


@check("v2 takeover: the same key again gets Returning; the older connection is closed with code 5",
       v2=True)
async def _v2_takeover(srv: Server):
    k = Identity()
    old, _ = await v2_session(srv, "tess", k, Account.Registered)
    other, _ = await v2_session(srv, "uma", Identity(), Account.Registered)
    new = None
    try:
        new, s = await v2_session(srv, "TESS", k, Account.Returning, "the same key again")
        await expect_close(old, REPLACED, "the older connection after the takeover")
        expect(s.online == 2, f"Session.online {s.online} after the takeover, want 2 "
                              "(tess once, uma): the older connection is closed first")
        names = await bounded(new.list_users(), "Users")
        expect(names == ["tess", "uma"], f"ListUsers {names!r}, want ['tess', 'uma']")
        r = await dev_ok(new, ListDevices(), "Devices(List) on the new connection")
        expect([d.current for d in r.devices] == [True], f"{show(r)}: want one current device")
        # the other account is untouched and the new connection is live
        receipt, _, _, d = await send_and_deliver(other, new, "tess", "after takeover")
        expect(receipt.status == Status.Delivered and d.from_ == "uma", f"{receipt!r} {d!r}")
        expect(new.close_info is None and other.close_info is None, "a bystander was closed")
    finally:
        await old.close()
        await other.close()
        if new is not None:
            await new.close()
    return old.close_info.describe()


@check("v2 send: live Send between an account and a guest on quic-chat/2: Delivered, from = the name "
       "as first registered", v2=True)
async def _v2_send(srv: Server):
    k = Identity()
    a, _ = await v2_session(srv, "Alice", k, Account.Registered)
    await a.close()
    a, _ = await v2_session(srv, "ALICE", k, Account.Returning)
    g, _ = await v2_session(srv, "bob", None, Account.Guest)
    try:
        receipt, sid, raw, d = await send_and_deliver(a, g, "BOB", "hi bob")
        expect(sid & 0x3 == 0x3, f"Deliver on stream {sid}")
        expect(receipt.status == Status.Delivered and d.id == receipt.id, f"{receipt!r} {d!r}")
        expect(d.from_ == "Alice", f"Deliver.from {d.from_!r}, want 'Alice' (as first registered)")
        receipt, _, _, d = await send_and_deliver(g, a, "alice", "hi alice")
        expect(receipt.status == Status.Delivered and d.from_ == "bob", f"{receipt!r} {d!r}")
    finally:
        await a.close()
        await g.close()


@check("v2 devices: List: the first device is labelled 'first device', current, added/last seen now",
       v2=True)
async def _v2_devices_list(srv: Server):
    k = Identity()
    c, _ = await v2_session(srv, "fay", k, Account.Registered)
    try:
        r = await dev_ok(c, ListDevices(), "Devices(List)")
        expect(len(r.devices) == 1, f"{show(r)}: want exactly one device")
        d = r.devices[0]
        expect(d.fingerprint == k.fingerprint,
               f"device fingerprint {fingerprint_text(d.fingerprint)}, want {k.fingerprint_text} "
               "(SHA-256 of the certificate's SubjectPublicKeyInfo)")
        expect(d.label == "first device", f"label {d.label!r}, want 'first device'")
        expect(d.current, "the connection's own device is not marked current")
        expect(near_now(d.added_ms), f"added_ms {d.added_ms} is not near now ({now_ms()})")
        expect(near_now(d.last_seen_ms),
               f"last_seen_ms {d.last_seen_ms}: want the start of this session ({now_ms()})")
        raw = encode_reply(r).hex()
    finally:
        await c.close()
    c, _ = await v2_session(srv, "fay", k, Account.Returning)
    try:
        r2 = await dev_ok(c, ListDevices(), "Devices(List) on a returning connection")
        expect(fps(r2) == [k.fingerprint] and r2.devices[0].added_ms == d.added_ms
               and r2.devices[0].current, f"{show(r2)} after reconnecting")
        expect(r2.devices[0].last_seen_ms >= d.last_seen_ms, "last_seen_ms went backwards")
    finally:
        await c.close()
    return f"Devices bytes {raw}"


@check("v2 devices: Add binds a key; the new device signs in (Returning) and takes over (code 5)",
       v2=True)
async def _v2_devices_add(srv: Server):
    a, b = Identity(), Identity()
    ca, _ = await v2_session(srv, "gail", a, Account.Registered)
    cb = None
    try:
        r = await dev_ok(ca, AddDevice(b.fingerprint, "laptop"), "Devices(Add laptop)")
        expect(fps(r) == [a.fingerprint, b.fingerprint], f"{show(r)}: want [first, laptop] in order")
        expect([d.label for d in r.devices] == ["first device", "laptop"], show(r))
        expect([d.current for d in r.devices] == [True, False], f"{show(r)}: current flags")
        expect(r.devices[1].last_seen_ms == 0,
               f"the added device never connected, last_seen_ms {r.devices[1].last_seen_ms}, want 0")
        expect(near_now(r.devices[1].added_ms), f"added_ms {r.devices[1].added_ms}")
        add_bytes = encode_request(Devices(AddDevice(b.fingerprint, "laptop"))).hex()
        cb, s = await v2_session(srv, "GAIL", b, Account.Returning, "the added device")
        await expect_close(ca, REPLACED, "the first device's connection when the second signs in")
        expect(s.online == 1, f"Session.online {s.online}, want 1")
        r = await dev_ok(cb, ListDevices(), "Devices(List) from the second device")
        expect(fps(r) == [a.fingerprint, b.fingerprint], show(r))
        expect([d.current for d in r.devices] == [False, True], f"{show(r)}: current flags")
        expect(near_now(r.devices[1].last_seen_ms),
               f"last_seen_ms {r.devices[1].last_seen_ms} after the device signed in")
        # the added key belongs to this account: it cannot register another name
        await v2_refused(srv, "gail2", b, RefuseReason.KeyMismatch, what="the added key, other name")
    finally:
        await ca.close()
        if cb is not None:
            await cb.close()
    return f"Add bytes {add_bytes[:10]}…"


@check("v2 devices: Add of a fingerprint already on the account relabels it (order and added_ms kept)",
       v2=True)
async def _v2_devices_relabel(srv: Server):
    a, b = Identity(), Identity()
    c, _ = await v2_session(srv, "hana", a, Account.Registered)
    try:
        r1 = await dev_ok(c, AddDevice(b.fingerprint, "old"), "Devices(Add old)")
        r2 = await dev_ok(c, AddDevice(b.fingerprint, "new label"), "Devices(Add same fp, new label)")
        expect(fps(r2) == [a.fingerprint, b.fingerprint], f"{show(r2)}: relabel changed the list")
        expect([d.label for d in r2.devices] == ["first device", "new label"], show(r2))
        expect(r2.devices[1].added_ms == r1.devices[1].added_ms,
               f"relabel changed added_ms {r1.devices[1].added_ms} -> {r2.devices[1].added_ms}")
        r3 = await dev_ok(c, AddDevice(a.fingerprint, "my phone"), "Devices(Add own fp, relabel)")
        expect([d.label for d in r3.devices] == ["my phone", "new label"], show(r3))
        expect([d.current for d in r3.devices] == [True, False], show(r3))
    finally:
        await c.close()


@check(f"v2 devices: TooMany at the maximum ({MAX_DEVICES} devices); relabel at the maximum still works",
       v2=True)
async def _v2_devices_too_many(srv: Server):
    keys = [Identity() for _ in range(MAX_DEVICES + 1)]
    c, _ = await v2_session(srv, "ivy", keys[0], Account.Registered)
    try:
        for i, k in enumerate(keys[1:MAX_DEVICES], start=2):
            r = await dev_ok(c, AddDevice(k.fingerprint, f"dev{i}"), f"Devices(Add) #{i}")
            expect(len(r.devices) == i, f"after Add #{i}: {show(r)}")
        f = await dev_failed(c, AddDevice(keys[-1].fingerprint, "one too many"), Failure.TooMany,
                             f"Devices(Add) #{MAX_DEVICES + 1}")
        r = await dev_ok(c, ListDevices(), "Devices(List) after TooMany")
        expect(fps(r) == [k.fingerprint for k in keys[:MAX_DEVICES]], f"{show(r)}: changed")
        r = await dev_ok(c, AddDevice(keys[2].fingerprint, "relabelled"), "relabel at the maximum")
        expect(r.devices[2].label == "relabelled" and len(r.devices) == MAX_DEVICES, show(r))
    finally:
        await c.close()
    # the refused key was not bound: it registers a name of its own
    c2, _ = await v2_session(srv, "ivy2", keys[-1], Account.Registered, "the key refused TooMany")
    await c2.close()
    return f"Failed bytes {encode_reply(f).hex()}"


@check("v2 devices: InUse for a key of another account (both directions)", v2=True)
async def _v2_devices_in_use(srv: Server):
    x, y = Identity(), Identity()
    cx, _ = await v2_session(srv, "jack", x, Account.Registered)
    cy, _ = await v2_session(srv, "jill", y, Account.Registered)
    try:
        await dev_failed(cx, AddDevice(y.fingerprint, "not mine"), Failure.InUse, "jack adds jill's key")
        await dev_failed(cy, AddDevice(x.fingerprint, "not mine"), Failure.InUse, "jill adds jack's key")
        for c, k in [(cx, x), (cy, y)]:
            r = await dev_ok(c, ListDevices(), "Devices(List)")
            expect(fps(r) == [k.fingerprint], f"{show(r)} after InUse")
    finally:
        await cx.close()
        await cy.close()


@check("v2 devices: Invalid (fingerprint of 31/33/0 bytes, empty label, 65-byte label); 64 bytes ok",
       v2=True)
async def _v2_devices_invalid(srv: Server):
    a, b = Identity(), Identity()
    c, _ = await v2_session(srv, "kate", a, Account.Registered)
    try:
        fp = b.fingerprint
        cases = [
            (AddDevice(fp[:31], "short"), "31-byte fingerprint"),
            (AddDevice(fp + b"\x00", "long"), "33-byte fingerprint"),
            (AddDevice(b"", "none"), "empty fingerprint"),
            (AddDevice(fp, ""), "empty label"),
            (AddDevice(fp, "x" * 65), "65-byte ASCII label"),
            (AddDevice(fp, "\u00e9" * 32 + "x"), "65-byte label of 33 characters"),
            (AddDevice(a.fingerprint, ""), "relabel own device with an empty label"),
        ]
        for op, what in cases:
            f = await dev_failed(c, op, Failure.Invalid, f"Devices(Add) with {what}")
        r = await dev_ok(c, ListDevices(), "Devices(List) after Invalid")
        expect(fps(r) == [a.fingerprint] and r.devices[0].label == "first device",
               f"{show(r)} after the Invalid requests")
        r = await dev_ok(c, AddDevice(fp, "\u00e9" * 32), "Devices(Add) with a 64-byte label")
        expect(r.devices[1].label == "\u00e9" * 32, show(r))
        r = await dev_ok(c, AddDevice(fp, "y" * 64), "relabel with a 64-byte ASCII label")
        expect(r.devices[1].label == "y" * 64, show(r))
    finally:
        await c.close()
    return f"Failed bytes {encode_reply(f).hex()}"


@check("v2 devices: Remove unbinds a key (KeyMismatch for the account, free for a new name)", v2=True)
async def _v2_devices_remove(srv: Server):
    a, b, d = Identity(), Identity(), Identity()
    c, _ = await v2_session(srv, "liam", a, Account.Registered)
    try:
        await dev_ok(c, AddDevice(b.fingerprint, "tablet"), "Devices(Add tablet)")
        await dev_ok(c, AddDevice(d.fingerprint, "desktop"), "Devices(Add desktop)")
        r = await dev_ok(c, RemoveDevice(b.fingerprint), "Devices(Remove tablet)")
        expect(fps(r) == [a.fingerprint, d.fingerprint], f"{show(r)}: want [first, desktop]")
        expect([x.current for x in r.devices] == [True, False], show(r))
    finally:
        await c.close()
    await v2_refused(srv, "liam", b, RefuseReason.KeyMismatch, what="the removed key")
    c, _ = await v2_session(srv, "liam2", b, Account.Registered, "the removed key, a new name")
    await c.close()
    # remove the first device from the other one
    c, _ = await v2_session(srv, "liam", d, Account.Returning)
    try:
        r = await dev_ok(c, RemoveDevice(a.fingerprint), "Devices(Remove first device) from desktop")
        expect(fps(r) == [d.fingerprint] and r.devices[0].current, show(r))
    finally:
        await c.close()
    await v2_refused(srv, "liam", a, RefuseReason.KeyMismatch, what="the removed first device")


@check("v2 devices: UnknownDevice (a fingerprint no account has); InUse before UnknownDevice "
       "(another account's); LastDevice", v2=True)
async def _v2_devices_unknown_last(srv: Server):
    a, o = Identity(), Identity()
    co, _ = await v2_session(srv, "olga", o, Account.Registered)
    await co.close()
    c, _ = await v2_session(srv, "mia", a, Account.Registered)
    try:
        await dev_failed(c, RemoveDevice(Identity().fingerprint), Failure.UnknownDevice,
                         "Devices(Remove) of an unknown fingerprint")
        # Both InUse (2) and UnknownDevice (3) describe this Remove; the
        # contract answers the first that applies in enum order.
        await dev_failed(c, RemoveDevice(o.fingerprint), Failure.InUse,
                         "Devices(Remove) of another account's fingerprint")
        f = await dev_failed(c, RemoveDevice(a.fingerprint), Failure.LastDevice,
                             "Devices(Remove) of the only device")
        r = await dev_ok(c, ListDevices(), "Devices(List) after LastDevice")
        expect(fps(r) == [a.fingerprint], show(r))
        expect(c.close_info is None, f"closed after LastDevice: {c.close_info}")
    finally:
        await c.close()
    c, _ = await v2_session(srv, "olga", o, Account.Returning, "the other account is intact")
    await c.close()
    return f"Failed bytes {encode_reply(f).hex()}"


@check("v2 devices: removing the connection's own device: Devices reply first, then close code 5",
       v2=True)
async def _v2_devices_remove_self(srv: Server):
    a, b = Identity(), Identity()
    c, _ = await v2_session(srv, "nina", a, Account.Registered)
    try:
        await dev_ok(c, AddDevice(b.fingerprint, "spare"), "Devices(Add spare)")
        r = await dev_ok(c, RemoveDevice(a.fingerprint), "Devices(Remove own device)")
        expect(fps(r) == [b.fingerprint], f"{show(r)}: want [spare]")
        expect(not any(x.current for x in r.devices), f"{show(r)}: no device should be current")
        await expect_close(c, REPLACED, "after removing its own device")
    finally:
        await c.close()
    await v2_refused(srv, "nina", a, RefuseReason.KeyMismatch, what="the removed own key")
    c, _ = await v2_session(srv, "nina", b, Account.Returning, "the remaining device")
    await c.close()


@check("v2 devices: failure order (the first applicable reason in Failure's order wins)", v2=True)
async def _v2_failure_order(srv: Server):
    keys = [Identity() for _ in range(MAX_DEVICES)]
    other = Identity()
    co, _ = await v2_session(srv, "oscar", other, Account.Registered)
    await co.close()
    c, _ = await v2_session(srv, "pia", keys[0], Account.Registered)
    try:
        # InUse (2) before Invalid (5)
        await dev_failed(c, AddDevice(other.fingerprint, ""), Failure.InUse,
                         "Add of another account's key with an empty label")
        # UnknownDevice (3) before LastDevice (4) and Invalid (5)
        await dev_failed(c, RemoveDevice(Identity().fingerprint), Failure.UnknownDevice,
                         "Remove of an unknown fingerprint from a one-device account")
        await dev_failed(c, RemoveDevice(keys[0].fingerprint[:31]), Failure.UnknownDevice,
                         "Remove of a 31-byte fingerprint (UnknownDevice comes before Invalid)")
        for i, k in enumerate(keys[1:], start=2):
            await dev_ok(c, AddDevice(k.fingerprint, f"dev{i}"), f"Devices(Add) #{i}")
        # at the maximum: TooMany (1) before InUse (2) and Invalid (5)
        await dev_failed(c, AddDevice(other.fingerprint, "x"), Failure.TooMany,
                         "at the maximum, Add of another account's key")
        await dev_failed(c, AddDevice(Identity().fingerprint[:31], "x"), Failure.TooMany,
                         "at the maximum, Add of a 31-byte fingerprint")
        await dev_failed(c, AddDevice(Identity().fingerprint, ""), Failure.TooMany,
                         "at the maximum, Add of a new key with an empty label")
    finally:
        await c.close()


@check("v2 devices: a guest's Devices requests get Failed{NotRegistered}", v2=True)
async def _v2_devices_guest(srv: Server):
    g, _ = await v2_session(srv, "quinn", None, Account.Guest)
    try:
        f = await dev_failed(g, ListDevices(), Failure.NotRegistered, "a guest's Devices(List)")
        await dev_failed(g, AddDevice(Identity().fingerprint, "mine"), Failure.NotRegistered,
                         "a guest's Devices(Add)")
        await dev_failed(g, AddDevice(b"\x01", ""), Failure.NotRegistered,
                         "a guest's invalid Devices(Add) (NotRegistered comes first)")
        await dev_failed(g, RemoveDevice(Identity().fingerprint), Failure.NotRegistered,
                         "a guest's Devices(Remove)")
        expect(g.close_info is None, f"guest closed: {g.close_info}")
    finally:
        await g.close()
    return f"Failed bytes {encode_reply(f).hex()}"


@check("v2 protocol error (2): Devices(List) 03 00 on a quic-chat/1 connection; Devices before Hello "
       "on quic-chat/2", v2=True)
async def _v2_variant_on_v1(srv: Server):
    for ident in (None, Identity()):
        c = await srv.client(alpn=[ALPN_V1], identity=ident)
        try:
            expect(c.alpn == ALPN_V1, f"negotiated {c.alpn!r}")
            _, r = await v2_hello_raw(c, "alice", protocol=1)
            expect(isinstance(r, Welcome), f"v1 Hello got {r!r}")
            await expect_protocol_error(c, c.request_raw(bytes.fromhex("0300")),
                                        "Request variant 3 (03 00) on quic-chat/1")
        finally:
            await c.close()
    c = await srv.client(alpn=V2_ONLY, identity=Identity())
    try:
        await expect_protocol_error(c, c.request_raw(bytes.fromhex("0300")),
                                    "Devices(List) before the Hello on quic-chat/2")
    finally:
        await c.close()
    c, _ = await v2_session(srv, "rita", Identity(), Account.Registered)
    try:
        await expect_protocol_error(c, c.request_raw(bytes.fromhex("0303")),
                                    "DeviceOp variant 3 (03 03) on quic-chat/2")
    finally:
        await c.close()


@check("v2 transport: a client certificate that does not parse fails the handshake", v2=True)
async def _v2_garbage_cert(srv: Server):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    out = [await expect_handshake_failure(
        srv, f"a {len(junk)}-byte non-certificate", certificate=RawCertificate(junk), private_key=key)
        for junk in (b"\x30\x03\x02\x01\x00", b"not a certificate at all")]
    # and the server is fine afterwards
    c, _ = await v2_session(srv, "sam", Identity(), Account.Registered)
    await c.close()
    return "; ".join(out)


@check("v2 transport: a CertificateVerify signed by another key fails the handshake", v2=True)
async def _v2_wrong_signer(srv: Server):
    owner, thief = Identity(), Identity()
    c, _ = await v2_session(srv, "tina", owner, Account.Registered)
    await c.close()
    out = await expect_handshake_failure(
        srv, "tina's certificate with a signature by another key",
        certificate=owner.certificate, private_key=thief.private_key)
    c, _ = await v2_session(srv, "tina", owner, Account.Returning, "the real owner afterwards")
    await c.close()
    return out


@check("v2 accounts: registrations and devices survive a server restart (same --data-dir)", v2=True)
async def _v2_restart(srv: Server):
    a, b = Identity(), Identity()
    c, _ = await v2_session(srv, "uri", a, Account.Registered)
    try:
        before = await dev_ok(c, AddDevice(b.fingerprint, "kept"), "Devices(Add kept)")
    finally:
        await c.close()
    await srv.restart()
    c, _ = await v2_session(srv, "URI", b, Account.Returning, "the added device after a restart")
    try:
        r = await dev_ok(c, ListDevices(), "Devices(List) after the restart")
        expect(fps(r) == fps(before) and [d.label for d in r.devices] == ["first device", "kept"]
               and [d.added_ms for d in r.devices] == [d.added_ms for d in before.devices],
               f"after the restart {show(r)}, before {show(before)}")
        names = await bounded(c.list_users(), "Users")
        expect(names == ["uri"], f"ListUsers {names!r}: the name as first registered")
    finally:
        await c.close()
    await v2_refused(srv, "uri", Identity(), RefuseReason.KeyMismatch, what="another key after restart")
    await v2_refused(srv, "uri", None, RefuseReason.NameTaken, protocol=1, alpn=[ALPN_V1],
                     what="v1 Hello after restart")


@check("v2 accounts closed: a new key gets AccountRequired; an existing account is Returning; "
       "guests consistent with v1", v2=True)
async def _v2_closed(srv: Server):
    expect(has_flag(srv.binary, "--accounts"), "`server --help` does not mention --accounts")
    a = Identity()
    c, _ = await v2_session(srv, "vera", a, Account.Registered, "registered while open")
    await c.close()
    await srv.restart(("--accounts", "closed"))
    r = await v2_refused(srv, "walt", Identity(), RefuseReason.AccountRequired,
                         what="a new key for a free name, registration closed")
    c, _ = await v2_session(srv, "vera", a, Account.Returning, "an existing account, closed")
    try:
        await dev_ok(c, ListDevices(), "Devices(List) with registration closed")
    finally:
        await c.close()
    await v2_refused(srv, "vera", Identity(), RefuseReason.KeyMismatch, what="another key, closed")
    # guests: either admitted (Session{Guest}, v1 Hello Welcome) or the server
    # admits registered accounts only (v2 guest AccountRequired, v1 UnsupportedProtocol)
    g = await srv.client(alpn=V2_ONLY)
    try:
        raw, gr = await v2_hello_raw(g, "xena")
    finally:
        await g.close()
    v1 = await srv.client(alpn=[ALPN_V1])
    try:
        raw1, r1 = await v2_hello_raw(v1, "yuri", protocol=1)
    finally:
        await v1.close()
    if isinstance(gr, Session) and gr.account == Account.Guest:
        expect(isinstance(r1, Welcome), f"guests are admitted on v2, but a v1 Hello got {r1!r}")
        mode = "guests admitted"
    else:
        expect(isinstance(gr, Refused) and gr.reason == RefuseReason.AccountRequired,
               f"a v2 guest got {raw.hex()} = {gr!r}, want Session{{Guest}} or "
               "Refused{AccountRequired}")
        expect(isinstance(r1, Refused) and r1.reason == RefuseReason.UnsupportedProtocol,
               f"the server admits registered accounts only, but a v1 Hello got {raw1.hex()} = "
               f"{r1!r}, want Refused{{UnsupportedProtocol}}")
        expect("2" in r1.detail, f"v1 refusal detail {r1.detail!r} does not mention protocol 2")
        mode = "registered accounts only"
    return f"{mode}; AccountRequired bytes {encode_reply(r).hex()}"


@check("v2 accounts off: certificates ignored, every user a guest, Devices NotRegistered",
       server_args=("--accounts", "off"), v2=True)
async def _v2_off(srv: Server):
    expect(has_flag(srv.binary, "--accounts"), "`server --help` does not mention --accounts")
    k = Identity()
    c, _ = await v2_session(srv, "zed", k, Account.Guest, "a key on a server with accounts off")
    try:
        await dev_failed(c, ListDevices(), Failure.NotRegistered, "Devices(List), accounts off")
        await v2_refused(srv, "zed", Identity(), RefuseReason.NameTaken, what="connected guest's name")
    finally:
        await c.close()
    # nothing was registered: another key, and no key, take the name as guests
    await wait_gone(srv, "zed")
    c, _ = await v2_session(srv, "zed", Identity(), Account.Guest, "another key after zed left")
    await c.close()
    await wait_gone(srv, "zed")
    c, _ = await v2_session(srv, "zed", None, Account.Guest, "no key after zed left")
    await c.close()


@check("v2 transport: a resumed session keeps the identity of its full handshake; no 0-RTT", v2=True)
async def _v2_resumption(srv: Server):
    a, b = Identity(), Identity()
    tickets: list = []
    got = asyncio.Event()

    def keep(ticket):
        tickets.append(ticket)
        got.set()

    c, _ = await v2_session(srv, "xavi", a, Account.Registered)
    try:
        # a full handshake with a's key, collecting its session tickets
        c2 = await srv.client(alpn=V2_ONLY, identity=a, on_session_ticket=keep)
        await c.close()
        try:
            _, r = await v2_hello_raw(c2, "xavi")
            expect(isinstance(r, Session) and r.account == Account.Returning, f"{r!r}")
            try:
                await asyncio.wait_for(got.wait(), 2.0)
            except asyncio.TimeoutError:
                return "the server issues no session tickets: nothing to resume (allowed)"
            # bind b while a is still bound
            await dev_ok(c2, AddDevice(b.fingerprint, "b"), "Devices(Add b)")
        finally:
            await c2.close()
    finally:
        await c.close()
    for t in tickets:
        expect(not t.max_early_data_size,
               f"a session ticket allows {t.max_early_data_size} bytes of 0-RTT data; the contract "
               "says the server accepts no 0-RTT data")
    # resume with no certificate configured: if resumed, the identity is a's
    r1 = await srv.client(alpn=V2_ONLY, session_ticket=tickets.pop(0))
    try:
        resumed = r1.session_resumed
        _, r = await v2_hello_raw(r1, "xavi")
        want = (Session, Account.Returning) if resumed else (Refused, RefuseReason.KeyMismatch)
        got_kind = (type(r), getattr(r, "account", getattr(r, "reason", None)))
        how = "resumed" if resumed else "not resumed (a full handshake without a certificate)"
        expect(got_kind == want,
               f"{how}: Hello got {r!r}, want {want[0].__name__}{{{want[1].name}}}")
        expect(not r1.early_data_accepted, "the server accepted 0-RTT data")
    finally:
        await r1.close()
    if not resumed:
        return "the server declined to resume (allowed): full handshakes only"
    # unbind a from b, then resume a's session again: refused
    cb, _ = await v2_session(srv, "xavi", b, Account.Returning)
    try:
        await dev_ok(cb, RemoveDevice(a.fingerprint), "Devices(Remove a)")
    finally:
        await cb.close()
    if not tickets:
        return "resumed with a's identity; no second ticket to test the unbound key"
    r2 = await srv.client(alpn=V2_ONLY, session_ticket=tickets.pop(0))
    try:
        _, r = await v2_hello_raw(r2, "xavi")
        expect(isinstance(r, Refused) and r.reason == RefuseReason.KeyMismatch,
               f"{'resumed' if r2.session_resumed else 'full handshake'} session of the unbound key: "
               f"Hello got {r!r}, want Refused{{KeyMismatch}}")
    finally:
        await r2.close()
    return "resumed sessions carried a's identity, and were refused once a was unbound"


# --------------------------------------------------------------------------
# Protocol v2: store and forward (protocol-v2.md "Store and forward",
# Push::Receipt, Session.queued). Written from the contract text.
#
# The building blocks below are meant to be reused by later checks:
#   send_all        sequential Sends with the wanted statuses, timed (so the
#                   order of acceptance is the order of sending)
#   offline_pair    registers a sender and a recipient and leaves the recipient offline
#   take_pushes     exactly n pushes, in stream-ID order (the order to present)
#   expect_drained  the Delivers are the stored messages: ids, from, bodies, times, order
#   late_receipts   Push::Receipt{id, status} once for each id (Delivered or Expired)
#   expect_next_is  a later marker is the next push: nothing arrived twice
# --------------------------------------------------------------------------

# sent_at_ms is the server's clock (Unix ms) and ours is the same machine's:
# allow only rounding and a little skew between the two readings
CLOCK_SLACK_MS = 50
# A marker sent to a recipient soon after its Session (while its backlog may
# still be draining, which on this server includes the moments after a
# Session with queued 0, and until every drained stream is acknowledged) may
# be stored behind the backlog and answered Queued; it must still be the
# recipient's next push on this connection.
WHILE_DRAINING = (Status.Delivered, Status.Queued)


@dataclasses.dataclass
class Sent:
    body: str
    receipt: Receipt
    t0: int  # Unix ms just before the Send
    t1: int  # Unix ms just after its Receipt


async def send_all(c: ChatClient, to: str, bodies, want, what: str = "") -> list:
    """Send `bodies` to `to` one after the other (each Receipt awaited before
    the next Send), so the server accepts them in this order. Every Receipt
    must be the canonical encoding and have a status in `want`."""
    want = {want} if isinstance(want, Status) else set(want)
    out = []
    for body in bodies:
        frame = encode_request(Send(to, body))
        t0 = now_ms()
        raw = await bounded(c.request_raw(frame), f"the Receipt for the Send of {body[:20]!r}")
        t1 = now_ms()
        r = decode_reply(raw, version=c.version)
        expect(isinstance(r, Receipt) and r.status in want,
               f"{what + ': ' if what else ''}Send to {to!r} of {body[:20]!r}: got {raw.hex()} = "
               f"{r!r}, want Receipt{{{' or '.join(sorted(w.name for w in want))}}}")
        expect(raw == encode_reply(r), f"Receipt {raw.hex()} is not the canonical encoding")
        out.append(Sent(body, r, t0, t1))
    ids = [x.receipt.id for x in out]
    expect(len(set(ids)) == len(ids), f"two Sends got the same id: {ids}")
    return out


async def offline_pair(srv: Server, sender: str, recipient: str):
    """Register `recipient` (then disconnect it, and wait until the server no
    longer lists it) and `sender` (kept connected). Returns (sender client,
    sender key, recipient key)."""
    kr, ks = Identity(), Identity()
    c, _ = await v2_session(srv, recipient, kr, Account.Registered, f"{recipient} registers")
    await c.close()
    s, _ = await v2_session(srv, sender, ks, Account.Registered, f"{sender} registers")
    try:
        await wait_gone(srv, recipient)
    except BaseException:
        await s.close()
        raise
    return s, ks, kr


async def take_pushes(c: ChatClient, n: int, what: str, timeout: float = STEP) -> list:
    """Exactly n complete pushes (not deduplicated), sorted by stream ID:
    the contract has clients present deliveries in stream-ID order. Each
    arrives on a server-opened unidirectional stream of its own."""
    got = []

    async def take():
        while len(got) < n:
            got.append(await c.next_push())

    try:
        await asyncio.wait_for(take(), timeout)
    except asyncio.TimeoutError:
        seen = sorted((sid, type(p).__name__, p.id, getattr(p, "body", "")[:12]) for sid, p in got)
        raise CheckFailed(f"{what}: timed out after {timeout:g}s with {len(got)} of {n} pushes: "
                          f"{seen}") from None
    sids = [sid for sid, _ in got]
    expect(all(sid & 0x3 == 0x3 for sid in sids), f"{what}: a push on stream(s) {sids}, not "
                                                   "server-opened unidirectional ones")
    expect(len(set(sids)) == len(sids), f"{what}: two pushes on one stream: {sids}")
    return sorted(got, key=lambda p: p[0])


def expect_drained(pushes: list, sent: list, sender, what: str) -> None:
    """`pushes` (in stream-ID order) are Delivers of exactly the messages in
    `sent`, in that order, with their original id, `from`, body and sent_at_ms.
    `sender`: the `from` of every message, or a list with one per message."""
    senders = [sender] * len(sent) if isinstance(sender, str) else list(sender)
    got = [(type(p).__name__, getattr(p, "id", None), getattr(p, "body", "")[:12]) for _, p in pushes]
    want = [("Deliver", x.receipt.id, x.body[:12]) for x in sent]
    expect(got == want, f"{what}: in stream-ID order got {got}, want {want}")
    for (sid, d), x, frm in zip(pushes, sent, senders):
        expect(d.from_ == frm, f"{what}: Deliver {d.id} has from {d.from_!r}, want {frm!r}")
        expect(d.body == x.body, f"{what}: Deliver {d.id} has another body")
        expect(x.t0 - CLOCK_SLACK_MS <= d.sent_at_ms <= x.t1 + CLOCK_SLACK_MS,
               f"{what}: Deliver {d.id} has sent_at_ms {d.sent_at_ms}, but it was sent between "
               f"{x.t0} and {x.t1} (the original time, not the time of the drain)")


async def late_receipts(c: ChatClient, ids, status: Status, what: str,
                        timeout: float = STEP) -> list:
    """Push::Receipt{id, status} once for each of `ids`, each on a server
    unidirectional stream of its own (in any order); anything else that
    arrives meanwhile (another push, a repeat, another status) fails."""
    want = set(ids)
    got: dict = {}

    async def take():
        while set(got) != want:
            sid, raw = await c.next_push_raw()
            p = decode_push(raw, version=c.version)
            expect(isinstance(p, LateReceipt), f"{what}: while waiting for late receipts got "
                                               f"{p!r} on stream {sid}")
            expect(raw == encode_push(p), f"{what}: {raw.hex()} is not the canonical encoding")
            expect(p.id in want, f"{what}: a late receipt for id {p.id}, not one of {sorted(want)}")
            if p.id in got:
                raise CheckFailed(f"{what}: a second late receipt for id {p.id} "
                                  f"({got[p.id][1]!r} on stream {got[p.id][0]}, then {p!r} on {sid})")
            expect(p.status == status, f"{what}: {p!r}, want status {status.name}")
            expect(sid & 0x3 == 0x3, f"{what}: a late receipt on stream {sid}")
            got[p.id] = (sid, p, raw)

    try:
        await asyncio.wait_for(take(), timeout)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{what}: timed out after {timeout:g}s with late receipts for "
                          f"{sorted(got)} of {sorted(want)}") from None
    sids = [v[0] for v in got.values()]
    expect(len(set(sids)) == len(sids), f"{what}: two late receipts on one stream: {sids}")
    return [got[i] for i in ids]


async def expect_next_is(sender: ChatClient, recipient: ChatClient, to: str, what: str,
                         statuses=(Status.Delivered,)) -> tuple:
    """A marker from `sender` to the connected `recipient` is `recipient`'s
    next push: nothing else (no repeat of an earlier message or receipt) came
    first. Its Receipt must be in `statuses`: Delivered, or also Queued while
    the recipient may still be draining (a message sent then is stored behind
    the backlog, and follows it). Returns the marker's Receipt and Deliver."""
    push_task = asyncio.ensure_future(recipient.next_push_raw())
    try:
        receipt = await bounded(sender.send(to, f"marker: {what}"), f"{what}: the marker's Receipt")
        expect(receipt.status in statuses, f"{what}: the marker got {receipt!r}, want "
                                           f"{' or '.join(x.name for x in statuses)}")
        sid, raw = await bounded(push_task, f"{what}: the marker's Deliver")
    finally:
        push_task.cancel()
    d = decode_push(raw, version=recipient.version)
    expect(isinstance(d, Deliver) and d.id == receipt.id,
           f"{what}: the next push is {d!r} on stream {sid}, not the marker {receipt.id}")
    return receipt, d


@check("dedup: the client's PushDedup keeps the last 4,096 Deliver ids and late-receipt ids; "
       "repeats are dropped (unit check)")
async def _dedup_unit(srv: Server):
    # server-independent, like the codec checks
    expect(DEDUP_IDS >= 4096, f"the client keeps {DEDUP_IDS} ids; the contract says at least 4,096")
    s = SeenIds()
    expect(s.capacity == DEDUP_IDS, f"SeenIds() keeps {s.capacity} ids, want {DEDUP_IDS}")
    expect(all(s.add(i) for i in range(DEDUP_IDS)), "a new id was taken for a repeat")
    expect(len(s) == DEDUP_IDS, f"{len(s)} ids remembered, want {DEDUP_IDS}")
    expect(not s.add(0) and not s.add(DEDUP_IDS - 1) and not s.add(1234),
           "a repeat among the last 4,096 ids was taken as new")
    expect(s.add(DEDUP_IDS), "id 4096 was taken for a repeat")
    # 4,097 distinct ids: the oldest (0) is forgotten, the other 4,096 are kept
    expect(0 not in s and 1 in s and DEDUP_IDS in s and len(s) == DEDUP_IDS,
           f"after {DEDUP_IDS + 1} distinct ids: 0 in={0 in s}, 1 in={1 in s}, len={len(s)}")
    expect(not s.add(1) and s.add(0), "eviction is not first-in first-out")
    small = SeenIds(2)
    expect([small.add(i) for i in (5, 6, 5, 7, 5, 7)] == [True, True, False, True, True, False],
           "SeenIds(2) does not forget the oldest id")
    # Deliver ids and late-receipt ids are separate; repeats of either are dropped
    d = PushDedup()
    stream = [
        Deliver(10, "alice", 1, "a"), Deliver(11, "alice", 2, "b"),
        Deliver(10, "alice", 1, "a"),                       # at-least-once repeat
        LateReceipt(10, Status.Delivered),                  # my message 10: another id space
        LateReceipt(10, Status.Delivered),                  # a repeated late receipt
        LateReceipt(12, Status.Expired), Deliver(12, "bob", 3, "c"),
        LateReceipt(12, Status.Expired), Deliver(11, "alice", 2, "b"),
    ]
    kept = [p for p in stream if d.accept(p)]
    want = [stream[0], stream[1], stream[3], stream[5], stream[6]]
    expect(kept == want, f"PushDedup kept {kept!r}, want {want!r}")
    expect(d.dropped == 4 and list(d.last_dropped) == [stream[2], stream[4], stream[7], stream[8]],
           f"PushDedup dropped {d.dropped}: {list(d.last_dropped)!r}")
    # and ChatClient.next_new_push applies it to what arrives on the wire:
    # pushes injected into a live connection's stream queue, repeats included
    # (late receipts only on quic-chat/2: a v1 decoder rejects Push variant 1)
    c = await srv.client(alpn=[ALPN_V2, ALPN_V1])
    try:
        c2_dedup = c.dedup
        v2 = c.version == 2
        pushes = [Deliver(1, "x", 5, "one"), Deliver(1, "x", 5, "one"), Deliver(2, "x", 6, "two"),
                  LateReceipt(1, Status.Delivered), LateReceipt(1, Status.Delivered),
                  Deliver(3, "x", 7, "three")]
        if not v2:
            pushes[3:5] = [Deliver(2, "x", 6, "two"), Deliver(1, "x", 5, "one")]
        for i, p in enumerate(pushes):
            c._protocol.pushes.put_nowait((3 + 4 * i, encode_push(p)))
        got = [await bounded(c.next_new_push(), "an injected push") for _ in range(4 if v2 else 3)]
        ids = [(type(p).__name__, p.id) for _, p in got]
        want = [("Deliver", 1), ("Deliver", 2)] + [("LateReceipt", 1)] * v2 + [("Deliver", 3)]
        expect(ids == want, f"next_new_push on {c.alpn} gave {ids}, want {want}")
        expect(c2_dedup.dropped == 2 + (not v2) and c._protocol.pushes.empty(),
               f"next_new_push dropped {c2_dedup.dropped}, want {2 + (not v2)}")
    finally:
        await c.close()
    # a reconnecting client passes its PushDedup on: a repeat on the new connection is dropped
    c = await srv.client(dedup=c2_dedup)
    try:
        expect(c.dedup is c2_dedup, "connect(dedup=...) did not keep the given PushDedup")
        c._protocol.pushes.put_nowait((3, encode_push(Deliver(2, "x", 6, "two"))))
        c._protocol.pushes.put_nowait((7, encode_push(Deliver(4, "x", 8, "four"))))
        _, p = await bounded(c.next_new_push(), "an injected push")
        expect(p.id == 4 and c2_dedup.dropped == 3 + (not v2),
               f"after a reconnect next_new_push gave {p!r}")
    finally:
        await c.close()


@check("v2 store: a Send to an offline account is Queued (2); the next Session has queued = the "
       "count; the stored messages follow in send order (stream-ID order), one uni stream each, with "
       "their original id, from and sent_at_ms; after the drain a new Session has queued 0", v2=True)
async def _v2_store_drain(srv: Server):
    alice, _, kb = await offline_pair(srv, "alice", "Bob")
    bob = None
    try:
        bodies = [f"stored {i} \u2603" for i in range(5)]
        sent = await send_all(alice, "bob", bodies, Status.Queued, "to offline Bob")
        first = encode_reply(sent[0].receipt).hex()
        bob, s = await v2_session(srv, "bob", kb, Account.Returning, "Bob comes back",
                                  queued=len(sent))
        pushes = await take_pushes(bob, len(sent), "Bob's drain")
        expect_drained(pushes, sent, "alice", "Bob's drain")
        # removed once acknowledged: the late receipts to alice (online, v2) say
        # the server has seen each acknowledgement; then a new Session has queued 0
        await late_receipts(alice, [x.receipt.id for x in sent], Status.Delivered,
                            "alice, after Bob's drain")
        await bob.close()
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, "Bob after the drain", queued=0)
        await expect_next_is(alice, bob, "bob", "nothing is delivered again after the drain",
                             WHILE_DRAINING)
        gap = pushes[0][1].sent_at_ms - sent[0].t0
        return (f"Receipt bytes {first}; Session bytes {encode_reply(s).hex()}; stream ids "
                f"{[sid for sid, _ in pushes]}; first sent_at_ms {gap:+d} ms from the Send")
    finally:
        await alice.close()
        if bob is not None:
            await bob.close()


@check("v2 store: late receipts: an online v2 sender gets Push::Receipt{id, Delivered} on a uni "
       "stream of its own for each Queued id when the recipient drains, once each, none before",
       v2=True)
async def _v2_store_late_receipts(srv: Server):
    alice, _, kb = await offline_pair(srv, "alice", "bob")
    bob = None
    try:
        sent = await send_all(alice, "bob", [f"m{i}" for i in range(4)], Status.Queued)
        # a live exchange with a third account first: alice gets nothing for her
        # stored messages before bob drains them
        carol, _ = await v2_session(srv, "carol", Identity(), Account.Registered)
        try:
            await expect_next_is(carol, alice, "alice", "no late receipt before the drain",
                                 WHILE_DRAINING)
        finally:
            await carol.close()
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, queued=len(sent))
        pushes = await take_pushes(bob, len(sent), "bob's drain")
        expect_drained(pushes, sent, "alice", "bob's drain")
        got = await late_receipts(alice, [x.receipt.id for x in sent], Status.Delivered,
                                  "alice, after bob's drain")
        # once each: a live message from bob is alice's next push, no repeat first
        await expect_next_is(bob, alice, "alice", "no late receipt twice")
        return (f"Push::Receipt bytes {got[0][2].hex()}; streams {[g[0] for g in got]}")
    finally:
        await alice.close()
        if bob is not None:
            await bob.close()


async def until_live(sender: ChatClient, recipient: ChatClient, to: str, what: str) -> None:
    """Send markers until one is Delivered live: the recipient's drain is
    over, so the server has seen every acknowledgement of it (and made the
    late receipts they owe). Each marker is the recipient's next push."""
    for _ in range(50):
        receipt, _ = await expect_next_is(sender, recipient, to, what, WHILE_DRAINING)
        if receipt.status == Status.Delivered:
            return
    raise CheckFailed(f"{what}: still draining after 50 markers")


@check("v2 store: expiry (--mail-ttl 2s, this server's option): a stored message nobody reads is "
       "dropped; its online sender gets Push::Receipt{id, Expired} (status 7); the recipient's next "
       "Session has queued 0", server_args=("--mail-ttl", "2s"), v2=True)
async def _v2_store_expiry(srv: Server):
    expect(has_flag(srv.binary, "--mail-ttl"), "`server --help` does not mention --mail-ttl")
    alice, _, kb = await offline_pair(srv, "alice", "bob")
    try:
        sent = await send_all(alice, "bob", ["soon gone 1", "soon gone 2"], Status.Queued)
        got = await late_receipts(alice, [x.receipt.id for x in sent], Status.Expired,
                                  "alice, after the lifetime", timeout=2 + STEP)
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, "bob", queued=0)
        try:
            await expect_next_is(alice, bob, "bob", "nothing expired is delivered", WHILE_DRAINING)
        finally:
            await bob.close()
        return f"Push::Receipt{{Expired}} bytes {got[0][2].hex()}"
    finally:
        await alice.close()


@check("v2 store: late receipts kept for an offline sender: delivered at its next Session after "
       "its own stored messages (queued counts messages only), once each", v2=True)
async def _v2_store_offline_sender(srv: Server):
    alice, ka, kb = await offline_pair(srv, "alice", "bob")
    bob = carol = None
    try:
        sent = await send_all(alice, "bob", ["while you were out 1", "while you were out 2"],
                              Status.Queued)
        await alice.close()
        await wait_gone(srv, "alice")
        carol, _ = await v2_session(srv, "carol", Identity(), Account.Registered)
        for_alice = await send_all(carol, "alice", ["for alice"], Status.Queued)
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, queued=len(sent))
        expect_drained(await take_pushes(bob, len(sent), "bob's drain"), sent, "alice",
                       "bob's drain")
        await until_live(carol, bob, "bob", "bob's drain is over")
        alice, _ = await v2_session(srv, "alice", ka, Account.Returning, "alice", queued=1)
        pushes = await take_pushes(alice, 1 + len(sent), "alice's session")
        expect_drained(pushes[:1], for_alice, "carol", "alice's own stored message first")
        receipts = [p for _, p in pushes[1:]]
        expect(all(isinstance(p, LateReceipt) and p.status == Status.Delivered for p in receipts),
               f"after her message alice got {receipts}, want two Delivered late receipts")
        expect(sorted(p.id for p in receipts) == sorted(x.receipt.id for x in sent),
               f"late receipts for {[p.id for p in receipts]}, want {[x.receipt.id for x in sent]}")
        await expect_next_is(bob, alice, "alice", "no late receipt twice")
    finally:
        for c in (alice, bob, carol):
            if c is not None:
                await c.close()


@check("v2 store: ordering while draining: messages sent while the backlog drains come after the "
       "stored ones, all once, in send order", v2=True)
async def _v2_store_drain_order(srv: Server):
    alice, _, kb = await offline_pair(srv, "alice", "bob")
    bob = None
    try:
        stored = await send_all(alice, "bob", [f"stored {i:02}" for i in range(12)], Status.Queued)
        bob = await srv.client(alpn=V2_ONLY, identity=kb)
        _, s = await v2_hello_raw(bob, "bob")
        expect(isinstance(s, Session) and s.account == Account.Returning and s.queued == len(stored),
               f"bob's Hello got {s!r}, want Session{{Returning, queued {len(stored)}}}")
        # alice sends on while the backlog drains (bob's client reads it as it comes)
        later = await send_all(alice, "bob", [f"later {i:02}" for i in range(8)],
                               {Status.Delivered, Status.Queued}, "while bob's backlog drains")
        pushes = await take_pushes(bob, len(stored) + len(later), "bob's drain and the later ones")
        expect_drained(pushes, stored + later, "alice", "bob: stored, then later")
        await expect_next_is(alice, bob, "bob", "nothing twice", WHILE_DRAINING)
        n_q = sum(x.receipt.status == Status.Queued for x in later)
        return f"of the {len(later)} later ones {n_q} were answered Queued, {len(later) - n_q} Delivered"
    finally:
        await alice.close()
        if bob is not None:
            await bob.close()


@check("v2 store: graceful restarts (EXIT, same --data-dir, three times): mail Queued before a "
       "restart is delivered after it, nothing twice across sessions, ids unique across restarts",
       v2=True)
async def _v2_store_restart(srv: Server):
    alice, ka, kb = await offline_pair(srv, "alice", "bob")
    bob_dedup = PushDedup()  # bob's client, across all its connections
    all_ids: list = []
    rounds = []
    try:
        sent = await send_all(alice, "bob", ["before restart 1 a", "before restart 1 b"],
                              Status.Queued, "run 1")
        for run in (2, 3, 4):
            all_ids += [x.receipt.id for x in sent]
            await alice.close()
            await srv.restart()
            alice, _ = await v2_session(srv, "alice", ka, Account.Returning, f"alice in run {run}")
            bob, _ = await v2_session(srv, "bob", kb, Account.Returning, f"bob in run {run}",
                                      queued=len(sent), dedup=bob_dedup)
            try:
                pushes = await take_pushes(bob, len(sent), f"bob's drain in run {run}")
                expect_drained(pushes, sent, "alice", f"bob's drain in run {run}")
                expect(all(bob_dedup.accept(p) for _, p in pushes),
                       f"run {run}: a message delivered in an earlier run came again: "
                       f"{list(bob_dedup.last_dropped)!r}")
                await late_receipts(alice, [x.receipt.id for x in sent], Status.Delivered,
                                    f"alice in run {run}, after bob's drain")
                r, live = await expect_next_is(alice, bob, "bob", f"run {run}: nothing twice",
                                               WHILE_DRAINING)
                expect(bob_dedup.accept(live), f"run {run}: the live message's id {live.id} was seen")
                if r.status == Status.Queued:
                    # stored behind the backlog: it stays stored until the server has
                    # seen bob's acknowledgement, which alice's late receipt tells
                    await late_receipts(alice, [r.id], Status.Delivered,
                                        f"alice in run {run}, for the marker")
                all_ids.append(live.id)
            finally:
                await bob.close()
            rounds.append(f"run {run}: {[x.receipt.id for x in sent]} + live {live.id}")
            if run < 4:
                await wait_gone(srv, "bob")
                sent = await send_all(alice, "bob", [f"before restart {run} {c}" for c in "abc"[:5 - run]],
                                      Status.Queued, f"run {run}")
        expect(len(set(all_ids)) == len(all_ids), f"an id was used twice across restarts: {all_ids}")
        expect(bob_dedup.dropped == 0, f"bob's client dropped {bob_dedup.dropped} repeats")
    finally:
        await alice.close()
    return "; ".join(rounds)


@check("v2 store: guests get NotConnected: a guest's Send to an offline account (guest mail off, this "
       "server's default), v1's too, Sends to an offline unregistered name and to a guest who left; "
       "nothing stored", v2=True)
async def _v2_store_guests(srv: Server):
    alice, ka, kb = await offline_pair(srv, "alice", "bob")
    try:
        g, s = await v2_session(srv, "gus", None, Account.Guest)
        try:
            await send_all(g, "bob", ["from a guest"], Status.NotConnected, "guest to offline bob")
        finally:
            await g.close()
        v1 = await srv.client(alpn=[ALPN_V1])
        try:
            _, w = await v2_hello_raw(v1, "vic", protocol=1)
            expect(isinstance(w, Welcome), f"v1 Hello got {w!r}")
            await send_all(v1, "bob", ["from v1"], Status.NotConnected, "v1 guest to offline bob")
        finally:
            await v1.close()
        await wait_gone(srv, "gus")
        await send_all(alice, "nobody", ["never registered"], Status.NotConnected,
                       "account to an unregistered name")
        await send_all(alice, "gus", ["gone"], Status.NotConnected, "account to a guest who left")
        # nothing was stored: bob's next Session has queued 0 and his first
        # delivery is a later live message
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, "bob", queued=0)
        try:
            await expect_next_is(alice, bob, "bob", "nothing stored from guests", WHILE_DRAINING)
        finally:
            await bob.close()
        # and gus left no mailbox for himself either: a new key can register the name
        c, _ = await v2_session(srv, "gus", Identity(), Account.Registered, "gus, now an account")
        await c.close()
    finally:
        await alice.close()


@check("v2 store: --guest-mail (this server's documented option): v2 and v1 guests' Sends to an "
       "offline account are Queued and drained with from = the guest's name; the v2 guest gets its "
       "late receipt on its open connection, v1 none",
       server_args=("--guest-mail",), v2=True)
async def _v2_store_guest_mail(srv: Server):
    expect(has_flag(srv.binary, "--guest-mail"), "`server --help` does not mention --guest-mail")
    alice, ka, kb = await offline_pair(srv, "alice", "bob")
    g, _ = await v2_session(srv, "gus", None, Account.Guest)
    v1 = bob = None
    try:
        v1 = await srv.client(alpn=[ALPN_V1])
        _, w = await v2_hello_raw(v1, "vic", protocol=1)
        expect(isinstance(w, Welcome), f"v1 Hello got {w!r}")
        sent = await send_all(v1, "bob", ["from a v1 guest"], Status.Queued, "v1 guest to offline bob")
        sent += await send_all(g, "bob", ["from a v2 guest"], Status.Queued, "v2 guest to offline bob")
        sent += await send_all(alice, "bob", ["from alice"], Status.Queued, "alice to offline bob")
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, queued=len(sent))
        pushes = await take_pushes(bob, len(sent), "bob's drain")
        expect_drained(pushes, sent, ["vic", "gus", "alice"], "bob's drain")
        await expect_next_is(alice, bob, "bob", "nothing twice", WHILE_DRAINING)
        # alice's late receipt: the server has seen bob's acknowledgements. v1
        # connections never receive a late receipt: vic's next push is a live
        # message (a Push::Receipt would not even decode on quic-chat/1)
        await late_receipts(alice, [sent[2].receipt.id], Status.Delivered, "alice, after bob's drain")
        # a v2 guest hears on the connection that sent it, while it is open
        await late_receipts(g, [sent[1].receipt.id], Status.Delivered,
                            "gus, on the connection that sent it")
        await expect_next_is(alice, v1, "vic", "no late receipt on a v1 connection")
    finally:
        await g.close()
        await alice.close()
        for c in (v1, bob):
            if c is not None:
                await c.close()


@check("v2 store: --no-store: a Send to an offline account is NotConnected, nothing is kept; live "
       "delivery works", server_args=("--no-store",), v2=True)
async def _v2_store_off(srv: Server):
    expect(has_flag(srv.binary, "--no-store"), "`server --help` does not mention --no-store")
    alice, ka, kb = await offline_pair(srv, "alice", "bob")
    try:
        await send_all(alice, "bob", ["not kept"], Status.NotConnected, "--no-store, bob offline")
        bob, _ = await v2_session(srv, "bob", kb, Account.Returning, "bob", queued=0)
        try:
            await expect_next_is(alice, bob, "bob", "nothing stored", WHILE_DRAINING)
        finally:
            await bob.close()
    finally:
        await alice.close()


@check("v2 store: caps (--mailbox-max-messages 3, --mailbox-max-bytes 8192, --store-max-bytes "
       "20000): a Send past a bound is RecipientBusy (5) and nothing is stored",
       server_args=("--mailbox-max-messages", "3", "--mailbox-max-bytes", "8192",
                    "--store-max-bytes", "20000"), v2=True)
async def _v2_store_caps(srv: Server):
    for flag in ("--mailbox-max-messages", "--mailbox-max-bytes", "--store-max-bytes"):
        expect(has_flag(srv.binary, flag), f"`server --help` does not mention {flag}")
    alice, ka, kb = await offline_pair(srv, "alice", "bob")
    keys = {}
    mark = None
    try:
        # markers come from another account, so that alice's pushes are only
        # the late receipts for her stored messages
        mark, _ = await v2_session(srv, "mark", Identity(), Account.Registered)
        for name in ("carol", "dave", "erin", "frank"):
            keys[name] = Identity()
            c, _ = await v2_session(srv, name, keys[name], Account.Registered)
            await c.close()
            await wait_gone(srv, name)
        # messages: 3 fit, the 4th is RecipientBusy
        sent_b = await send_all(alice, "bob", ["one", "two", "three"], Status.Queued, "bob 1..3")
        await send_all(alice, "bob", ["four"], Status.RecipientBusy, "bob's 4th message")
        # a mailbox's bytes: a 10,000-byte body passes 8,192; a small one fits
        await send_all(alice, "carol", ["x" * 10_000], Status.RecipientBusy, "10,000 bytes for carol")
        sent_c = await send_all(alice, "carol", ["small"], Status.Queued, "a small one for carol")
        # the whole store: 7,000 bytes each for dave and erin fit, frank's passes 20,000
        sent_d = await send_all(alice, "dave", ["d" * 7_000], Status.Queued, "7,000 bytes for dave")
        sent_e = await send_all(alice, "erin", ["e" * 7_000], Status.Queued, "7,000 bytes for erin")
        await send_all(alice, "frank", ["f" * 7_000], Status.RecipientBusy,
                       "7,000 bytes for frank, the store holding about 14,000 of 20,000")
        for name, key, sent in (("bob", kb, sent_b), ("carol", keys["carol"], sent_c),
                                ("dave", keys["dave"], sent_d), ("erin", keys["erin"], sent_e),
                                ("frank", keys["frank"], [])):
            c, _ = await v2_session(srv, name, key, Account.Returning, name, queued=len(sent))
            try:
                expect_drained(await take_pushes(c, len(sent), f"{name}'s drain"), sent, "alice",
                               f"{name}'s drain")
                # the marker only once the server has seen the drain acknowledged:
                # before that the full mailbox would rightly refuse it
                if sent:
                    await late_receipts(alice, [x.receipt.id for x in sent], Status.Delivered,
                                        f"alice, after {name}'s drain")
                await expect_next_is(mark, c, name, f"{name}: nothing refused was stored",
                                     WHILE_DRAINING)
            finally:
                await c.close()
    finally:
        await alice.close()
        if mark is not None:
            await mark.close()



# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


def v2_server_args(binary: str, server_args: tuple) -> tuple:
    """v2 checks need open registration: ask for it where the binary has the
    flag (and the check did not ask for another mode)."""
    if "--accounts" not in server_args and has_flag(binary, "--accounts"):
        return ("--accounts", "open", *server_args)
    return server_args


async def probe_v2(binary: str) -> tuple[bool, str]:
    """Start a server once and offer quic-chat/2 and quic-chat/1: does it pick 2?"""
    srv = Server(binary, v2_server_args(binary, ()))
    try:
        await bounded(srv.start(), "server start")
        c = await srv.client(alpn=[ALPN_V2, ALPN_V1])
        alpn = c.alpn
        await c.close()
        await srv.exit()
        return alpn == ALPN_V2, f"offered quic-chat/2 and quic-chat/1, negotiated {alpn!r}"
    except ConnectionClosed as e:
        return False, f"offering quic-chat/2 and quic-chat/1: handshake failed: {e.info.describe()}"
    except CheckFailed as e:
        return False, f"probe failed: {e}" + _stderr_tail(srv)
    finally:
        await srv.kill()


async def run_check(binary: str, name: str, server_args: tuple, fn) -> tuple[bool, str]:
    srv = Server(binary, server_args)
    try:
        await bounded(srv.start(), "server start")
        detail = await fn(srv)
        rc = await srv.exit()
        expect(rc == 0, f"server exited with status {rc} after EXIT, want 0")
        return True, detail or ""
    except CheckFailed as e:
        return False, str(e) + _stderr_tail(srv)
    except Exception as e:  # noqa: BLE001 - report anything unexpected as a failure
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return False, f"unexpected {tb}" + _stderr_tail(srv)
    finally:
        await srv.kill()


def _stderr_tail(srv: Server) -> str:
    tail = [l for l in srv.stderr if l.strip()][-4:]
    return ("\n      server stderr: " + "\n      server stderr: ".join(tail)) if tail else ""


async def main(binary: str, only: str | None) -> int:
    # On SIGTERM/SIGINT (e.g. from `timeout`) cancel, so every started server is killed.
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, me.cancel)
    passed = failed = 0
    selected = [c for c in CHECKS if not only or only in c[0]]
    run_v2 = False
    if any(c[3] for c in selected):
        run_v2, why = await probe_v2(binary)
        n_v2 = sum(1 for c in selected if c[3])
        if not run_v2:
            if os.environ.get("QUIC_CHAT_EXPECT_V2") == "1":
                failed += 1
                print(f"FAIL v2: server does not offer quic-chat/2 ({why}), but "
                      f"QUIC_CHAT_EXPECT_V2=1; {n_v2} v2 checks not run", flush=True)
            else:
                print(f"SKIP v2: server does not offer quic-chat/2 ({why}); "
                      f"{n_v2} v2 checks not run (QUIC_CHAT_EXPECT_V2=1 makes this a failure)",
                      flush=True)
    for name, server_args, fn, needs_v2 in selected:
        if needs_v2:
            if not run_v2:
                continue
            server_args = v2_server_args(binary, server_args)
        t0 = time.monotonic()
        try:
            ok, detail = await asyncio.wait_for(
                run_check(binary, name, server_args, fn), CHECK_TIMEOUT
            )
        except asyncio.TimeoutError:
            ok, detail = False, f"check timed out after {CHECK_TIMEOUT:g}s"
        ms = int((time.monotonic() - t0) * 1000)
        if ok:
            passed += 1
            print(f"PASS {name} ({ms} ms){': ' + detail if detail else ''}", flush=True)
        else:
            failed += 1
            print(f"FAIL {name} ({ms} ms): {detail}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--only=")]
    only = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--only=")), None)
    binary = args[0] if args else os.environ.get("QUIC_CHAT_BIN")
    if not binary:
        print("usage: test_interop.py <path/to/quic-chat> [--only=SUBSTRING] "
              "(or set QUIC_CHAT_BIN)", file=sys.stderr)
        sys.exit(2)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"not an executable file: {binary}", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(main(os.path.abspath(binary), only)))
    except asyncio.CancelledError:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
