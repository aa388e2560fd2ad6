//! `--json` mode: one JSON object per line for every event, and input lines
//! that are either plain commands or JSON commands, so bots parse no prose.
//! The schema is documented in the README.

use serde::{Deserialize, Serialize};

use crate::chat::command::{self, Command, DevicesCommand};
use crate::chat::event::{
    account_name, device_fingerprint, Event, LOST_LINE, OFFLINE_WHY, REPLACED_LINE,
};
use crate::protocol::Status;

/// One output line.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum JsonEvent<'a> {
    Welcome {
        server: &'a str,
        online: u32,
        username: &'a str,
        account: &'static str,
    },
    Message {
        id: u64,
        from: &'a str,
        sent_at_ms: u64,
        body: &'a str,
    },
    Receipt {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        status: &'static str,
        /// A late receipt (protocol v2): the final outcome of a queued message.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        late: bool,
    },
    Waited {
        count: u32,
    },
    Users {
        names: &'a [String],
    },
    Devices {
        devices: Vec<JsonDevice<'a>>,
    },
    Help {
        text: &'a str,
    },
    Error {
        message: String,
    },
    ConnectionLost {
        message: &'static str,
    },
    Reconnected {},
    Shutdown {},
    Replaced {
        message: &'static str,
    },
}

/// One device in a `devices` event.
#[derive(Serialize)]
struct JsonDevice<'a> {
    fingerprint: String,
    label: &'a str,
    added_ms: u64,
    last_seen_ms: u64,
    current: bool,
}

/// What a JSON `devices` command does.
#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum DevicesOp {
    #[default]
    List,
    Add,
    Remove,
}

/// One JSON input line.
#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum JsonCommand {
    Send {
        to: String,
        body: String,
    },
    Users,
    Devices {
        #[serde(default)]
        op: DevicesOp,
        #[serde(default)]
        fingerprint: String,
        #[serde(default)]
        label: String,
    },
    Help,
    Exit,
}

/// The snake_case name of a receipt status, as the JSON events carry it.
pub(super) fn status_name(status: Status) -> &'static str {
    status.name()
}

