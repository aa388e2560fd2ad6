//! The floor to compare `quic-chat server` with: a minimal protocol-v1 relay
//! on quinn 0.11 with its default transport and TLS settings, no limits, no
//! logging, no checks beyond what relaying needs. Not a server for users.
//!
//! ```sh
//! cargo run --release --example minimal_relay -- 127.0.0.1:4500 certs
//! quic-chat bench 127.0.0.1:4500 --ca certs/ca.pem
//! ```
//!
//! It reuses the certificate in the given directory (made by `quic-chat server`
//! on its first start) and the project's codec, so the bytes on the wire are
//! the same as the real server's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quic_chat::protocol::{
    codec::{decode_request, encode_deliver_header, read_frame_bytes, write_parts},
    encode, Reply, Request, RequestRef, Status, Version,
};

type Users = Arc<Mutex<HashMap<String, quinn::Connection>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().unwrap_or("127.0.0.1:4500".into()).parse()?;
    let dir = args.next().unwrap_or("certs".into());
    let identity = quic_chat::tls::load_or_create(dir.as_ref(), &[])?;
    // The crypto provider of quinn's default features (ring), rustls's defaults.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    crypto.alpn_protocols = vec![Version::V1.alpn().to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, addr)?;
    println!("minimal relay on {}", endpoint.local_addr()?);
    let users: Users = Arc::default();
    let ids = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let (users, ids) = (Arc::clone(&users), Arc::clone(&ids));
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                let _ = session(connection, users, ids).await;
            }
        });
    }
    Ok(())
}

async fn session(
    connection: quinn::Connection,
    users: Users,
    ids: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = connection.accept_bi().await?;
    let Request::Hello { username, .. } =
        quic_chat::protocol::decode(&read_frame_bytes(&mut recv).await?)?
    else {
        anyhow::bail!("expected Hello");
    };
    let online = {
        let mut users = users.lock().unwrap();
        users.insert(username.clone(), connection.clone());
        users.len() as u32
    };
    let welcome = Reply::Welcome {
        server: "minimal-relay".into(),
        online,
    };
    write_parts(&mut send, [Bytes::from(encode(&welcome)?)]).await?;
    while let Ok((send, recv)) = connection.accept_bi().await {
        let (users, ids, from) = (Arc::clone(&users), Arc::clone(&ids), username.clone());
        tokio::spawn(async move { request(send, recv, &users, &ids, &from).await });
    }
    users.lock().unwrap().remove(&username);
    Ok(())
}

async fn request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    users: &Users,
    ids: &AtomicU64,
    from: &str,
) -> anyhow::Result<()> {
    let frame = read_frame_bytes(&mut recv).await?;
    let reply = match decode_request(Version::V1, &frame)? {
        RequestRef::Send { to, body } => {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let recipient = users.lock().unwrap().get(to).cloned();
            let status = match recipient {
                None => Status::NotConnected,
                Some(recipient) => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
                    let header = encode_deliver_header(id, from, now, body.len())?;
                    let start = frame.len() - body.len();
                    let mut out = recipient.open_uni().await?;
                    write_parts(&mut out, [header, frame.slice(start..)]).await?;
                    match out.stopped().await {
                        Ok(None) => Status::Delivered,
                        _ => Status::RecipientBusy,
                    }
                }
            };
            Reply::Receipt { id, status }
        }
        RequestRef::ListUsers => Reply::Users {
            names: users.lock().unwrap().keys().cloned().collect(),
        },
        RequestRef::Hello { .. } => anyhow::bail!("second Hello"),
        RequestRef::Devices(_) => anyhow::bail!("not a v1 request"),
    };
    write_parts(&mut send, [Bytes::from(encode(&reply)?)]).await?;
    Ok(())
}
