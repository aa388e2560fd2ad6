//! Golden bytes from the contract's encoding rules, and every protocol error
//! closing with code 2. Frames here are written by hand, not by our codec.

use quic_chat::server::SERVER_SOFTWARE;

use crate::harness::*;

fn string(text: &str) -> Vec<u8> {
    assert!(text.len() < 251);
    let mut bytes = vec![text.len() as u8];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

#[tokio::test]
async fn every_request_gets_the_exact_reply_bytes() {
    let server = TestServer::start().await;

    // Hello -> Welcome{server, online: 1}.
    let alice = raw_connect(&server).await;
    let welcome = raw_exchange(&alice, b"\x00\x01\x05alice").await;
    let mut expected = vec![0];
    expected.extend(string(SERVER_SOFTWARE));
    expected.push(1);
    assert_eq!(welcome, expected);

    let bob = raw_connect(&server).await;
    let welcome = raw_exchange(&bob, &hello_bytes(1, "bob")).await;
    assert_eq!(*welcome.last().unwrap(), 2, "two online");

    // ListUsers -> Users{["alice", "bob"]}.
    let users = raw_exchange(&alice, &[2]).await;
    assert_eq!(users, b"\x03\x02\x05alice\x03bob");

    // Send to bob -> Receipt{id, Delivered}, and bob's Deliver with the same id.
    let receipt = raw_exchange(&alice, b"\x01\x03bob\x02hi").await;
    assert_eq!(receipt[0], 2, "Receipt");
    let (id, rest) = take_varint(&receipt[1..]);
    assert_eq!(rest, [0], "Delivered, and nothing after it");

    let mut stream = within(SCENARIO, "delivery stream", bob.accept_uni())
        .await
        .unwrap();
    let deliver = stream.read_to_end(1 << 17).await.unwrap();
    assert_eq!(deliver[0], 0, "Deliver");
    let (deliver_id, rest) = take_varint(&deliver[1..]);
    assert_eq!(deliver_id, id);
    assert_eq!(&rest[..6], b"\x05alice", "from stamped by the server");
    let (sent_at_ms, rest) = take_varint(&rest[6..]);
    assert!(sent_at_ms > 1_600_000_000_000, "Unix ms");
    assert_eq!(rest, b"\x02hi");

    // Send to nobody -> NotConnected (1); to a bad name -> InvalidRecipient (6).
    let receipt = raw_exchange(&alice, &send_bytes("nobody", "x")).await;
    let (not_connected_id, rest) = take_varint(&receipt[1..]);
    assert_eq!((receipt[0], rest), (2, &[1u8][..]));
    assert!(not_connected_id > id, "fresh id");
    let receipt = raw_exchange(&alice, &send_bytes("no body", "x")).await;
    let (_, rest) = take_varint(&receipt[1..]);
    assert_eq!((receipt[0], rest), (2, &[6u8][..]));

    // A longer varint form than needed is accepted: a Send (variant 1) whose
    // `to` length 3 is written as 251 + u16.
    let receipt = raw_exchange(&alice, b"\x01\xfb\x03\x00bob\x01!").await;
    let (_, rest) = take_varint(&receipt[1..]);
    assert_eq!((receipt[0], rest), (2, &[0u8][..]));

    // Hello for a taken name -> Refused{NameTaken, detail}.
    let again = raw_connect(&server).await;
    let refused = raw_exchange(&again, &hello_bytes(1, "ALICE")).await;
    assert_eq!(&refused[..2], &[1, 0]);
    let (len, detail) = take_varint(&refused[2..]);
    assert_eq!(len as usize, detail.len());
    assert_eq!(close_code(&again).await, Some(3));
    server.stop().await;
}

async fn assert_protocol_error(connection: quinn::Connection, what: &str) {
    assert_eq!(
        close_code(&connection).await,
        Some(2),
        "{what} closes with PROTOCOL_ERROR"
    );
}

/// Send `bytes` on a new stream and hold the connection until it closes
/// (owned arguments, so that it can be spawned).
async fn send_raw(connection: quinn::Connection, bytes: Vec<u8>) {
    let (mut send, _recv) = connection.open_bi().await.expect("open_bi");
    send.write_all(&bytes).await.expect("write");
    send.finish().expect("finish");
    // Keep the receive side alive until the close arrives.
    let _ = connection.closed().await;
}

#[tokio::test]
async fn garbage_instead_of_hello_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_connect(&server).await;
    tokio::spawn(send_raw(connection.clone(), vec![0xff, 0x13, 0x37]));
    assert_protocol_error(connection, "garbage").await;
    server.stop().await;
}

