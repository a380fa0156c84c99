//! Ticket commands of the CLI: `keygen`, `ticket` (mint offline), `ticket inspect`, and the
//! secure first run's state directory. Each is a function the CLI enum calls in one line.

use std::path::{Path, PathBuf};
use std::time::SystemTime;
#[cfg(test)]
use std::time::UNIX_EPOCH;

use argh::FromArgs;
use fastpubsub_core::ticket::{self, Protocols, TicketBuf, limits};

use super::keys::{self, KeyError, MASTER_TOKEN_FILE, PUBLIC_KEY_FILE, SIGNING_KEY_FILE};
use super::request::{self, GrantRequest, IssueRequest};
use super::rfc3339;

/// Unix seconds of a wall-clock time (0 before 1970): [`crate::clock::unix_secs`].
pub use crate::clock::unix_secs as unix;

/// The state directory when `--state-dir` is not given: `$FASTPUBSUB_STATE_DIR`, else
/// `$XDG_STATE_HOME/fastpubsub`, else `$HOME/.local/state/fastpubsub`, else
/// `./fastpubsub-state`.
pub fn default_state_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("FASTPUBSUB_STATE_DIR") {
        return d;
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return d.join("fastpubsub");
    }
    if let Some(h) = var("HOME") {
        return h.join(".local/state/fastpubsub");
    }
    PathBuf::from("fastpubsub-state")
}

/// Create a ticket signing key pair (files written with mode 0600).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "keygen")]
pub struct KeygenArgs {
    /// directory for ticket-signing.key and ticket-public.key (default: the state dir)
    #[argh(option)]
    pub dir: Option<PathBuf>,
}

/// Generates the key pair; returns the exit code.
pub fn keygen(args: KeygenArgs) -> i32 {
    let dir = args.dir.unwrap_or_else(default_state_dir);
    match keys::keygen(&dir) {
        Ok((paths, pk)) => {
            println!(
                "signing key (keep secret, only on issuing relays): {}",
                paths.signing.display()
            );
            println!(
                "public key (give to every relay, --ticket-public-key): {}",
                paths.public.display()
            );
            println!("public key: {}", keys::to_hex(pk.as_bytes()));
            0
        }
        Err(e) => {
            eprintln!("keygen: {e}");
            1
        }
    }
}

/// Mint an access ticket offline with the signing key, or inspect one.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ticket")]
pub struct TicketArgs {
    #[argh(subcommand)]
    /// inspect <AT_…>: decode a ticket instead of minting one
    pub inspect: Option<TicketSub>,
    /// tenant id the grant applies to (repeatable)
    #[argh(option)]
    pub tenant: Vec<String>,
    /// channel pattern the ticket may publish to (repeatable), e.g. 'public.#'
    #[argh(option, long = "pub")]
    pub publish: Vec<String>,
    /// channel pattern the ticket may subscribe within (repeatable)
    #[argh(option)]
    pub sub: Vec<String>,
    /// lifetime: e.g. 90s, 30m, 1h, 24h (at most 24h; default 1h)
    #[argh(option, default = "String::from(\"1h\")")]
    pub ttl: String,
    /// allowed client network, CIDR (repeatable; default any)
    #[argh(option)]
    pub ip: Vec<String>,
    /// allowed browser Origin (repeatable; default any)
    #[argh(option)]
    pub origin: Vec<String>,
    /// ingress limit in KB/s, 8..=16384 (default 1024)
    #[argh(option)]
    pub ingress_kb: Option<u32>,
    /// egress limit in KB/s, 8..=16384 (default 4096)
    #[argh(option)]
    pub egress_kb: Option<u32>,
    /// signing key file (default: <state dir>/ticket-signing.key)
    #[argh(option)]
    pub signing_key: Option<PathBuf>,
}

/// Subcommands of `ticket`.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TicketSub {
    /// Decode a ticket and show its claims and validity.
    Inspect(InspectArgs),
}

/// Decode a ticket and show its claims and validity.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "inspect")]
pub struct InspectArgs {
    /// the token, AT_<id>_<secret>
    #[argh(positional)]
    pub token: String,
    /// public key file to check the signature (default: <state dir>/ticket-public.key if
    /// present)
    #[argh(option)]
    pub public_key: Option<PathBuf>,
}

