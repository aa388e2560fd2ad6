#!/usr/bin/env python3
"""Independent interoperability checks for a quic-chat protocol-v1 server.

Usage: python test_interop.py [path/to/quic-chat]      (or env QUIC_CHAT_BIN)

Every check starts its own server process
    <binary> server --port 0 --bind 127.0.0.1 --cert-dir <tmpdir> --rate-limit 0
talks to it with the hand-written client in quic_chat_client.py, stops it
with `EXIT` on stdin and requires exit status 0. Every wait is bounded by
asyncio.wait_for; nothing sleeps to wait for an event.

Prints one line per check and finishes with `N passed, M failed`; the exit
status is non-zero if any check failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quic_chat_client import (  # noqa: E402
    ALPN,
    PROTOCOL_ERROR,
    REFUSED,
    SERVER_SHUTDOWN,
    ChatClient,
    ConnectionClosed,
    Decoder,
    Encoder,
    Hello,
    ListUsers,
    Receipt,
    Refused,
    RefuseReason,
    Send,
    Status,
    Users,
    Welcome,
    decode_push,
    decode_reply,
    decode_request,
    encode_request,
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

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "server", "--port", "0", "--bind", HOST,
            "--cert-dir", os.path.join(self._tmp, "certs"), "--rate-limit", "0",
            *self.extra_args,
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


def check(name: str, server_args: tuple = ()):
    def deco(fn):
        CHECKS.append((name, server_args, fn))
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
# Runner
# --------------------------------------------------------------------------


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
    for name, server_args, fn in CHECKS:
        if only and only not in name:
            continue
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