#[tokio::test]
async fn send_before_hello_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_connect(&server).await;
    tokio::spawn(send_raw(connection.clone(), send_bytes("bob", "hi")));
    assert_protocol_error(connection, "Send before Hello").await;
    server.stop().await;
}

#[tokio::test]
async fn trailing_bytes_after_hello_are_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_connect(&server).await;
    let mut bytes = hello_bytes(1, "alice");
    bytes.push(0);
    tokio::spawn(send_raw(connection.clone(), bytes));
    assert_protocol_error(connection, "a trailing byte").await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_frame_on_a_request_stream_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "alice").await;
    let mut bytes = vec![2];
    bytes.push(2); // ListUsers twice
    tokio::spawn(send_raw(connection.clone(), bytes));
    assert_protocol_error(connection, "a second frame").await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "alice").await;
    // A Send whose frame is over 73,728 bytes.
    let mut bytes = vec![1, 3, b'b', b'o', b'b', 252];
    bytes.extend_from_slice(&80_000u32.to_le_bytes());
    bytes.extend(std::iter::repeat_n(b'x', 80_000));
    tokio::spawn(send_raw(connection.clone(), bytes));
    assert_protocol_error(connection, "an oversized frame").await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_hello_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "alice").await;
    tokio::spawn(send_raw(connection.clone(), hello_bytes(1, "mallory")));
    assert_protocol_error(connection, "a second Hello").await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_opened_unidirectional_stream_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "alice").await;
    let mut stream = connection.open_uni().await.unwrap();
    stream.write_all(&[2]).await.unwrap();
    stream.finish().unwrap();
    assert_protocol_error(connection, "a client uni stream").await;
    server.stop().await;
}

/// A Send frame of exactly `frame_len` bytes to bob, its body length written
/// as `252` + u32 (bodies of 65,536 bytes and more).
fn send_frame_of(frame_len: usize) -> Vec<u8> {
    let mut frame = vec![1, 3, b'b', b'o', b'b', 252];
    let body_len = frame_len - frame.len() - 4;
    frame.extend_from_slice(&u32::try_from(body_len).unwrap().to_le_bytes());
    frame.resize(frame_len, b'x');
    frame
}

#[tokio::test]
async fn an_oversized_body_in_a_frame_within_the_limit_is_too_large() {
    let server = TestServer::start().await;
    let alice = raw_registered(&server, "alice").await;
    let _bob = raw_registered(&server, "bob").await;
    // The frame limit is 73,728 bytes; the body limit 65,536.
    for frame_len in [65_547, 73_727, 73_728] {
        let frame = send_frame_of(frame_len);
        assert_eq!(frame.len(), frame_len);
        let receipt = raw_exchange(&alice, &frame).await;
        let (_, rest) = take_varint(&receipt[1..]);
        assert_eq!(
            (receipt[0], rest),
            (2, &[3u8][..]),
            "a {frame_len}-byte frame gets Receipt{{TooLarge}}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_frame_one_byte_over_the_limit_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "alice").await;
    tokio::spawn(send_raw(connection.clone(), send_frame_of(73_729)));
    assert_protocol_error(connection, "a 73,729-byte frame").await;
    server.stop().await;
}
