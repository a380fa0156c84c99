//! Interop peer on the official Rust SDK (`fastpubsub-sdk` 0.3.4), driven over stdin/stdout
//! by the SDK tests in this repository (`sdk/js/test/interop.test.js`).
//!
//! Usage: `fps-interop-rust-sdk --url ws://HOST/ws --token AT_…`
//!
//! The line protocol is the same for every interop peer (the Python one is
//! `sdk/python/tests/interop_peer.py`), so one test can drive several SDKs. Fields are
//! separated by one space; names contain no whitespace (the contract forbids it) and
//! payloads travel as lowercase hex (`-` for an empty payload).
//!
//! stdin (commands):
//!   sub TENANT PATTERN            → `ok-sub TENANT PATTERN` once the relay confirmed it
//!   unsub TENANT PATTERN          → `ok-unsub TENANT PATTERN`
//!   pub TENANT CHANNEL HEX [MODE] → `pub-ok` (MODE: broadcast | one-low-latency | one-random)
//!   quit                          → exits 0
//! stdout (events): `ready` after connecting, the answers above,
//!   `msg TENANT CHANNEL PATTERN HEX` per delivered message and pattern,
//!   `err TEXT` for any error the SDK reports.
//!
//! To add a transport (e.g. WebTransport behind the `webtransport` feature), build another
//! client in `connect` and keep the line protocol.

use std::collections::HashMap;
use std::process::ExitCode;

use fastpubsub_sdk::client::FastPubSub;
use fastpubsub_sdk::transport::{
    PublishDeliveryMode, PublishOptions, SubscribeOptions, WebSocketTransport,
};
use fastpubsub_sdk::WebSocketEvent;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

struct Args {
    url: String,
    token: String,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut token = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => url = it.next(),
            "--token" => token = it.next(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        token: token.ok_or("--token is required")?,
    })
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex payload ({} digits)", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("bad hex at {i}"))
        })
        .collect()
}

fn mode(s: Option<&str>) -> Result<PublishDeliveryMode, String> {
    match s.unwrap_or("broadcast") {
        "broadcast" => Ok(PublishDeliveryMode::Broadcast),
        "one-low-latency" => Ok(PublishDeliveryMode::DeliverOneLowLatency),
        "one-random" => Ok(PublishDeliveryMode::DeliverOneRandom),
        other => Err(format!("unknown mode {other:?}")),
    }
}

async fn connect(
    args: &Args,
    events: mpsc::Sender<WebSocketEvent>,
) -> Result<FastPubSub<WebSocketTransport>, String> {
    let api_base = args
        .url
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1)
        .trim_end_matches("/ws")
        .to_owned();
    fastpubsub_sdk::create_web_socket("interop", args.token.clone())
        .endpoint(args.url.clone())
        .api_base(api_base)
        .on_websocket_event(events)
        .build()
        .await
        .map_err(|e| format!("connect {}: {e}", args.url))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (ev_tx, mut ev_rx) = mpsc::channel::<WebSocketEvent>(1024);
    let mut client = match connect(&args, ev_tx).await {
        Ok(c) => c,
        Err(e) => {
            println!("err {e}");
            return ExitCode::from(2);
        }
    };
    // Events: confirmations and errors go to stdout as lines.
    tokio::spawn(async move {
        while let Some(ev) = ev_rx.recv().await {
            match ev {
                WebSocketEvent::SubscriptionConfirmed {
                    tenant,
                    channel_pattern,
                } => println!("ok-sub {tenant} {channel_pattern}"),
                WebSocketEvent::UnsubscriptionConfirmed {
                    tenant,
                    channel_pattern,
                } => println!("ok-unsub {tenant} {channel_pattern}"),
                WebSocketEvent::Error(e) => println!("err {}", format!("{e:?}").replace('\n', " ")),
                _ => {}
            }
        }
    });
    println!("ready");

    let mut readers: HashMap<(String, String), tokio::task::JoinHandle<()>> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let f: Vec<&str> = line.split_whitespace().collect();
        let result: Result<(), String> = match f.as_slice() {
            ["sub", tenant, pattern] => {
                match client
                    .subscribe(tenant, pattern, &SubscribeOptions::default())
                    .await
                {
                    Ok(mut rx) => {
                        let task = tokio::spawn(async move {
                            while let Some(m) = rx.recv().await {
                                println!(
                                    "msg {} {} {} {}",
                                    m.tenant,
                                    m.channel,
                                    m.matched_pattern,
                                    hex(&m.payload)
                                );
                            }
                        });
                        if let Some(old) =
                            readers.insert((tenant.to_string(), pattern.to_string()), task)
                        {
                            old.abort();
                        }
                        Ok(())
                    }
                    Err(e) => Err(format!("subscribe: {e}")),
                }
            }
            ["unsub", tenant, pattern] => {
                if let Some(t) = readers.remove(&(tenant.to_string(), pattern.to_string())) {
                    t.abort();
                }
                client
                    .unsubscribe(tenant, pattern)
                    .await
                    .map_err(|e| format!("unsubscribe: {e}"))
            }
            ["pub", tenant, channel, payload, rest @ ..] => {
                let opts = mode(rest.first().copied()).map(|delivery| PublishOptions { delivery });
                match (opts, unhex(payload)) {
                    (Ok(opts), Ok(bytes)) => client
                        .publish_with_options(tenant, channel, &bytes, &opts)
                        .await
                        .map(|()| println!("pub-ok"))
                        .map_err(|e| format!("publish: {e}")),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            ["quit"] => break,
            [] => Ok(()),
            _ => Err(format!("unknown command {line:?}")),
        };
        if let Err(e) = result {
            println!("err {e}");
        }
    }
    ExitCode::SUCCESS
}