/// Parses a TTL like `90s`, `30m`, `1h`, `24h` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("--ttl {text:?}: expected e.g. 90s, 30m, 1h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("--ttl {text:?}: unit must be s, m, h or d")),
    };
    let secs = n
        .checked_mul(mult)
        .ok_or_else(|| format!("--ttl {text:?}: too long"))?;
    if secs == 0 || secs > limits::MAX_TTL_SECS {
        return Err(format!("--ttl {text:?}: must be between 1s and 24h"));
    }
    Ok(secs)
}

/// Mints a ticket from `args` at `now`; the token (or an error).
pub fn mint(args: &TicketArgs, now: SystemTime) -> Result<String, String> {
    let now = unix(now);
    let ttl = parse_ttl(&args.ttl)?;
    if args.tenant.is_empty() {
        return Err("give at least one --tenant".into());
    }
    if args.publish.is_empty() && args.sub.is_empty() {
        return Err("give at least one --pub or --sub pattern".into());
    }
    let key_path = args
        .signing_key
        .clone()
        .unwrap_or_else(|| default_state_dir().join(SIGNING_KEY_FILE));
    let key = keys::read_signing_key(&key_path).map_err(|e| e.to_string())?;
    let req = IssueRequest {
        grants: vec![GrantRequest {
            tenants: args.tenant.clone(),
            publish: args.publish.clone(),
            subscribe: args.sub.clone(),
        }],
        ip_masks: args.ip.clone(),
        origins: args.origin.clone(),
        protocols: Protocols::ALL,
        ingress_kb_per_sec: args.ingress_kb,
        egress_kb_per_sec: args.egress_kb,
        expires_at: now + ttl,
        created_by: Some("cli".into()),
    };
    for (v, name) in [
        (args.ingress_kb, "--ingress-kb"),
        (args.egress_kb, "--egress-kb"),
    ] {
        if let Some(v) =
            v.filter(|v| !(limits::MIN_KB_PER_SEC..=limits::MAX_KB_PER_SEC).contains(v))
        {
            return Err(format!("{name} {v}: must be in [8, 16384]"));
        }
    }
    let id = keys::random::<16>().map_err(|e| e.to_string())?;
    let defaults = (
        request::DEFAULT_INGRESS_KB_PER_SEC,
        request::DEFAULT_EGRESS_KB_PER_SEC,
    );
    request::sign(&req, id, now, defaults, &key).map_err(|e| e.message)
}

/// Describes a token: its claims, and its validity when a public key is given.
pub fn inspect(
    token: &str,
    public_key: Option<&ed25519_dalek::VerifyingKey>,
    now: SystemTime,
) -> Result<String, String> {
    use std::fmt::Write as _;
    let now = unix(now);
    let (id, _) = ticket::split_token(token.trim()).map_err(|e| e.to_string())?;
    let mut raw = Box::new([0u8; limits::MAX_CLAIMS_LEN]);
    let c = ticket::decode_token_id(id, &mut raw).map_err(|e| e.to_string())?;
    let mut s = String::new();
    let _ = writeln!(s, "format version: {}", c.version());
    let _ = writeln!(s, "ticket id:      {}", keys::to_hex(c.ticket_id()));
    let _ = writeln!(s, "issued at:      {}", rfc3339::format(c.issued_at()));
    let _ = writeln!(
        s,
        "expires at:     {} (as issued; a refresh may extend it)",
        rfc3339::format(c.expires_at())
    );
    for (i, g) in c.grants().iter().enumerate() {
        let _ = writeln!(s, "grant {i}: tenants {:?}", g.tenants());
        let _ = writeln!(s, "         pub {:?}", g.publish());
        let _ = writeln!(s, "         sub {:?}", g.subscribe());
    }
    let masks: Vec<String> = c.ip_masks().iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "ip masks:       {}",
        if masks.is_empty() {
            "any".into()
        } else {
            masks.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "origins:        {}",
        if c.origins().is_empty() {
            "any".into()
        } else {
            c.origins().join(", ")
        }
    );
    let p = c.protocols();
    let mut names = Vec::new();
    if p.contains(Protocols::WEBSOCKET) {
        names.push("websocket");
    }
    if p.contains(Protocols::WEBTRANSPORT) {
        names.push("webtransport");
    }
    let _ = writeln!(s, "protocols:      {}", names.join(", "));
    let _ = writeln!(
        s,
        "ingress/egress: {} / {} KB/s",
        c.ingress_kb_per_sec(),
        c.egress_kb_per_sec()
    );
    let validity = match public_key {
        None => "signature not checked (no public key given)".to_owned(),
        Some(pk) => {
            let mut buf = Box::new(TicketBuf::new());
            match ticket::verify(token.trim(), pk, &mut buf, now) {
                Ok(_) => format!("VALID now ({}), signature checked", rfc3339::format(now)),
                Err(e) => format!("INVALID: {e}"),
            }
        }
    };
    let _ = writeln!(s, "validity:       {validity}");
    Ok(s)
}

