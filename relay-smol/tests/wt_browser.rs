//! Browser test: Debian's headless `chromium` opens a page that connects to a relay process
//! with `new WebTransport(url + "?at=" + ticket, {serverCertificateHashes})` (the hash from
//! `GET /v1/wt-cert-hash`), subscribes on the control stream, a line and datagrams,
//! publishes, and reports what it received back to this test over HTTP.
//!
//! Needs `/usr/bin/chromium` (CI installs it); override with `CHROMIUM=…`. QUIC stays on
//! (no `--disable-quic`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(45);

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>wt</title><pre id="log"></pre>
<script>
const q = new URLSearchParams(location.search);
const log = (m) => { document.getElementById("log").textContent += m + "\n"; };
const enc = new TextEncoder(), dec = new TextDecoder();
function frame(kind, bytes) {
  const f = new Uint8Array(5 + bytes.length);
  f[0] = kind; new DataView(f.buffer).setUint32(1, bytes.length); f.set(bytes, 5); return f;
}
function publishV1(tenant, channel, payload) {
  const t = enc.encode(tenant), c = enc.encode(channel), p = enc.encode(payload);
  const f = new Uint8Array(4 + t.length + c.length + p.length);
  const v = new DataView(f.buffer);
  v.setUint16(0, t.length); f.set(t, 2); v.setUint16(2 + t.length, c.length);
  f.set(c, 4 + t.length); f.set(p, 4 + t.length + c.length); return f;
}
function deliver(b) { // 0x01 | str16 tenant | str16 channel | u32 len | payload | ...
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = 1; const tl = v.getUint16(o); o += 2 + tl;
  const cl = v.getUint16(o); const channel = dec.decode(b.subarray(o + 2, o + 2 + cl)); o += 2 + cl;
  const pl = v.getUint32(o); const payload = dec.decode(b.subarray(o + 4, o + 4 + pl));
  return channel + "=" + payload;
}
// Reads `len u32 | payload` (lines) or `kind | len | payload` (control) frames.
async function* frames(reader, withKind) {
  let buf = new Uint8Array(0);
  const h = withKind ? 5 : 4;
  for (;;) {
    while (buf.length >= h) {
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(withKind ? 1 : 0);
      if (buf.length < h + len) break;
      yield [withKind ? buf[0] : 0, buf.slice(h, h + len)];
      buf = buf.slice(h + len);
    }
    const { value, done } = await reader.read();
    if (done) return;
    const n = new Uint8Array(buf.length + value.length); n.set(buf); n.set(value, buf.length); buf = n;
  }
}
async function main() {
  const got = { ctl: "", line: "", dg: "", lineFirst: "" };
  const hash = await (await fetch(q.get("hash"))).json();
  const wt = new WebTransport(q.get("wt") + "?at=" + encodeURIComponent(q.get("at")), {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash.value) }],
  });
  await wt.ready;
  log("ready");
  const bidi = await wt.createBidirectionalStream();
  const w = bidi.writable.getWriter();
  const ctl = frames(bidi.readable.getReader(), true);
  const send = (kind, bytes) => w.write(frame(kind, bytes));
  (async () => {
    const r = wt.incomingUnidirectionalStreams.getReader();
    for (;;) {
      const { value: s, done } = await r.read(); if (done) return;
      let first = true;
      for await (const [, p] of frames(s.getReader(), false)) {
        if (first) { got.lineFirst = dec.decode(p); first = false; } else { got.line = deliver(p); }
      }
    }
  })();
  (async () => {
    const r = wt.datagrams.readable.getReader();
    for (;;) { const { value, done } = await r.read(); if (done) return; got.dg = deliver(value); }
  })();
  const oks = [];
  for (const s of ["SUB:dev:public.ctl.#", "SUB:dev:public.line.#:U:0:0", "SUB:dev:public.dg.#:D"]) {
    await send(1, enc.encode(s));
    const { value: [kind, p] } = await ctl.next();
    oks.push(dec.decode(p));
  }
  log(oks.join(","));
  (async () => { for await (const [k, p] of ctl) { if (k === 0) got.ctl = deliver(p); } })();
  await send(0, publishV1("dev", "public.ctl.x", "c1"));
  await send(0, publishV1("dev", "public.line.x", "l1"));
  for (let i = 0; i < 50 && !got.dg; i++) {
    await send(0, publishV1("dev", "public.dg.x", "d" + i));
    await new Promise((r) => setTimeout(r, 100));
  }
  for (let i = 0; i < 50 && !(got.ctl && got.line); i++) await new Promise((r) => setTimeout(r, 100));
  const res = new URLSearchParams({ oks: oks.join(","), ...got });
  await fetch("/result?" + res.toString());
}
main().catch((e) => fetch("/result?" + new URLSearchParams({ error: String(e) }).toString()));
</script>"#;

fn serve_page(listener: TcpListener, results: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (ctype, body) = if let Some(q) = path.strip_prefix("/result?") {
                let _ = results.send(q.to_string());
                ("text/plain", "ok".to_string())
            } else {
                ("text/html; charset=utf-8", PAGE.to_string())
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

fn decode_query(q: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        let s = s.replace('+', " ");
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

#[test]
fn chromium_connects_with_certificate_hash_and_gets_control_line_and_datagrams() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: install Debian's chromium or set CHROMIUM"
    );
    let dir = std::env::temp_dir().join(format!("fastpubsub-wt-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut relay = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
        .args(["run", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args([
            "--wt-listen",
            "127.0.0.1:0",
            "--state-dir",
            dir.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let (mut ws, mut wt, mut ticket) = (None::<SocketAddr>, None::<SocketAddr>, None::<String>);
    let addr_in =
        |l: &str| -> Option<SocketAddr> { l.split("://").nth(1)?.split('/').next()?.parse().ok() };
    while ws.is_none() || wt.is_none() || ticket.is_none() {
        let l = lines.next().expect("relay output").unwrap();
        if l.contains("listening on") {
            ws = addr_in(&l);
        } else if l.contains("webtransport on") {
            wt = addr_in(&l);
        } else if let Some(t) = l
            .split_whitespace()
            .find(|w| w.starts_with("AT_") && w.len() > 40)
        {
            ticket = Some(t.to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (ws, wt, ticket) = (ws.unwrap(), wt.unwrap(), ticket.unwrap());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let page_addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    serve_page(listener, tx);
    let url = format!(
        "http://{page_addr}/page.html?wt=https://127.0.0.1:{}/&at={ticket}&hash=http://{ws}/v1/wt-cert-hash",
        wt.port()
    );
    let profile = dir.join("chromium-profile");
    let mut browser = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--remote-debugging-port=0") // keeps headless Chromium running until killed
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    let result = rx.recv_timeout(WAIT);
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let result = result.unwrap_or_else(|_| panic!("no result from the page within {WAIT:?}"));
    let got: std::collections::HashMap<String, String> =
        decode_query(&result).into_iter().collect();
    eprintln!("page result after {:?}: {got:?}", start.elapsed());
    assert!(!got.contains_key("error"), "page failed: {got:?}");
    assert_eq!(
        got["oks"],
        "OK:SUB:dev:public.ctl.#,OK:SUB:dev:public.line.#:U:1,OK:SUB:dev:public.dg.#"
    );
    assert_eq!(got["ctl"], "public.ctl.x=c1");
    assert_eq!(got["lineFirst"], "U:1");
    assert_eq!(got["line"], "public.line.x=l1");
    assert!(got["dg"].starts_with("public.dg.x=d"), "{got:?}");
}