/// `event` as one line of JSON (no line break; control characters escaped).
pub(super) fn event(event: &Event<'_>) -> String {
    let json = match event {
        Event::Welcome {
            server,
            online,
            username,
            account,
        } => JsonEvent::Welcome {
            server,
            online: *online,
            username,
            account: account_name(*account),
        },
        Event::Message(message) => JsonEvent::Message {
            id: message.id,
            from: &message.from,
            sent_at_ms: message.sent_at_ms,
            body: &message.body,
        },
        Event::Sent { to, receipt, .. } => JsonEvent::Receipt {
            id: receipt.id,
            to: Some(to),
            status: status_name(receipt.status),
            late: false,
        },
        Event::Late { receipt, sent } => JsonEvent::Receipt {
            id: receipt.id,
            to: sent.map(|(to, _)| to),
            status: status_name(receipt.status),
            late: true,
        },
        Event::Waited(count) => JsonEvent::Waited { count: *count },
        Event::SendFailed { to, error, .. } => JsonEvent::Error {
            message: format!("message to {to} not sent: {error}"),
        },
        Event::Users(names) => JsonEvent::Users { names },
        Event::UsersFailed(error) => JsonEvent::Error {
            message: format!("cannot list users: {error}"),
        },
        Event::Devices(devices) => JsonEvent::Devices {
            devices: devices
                .iter()
                .map(|device| JsonDevice {
                    fingerprint: device_fingerprint(device),
                    label: &device.label,
                    added_ms: device.added_ms,
                    last_seen_ms: device.last_seen_ms,
                    current: device.current,
                })
                .collect(),
        },
        Event::DevicesFailed(why) => JsonEvent::Error {
            message: format!("devices: {why}"),
        },
        Event::Help => JsonEvent::Help {
            text: command::help(),
        },
        Event::Invalid(hint) => JsonEvent::Error {
            message: (*hint).to_owned(),
        },
        Event::Offline { to, .. } => JsonEvent::Error {
            message: format!("message to {to} not sent: {OFFLINE_WHY}"),
        },
        Event::Lost => JsonEvent::ConnectionLost { message: LOST_LINE },
        Event::Reconnected => JsonEvent::Reconnected {},
        Event::ReconnectFailed(error) => JsonEvent::Error {
            message: format!("cannot reconnect: {error}"),
        },
        Event::Shutdown => JsonEvent::Shutdown {},
        Event::Replaced => JsonEvent::Replaced {
            message: REPLACED_LINE,
        },
    };
    // Serialising these plain structs cannot fail; fall back to a fixed line anyway.
    let line = serde_json::to_string(&json)
        .unwrap_or_else(|_| r#"{"event":"error","message":"cannot encode event"}"#.to_owned());
    escape_remaining_controls(line)
}

/// serde_json escapes only characters below U+0020; escape DEL and the C1
/// controls too, so no control character from the network reaches a terminal
/// that shows this output. The JSON means the same.
fn escape_remaining_controls(line: String) -> String {
    let is_control = |c: char| ('\u{7f}'..='\u{9f}').contains(&c);
    if !line.contains(is_control) {
        return line;
    }
    let mut escaped = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if is_control(c) {
            escaped.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// The command an input line asks for: a JSON object if it starts with `{`,
/// otherwise a plain command line.
pub(super) fn parse_input(line: &str) -> Command {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return command::parse(line);
    }
    match serde_json::from_str::<JsonCommand>(trimmed) {
        Ok(JsonCommand::Send { to, body }) if to.is_empty() || body.is_empty() => {
            Command::Invalid("usage: {\"cmd\":\"send\",\"to\":USER,\"body\":MESSAGE}".into())
        }
        Ok(JsonCommand::Send { to, body }) => Command::Send { to, body },
        Ok(JsonCommand::Users) => Command::Users,
        Ok(JsonCommand::Devices {
            op,
            fingerprint,
            label,
        }) => match op {
            DevicesOp::List => Command::Devices(DevicesCommand::List),
            DevicesOp::Add => match command::devices_add(&fingerprint, &label) {
                Ok(add) => Command::Devices(add),
                Err(hint) => Command::Invalid(hint),
            },
            DevicesOp::Remove if fingerprint.trim().is_empty() => Command::Invalid(
                "usage: {\"cmd\":\"devices\",\"op\":\"remove\",\"fingerprint\":START}".into(),
            ),
            DevicesOp::Remove => Command::Devices(DevicesCommand::Remove {
                prefix: fingerprint.trim().to_owned(),
            }),
        },
        Ok(JsonCommand::Help) => Command::Help,
        Ok(JsonCommand::Exit) => Command::Exit,
        Err(e) => Command::Invalid(format!("not a JSON command: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Message, Receipt};
    use serde_json::{json, Value};

    fn parsed(event: &Event<'_>) -> Value {
        let line = super::event(event);
        assert!(!line.contains('\n'), "{line}");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn queued_sends_late_receipts_and_stored_messages_have_events() {
        let late = |status, sent| Event::Late {
            receipt: crate::client::LateReceipt { id: 7, status },
            sent,
        };
        assert_eq!(
            parsed(&late(Status::Delivered, Some(("bob", "hi")))),
            json!({"event":"receipt","id":7,"to":"bob","status":"delivered","late":true})
        );
        assert_eq!(
            parsed(&late(Status::Expired, None)),
            json!({"event":"receipt","id":7,"status":"expired","late":true})
        );
        assert_eq!(
            parsed(&Event::Lost),
            json!({"event":"connection_lost","message":"connection lost; reconnecting…"})
        );
        assert_eq!(parsed(&Event::Reconnected), json!({"event":"reconnected"}));
        assert_eq!(
            parsed(&Event::Offline {
                to: "bob",
                body: "hi"
            })["event"],
            "error"
        );
        assert_eq!(
            parsed(&Event::Waited(3)),
            json!({"event":"waited","count":3})
        );
        let queued = Event::Sent {
            to: "bob",
            body: "x",
            receipt: Receipt {
                id: 7,
                status: Status::Queued,
            },
        };
        assert_eq!(
            parsed(&queued),
            json!({"event":"receipt","id":7,"to":"bob","status":"queued"})
        );
    }

    #[test]
    fn every_event_is_one_object_with_its_name() {
        let welcome = Event::Welcome {
            server: "quic-chat 0.1.0",
            online: 2,
            username: "bob",
            account: None,
        };
        assert_eq!(
            parsed(&welcome),
            json!({"event":"welcome","server":"quic-chat 0.1.0","online":2,"username":"bob","account":"guest"})
        );
        for (account, name) in [
            (crate::protocol::Account::Registered, "registered"),
            (crate::protocol::Account::Returning, "returning"),
            (crate::protocol::Account::Guest, "guest"),
        ] {
            let welcome = Event::Welcome {
                server: "s",
                online: 1,
                username: "bob",
                account: Some(account),
            };
            assert_eq!(parsed(&welcome)["account"], name);
        }
        let devices = [crate::protocol::Device {
            fingerprint: vec![0xfb; 32],
            label: "first device".into(),
            added_ms: 5,
            last_seen_ms: 0,
            current: true,
        }];
        assert_eq!(
            parsed(&Event::Devices(&devices)),
            json!({"event":"devices","devices":[{"fingerprint":crate::protocol::Fingerprint::new([0xfb; 32]).to_string(),"label":"first device","added_ms":5,"last_seen_ms":0,"current":true}]})
        );
        assert_eq!(
            parsed(&Event::Replaced),
            json!({"event":"replaced","message":"signed in elsewhere"})
        );
        let message = Message {
            id: 3,
            from: "alice".into(),
            sent_at_ms: 1_700_000_000_000,
            body: "hi\x1b[2J\n\u{202e}".into(),
        };
        let line = super::event(&Event::Message(&message));
        assert!(!line.chars().any(|c| c.is_control()), "{line}");
        assert_eq!(
            parsed(&Event::Message(&message)),
            json!({"event":"message","id":3,"from":"alice","sent_at_ms":1_700_000_000_000u64,"body":"hi\x1b[2J\n\u{202e}"})
        );
        let receipt = Receipt {
            id: 9,
            status: Status::RecipientBusy,
        };
        let sent = Event::Sent {
            to: "bob",
            body: "x",
            receipt,
        };
        assert_eq!(
            parsed(&sent),
            json!({"event":"receipt","id":9,"to":"bob","status":"recipient_busy"})
        );
        let names = ["alice".to_owned()];
        assert_eq!(
            parsed(&Event::Users(&names)),
            json!({"event":"users","names":["alice"]})
        );
        assert_eq!(parsed(&Event::Shutdown), json!({"event":"shutdown"}));
        assert_eq!(
            parsed(&Event::Invalid("usage: send USER MESSAGE")),
            json!({"event":"error","message":"usage: send USER MESSAGE"})
        );
        assert_eq!(parsed(&Event::Help)["event"], "help");
    }

    #[test]
    fn every_status_has_the_name_the_readme_documents() {
        // The `status` values of the README's JSON schema, in wire order: a
        // status appended to the protocol fails here until it is documented.
        let documented = [
            "delivered",
            "not_connected",
            "queued",
            "too_large",
            "rate_limited",
            "recipient_busy",
            "invalid_recipient",
            "expired",
        ];
        let names: Vec<_> = Status::ALL.into_iter().map(status_name).collect();
        assert_eq!(names, documented);
    }

    #[test]
    fn input_is_json_or_plain() {
        assert_eq!(
            parse_input(r#"{"cmd":"send","to":"bob","body":" hi\nthere "}"#),
            Command::Send {
                to: "bob".into(),
                body: " hi\nthere ".into()
            }
        );
        assert_eq!(parse_input(r#" {"cmd":"users"} "#), Command::Users);
        assert_eq!(parse_input(r#"{"cmd":"exit"}"#), Command::Exit);
        assert_eq!(parse_input(r#"{"cmd":"help"}"#), Command::Help);
        assert_eq!(
            parse_input("send bob hi"),
            Command::Send {
                to: "bob".into(),
                body: "hi".into()
            }
        );
        assert_eq!(parse_input("EXIT"), Command::Exit);
        let fingerprint = crate::protocol::Fingerprint::new([0xfb; 32]);
        assert_eq!(
            parse_input(r#"{"cmd":"devices"}"#),
            Command::Devices(DevicesCommand::List)
        );
        assert_eq!(
            parse_input(&format!(
                r#"{{"cmd":"devices","op":"add","fingerprint":"{fingerprint}","label":"phone"}}"#
            )),
            Command::Devices(DevicesCommand::Add {
                fingerprint,
                label: "phone".into()
            })
        );
        assert_eq!(
            parse_input(r#"{"cmd":"devices","op":"remove","fingerprint":"SHA256:+/v"}"#),
            Command::Devices(DevicesCommand::Remove {
                prefix: "SHA256:+/v".into()
            })
        );
        for bad in [
            r#"{"cmd":"devices","op":"add","fingerprint":"SHA256:x","label":"phone"}"#,
            r#"{"cmd":"devices","op":"remove"}"#,
            r#"{"cmd":"devices","op":"rename"}"#,
            r#"{"cmd":"dance"}"#,
            r#"{"cmd":"send","to":"bob"}"#,
            r#"{"cmd":"send","to":"","body":"x"}"#,
            "{not json",
        ] {
            assert!(matches!(parse_input(bad), Command::Invalid(_)), "{bad}");
        }
    }

    #[test]
    fn del_and_c1_controls_are_escaped() {
        let line =
            escape_remaining_controls(serde_json::to_string("a\u{7f}b\u{9b}c\u{1b}").unwrap());
        assert_eq!(line, r#""a\u007fb\u009bc\u001b""#);
        let back: String = serde_json::from_str(&line).unwrap();
        assert_eq!(back, "a\u{7f}b\u{9b}c\u{1b}");
    }
}