/// Runs `ticket` (mint) or `ticket inspect`; returns the exit code.
pub fn ticket(args: TicketArgs, now: SystemTime) -> i32 {
    match &args.inspect {
        Some(TicketSub::Inspect(ia)) => {
            let path = ia.public_key.clone().or_else(|| {
                let p = default_state_dir().join(PUBLIC_KEY_FILE);
                p.exists().then_some(p)
            });
            let pk = match path.as_deref().map(keys::read_public_key).transpose() {
                Ok(pk) => pk,
                Err(e) => {
                    eprintln!("ticket inspect: {e}");
                    return 1;
                }
            };
            match inspect(&ia.token, pk.as_ref(), now) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("ticket inspect: {e}");
                    1
                }
            }
        }
        None => match mint(&args, now) {
            Ok(token) => {
                println!("{token}");
                0
            }
            Err(e) => {
                eprintln!("ticket: {e}");
                1
            }
        },
    }
}

/// Key material of a relay's state directory.
#[derive(Debug)]
pub struct StateFiles {
    /// The directory.
    pub dir: PathBuf,
    /// The ticket signing key.
    pub signing: ed25519_dalek::SigningKey,
    /// The REST master token.
    pub master_token: String,
    /// True when this call created the key material (a first run).
    pub created: bool,
}

/// Loads the state directory's signing key and master token, creating the directory
/// (0700), a signing key pair and a random master token (files 0600) when they are
/// missing. Existing files are never overwritten.
pub fn ensure_state(dir: &Path) -> Result<StateFiles, KeyError> {
    keys::create_private_dir(dir)?;
    let sk_path = dir.join(SIGNING_KEY_FILE);
    let master_path = dir.join(MASTER_TOKEN_FILE);
    let mut created = false;
    if !sk_path.exists() {
        keys::keygen(dir)?;
        created = true;
    }
    if !master_path.exists() {
        keys::write_secret_file(&master_path, &keys::generate_master_token()?)?;
        created = true;
    }
    Ok(StateFiles {
        dir: dir.to_owned(),
        signing: keys::read_signing_key(&sk_path)?,
        master_token: keys::read_master_token(&master_path)?,
        created,
    })
}

/// The text a first run prints: where the state is, the master token, a dev ticket and the
/// exact commands to try against `http_addr` (e.g. `127.0.0.1:8080`) at `now`.
/// `default_kb` is the (ingress, egress) KB/s a ticket gets when it asks for none, which
/// the dev ticket carries: stated here because a fast publisher hits it first.
pub fn first_run_banner(
    state: &StateFiles,
    http_addr: &str,
    dev_ticket: &str,
    exe: &str,
    now: u64,
    default_kb: (u32, u32),
) -> String {
    format!(
        "\
FastPubSub relay: secure first run. Created in {dir} (mode 0700, files 0600):
  ticket-signing.key, ticket-public.key, master.token
Master token (REST: Authorization: Bearer ...):
  {master}
Dev ticket: tenant `dev`, publish/subscribe `public.#`, valid 24 h, {ingress} KB/s in, {egress} KB/s out:
  {ticket}
Try it (two terminals):
  {exe} sub --url ws://{addr}/ws --token {ticket} dev 'public.#'
  {exe} pub --url ws://{addr}/ws --token {ticket} dev public.hello 'hi there'
Get a ticket over REST (valid 1 h):
  curl -s -X POST http://{addr}/v1/get-token -H 'Authorization: Bearer {master}' \\
    -H 'Content-Type: application/json' \\
    -d '{{\"right\":{{\"tenant_grants\":[{{\"tenant_ids\":[\"dev\"],\"allow_channels_pub\":[\"public.#\"],\"allow_channels_sub\":[\"public.#\"]}}],\"expires_at\":\"{exp}\"}}}}'
Mint offline: {exe} ticket --signing-key {dir}/ticket-signing.key --tenant t1 --pub 'public.#' --sub 'public.#' --ttl 1h
Other relays of the overlay only need {dir}/ticket-public.key (run --ticket-public-key FILE).
Rate limits per connection: a ticket that sets none (like the dev ticket) allows {ingress} KB/s
  of publish payload (over it: ERR:rate_limited) and {egress} KB/s of deliveries (over it:
  dropped and counted). A faster publisher needs a ticket that asks for more, up to {max}:
  \"ingress_kb_per_sec\" in the REST body or --ingress-kb (2,000 msgs/s of 1 KiB: 2000).
Labs only: --insecure-no-auth turns every check off.
",
        ingress = default_kb.0,
        egress = default_kb.1,
        max = fastpubsub_core::ticket::limits::MAX_KB_PER_SEC,
        dir = state.dir.display(),
        master = state.master_token,
        ticket = dev_ticket,
        addr = http_addr,
        exp = rfc3339::format(now + 3600),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("1d"), Ok(86_400));
        for bad in ["25h", "0s", "", "h", "1w", "-1h", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_mint_and_inspect() {
        let dir = std::env::temp_dir().join(format!(
            "fastpubsub-state-{}-{}",
            std::process::id(),
            keys::to_hex(&keys::random::<4>().expect("must succeed"))
        ));
        let s = ensure_state(&dir).expect("must succeed");
        assert!(s.created);
        let again = ensure_state(&dir).expect("must succeed");
        assert!(!again.created, "second run reuses the files");
        assert_eq!(again.master_token, s.master_token);
        assert_eq!(again.signing.to_bytes(), s.signing.to_bytes());

        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_796_200_000);
        let args = TicketArgs {
            inspect: None,
            tenant: vec!["t1".into()],
            publish: vec!["public.#".into()],
            sub: vec!["public.#".into()],
            ttl: "1h".into(),
            ip: vec![],
            origin: vec![],
            ingress_kb: None,
            egress_kb: Some(9),
            signing_key: Some(dir.join(SIGNING_KEY_FILE)),
        };
        let token = mint(&args, now).expect("must succeed");
        let pk = s.signing.verifying_key();
        let text = inspect(&token, Some(&pk), now).expect("must succeed");
        assert!(text.contains("tenants [\"t1\"]"), "{text}");
        assert!(text.contains("1024 / 9 KB/s"), "{text}");
        assert!(text.contains("VALID now"), "{text}");
        let later = now + std::time::Duration::from_secs(3600);
        assert!(
            inspect(&token, Some(&pk), later)
                .expect("must succeed")
                .contains("INVALID: ticket expired")
        );
        assert!(
            inspect(&token, None, now)
                .expect("must succeed")
                .contains("not checked")
        );
        assert!(inspect("AT_zz_00", None, now).is_err());
        let bad = TicketArgs {
            egress_kb: Some(7),
            ..args
        };
        assert!(
            mint(&bad, now)
                .expect_err("must fail")
                .contains("--egress-kb 7")
        );
        let banner = first_run_banner(
            &s,
            "127.0.0.1:8080",
            &token,
            "fastpubsub-relay",
            0,
            (1024, 4096),
        );
        assert!(banner.contains(&s.master_token) && banner.contains(&token));
        assert!(banner.contains("1024 KB/s in, 4096 KB/s out:"), "{banner}");
        std::fs::remove_dir_all(&dir).expect("must succeed");
    }
}
