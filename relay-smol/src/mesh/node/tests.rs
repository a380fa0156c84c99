use std::net::SocketAddr;

use fastpubsub_core::mesh::{Hello, PeerInfo, Peers};

use super::*;
use crate::mesh::limits::{MAX_PEERS, PEER_TTL_US};
use crate::mesh::time::SEC;

fn env() -> NodeEnv {
    NodeEnv {
        now_us: 0,
        unix_ms: 1_700_000_000_000,
        seed: 1,
        identity_check: |cert, name| cert.as_ref() == name.as_bytes(),
    }
}

fn node(name: &str, seeds: &[&str]) -> MeshNode {
    let mut cfg = MeshConfig::new(name, "127.0.0.1:7000".parse().expect("addr"));
    cfg.seeds = seeds.iter().map(|s| s.parse().expect("seed")).collect();
    MeshNode::new(cfg, env()).expect("node")
}

#[test]
fn node_is_small_enough_to_move() {
    // The routing table is boxed; the node itself stays small.
    assert!(
        std::mem::size_of::<MeshNode>() < 4096,
        "{}",
        std::mem::size_of::<MeshNode>()
    );
    assert!(
        std::mem::size_of::<RT>() < 256 * 1024,
        "{}",
        std::mem::size_of::<RT>()
    );
}

#[test]
fn ticket_snapshot_kind_is_the_wire_tag() {
    assert_eq!(
        KIND_NAMES.get(TICKET_SNAPSHOT_KIND),
        Some(&"ticket_snapshot")
    );
}

fn gossip(node: &mut MeshNode, now: u64, names: &[String]) {
    for batch in names.chunks(mesh::MAX_GOSSIP) {
        let mut peers = heapless::Vec::new();
        for n in batch {
            let _ = peers.push(PeerInfo {
                name: n,
                addr: "127.0.0.1:9",
                region: "",
            });
        }
        node.on_peers(&Peers { peers }, now);
    }
}

#[test]
fn learned_peers_and_names_are_evicted() {
    let t0 = 0;
    let mut node = node("me", &["seed@127.0.0.1:7000"]);
    gossip(&mut node, t0, &["first".to_owned()]);
    // One at a time (a name whose relay id collides is skipped) up to the bound.
    for i in 0..2 * MAX_PEERS {
        if node.peers.len() >= MAX_PEERS {
            break;
        }
        gossip(&mut node, t0 + SEC, &[format!("r{i}")]);
    }
    assert_eq!(node.peers.len(), MAX_PEERS);
    assert_eq!(node.stats.peers_evicted, 0);
    // Full: a newcomer takes the place of the one not heard of for longest.
    let late = "late".to_owned();
    gossip(&mut node, t0 + 2 * SEC, std::slice::from_ref(&late));
    assert!(node.peers.contains_key("late"));
    assert!(!node.peers.contains_key("first"));
    assert_eq!(node.peers.len(), MAX_PEERS);
    assert_eq!(node.stats.peers_evicted, 1);
    // Named again in gossip: heard of. The others go after PEER_TTL; the seed stays.
    let kept = node
        .peers
        .keys()
        .find(|n| n.starts_with('r'))
        .cloned()
        .expect("a learned peer");
    gossip(&mut node, t0 + PEER_TTL_US, std::slice::from_ref(&kept));
    node.evict_peers(t0 + SEC + PEER_TTL_US - 1_000);
    assert_eq!(node.peers.len(), MAX_PEERS);
    node.evict_peers(t0 + SEC + PEER_TTL_US);
    let mut left: Vec<String> = node.peer_names().into_keys().collect();
    left.sort_unstable();
    let mut want = vec!["late".to_owned(), "seed".to_owned(), kept.clone()];
    want.sort_unstable();
    assert_eq!(left, want);
    assert_eq!(node.stats.peers_evicted as usize, MAX_PEERS - 2);
    // The names of the dropped peers went with them (no route to any).
    assert!(node.stats.names_evicted > 0);
    assert_eq!(node.names.len(), node.peers.len() + 1);
}

/// Drains a node's outputs: (transmits, events).
fn drain(n: &mut MeshNode) -> (Vec<MeshTransmit>, Vec<MeshEvent>) {
    let mut t = Vec::new();
    while let Some(x) = n.poll_transmit() {
        t.push(x);
    }
    let mut e = Vec::new();
    while let Some(x) = n.poll_event() {
        e.push(x);
    }
    (t, e)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn a_seed_is_dialled_and_greeted_and_a_false_name_is_refused() {
    let mut a = node("a", &["b@10.0.0.2:7000"]);
    a.handle_timeout(0);
    let (_, ev) = drain(&mut a);
    assert_eq!(
        ev,
        vec![MeshEvent::Dial {
            peer: "b".into(),
            addr: addr("10.0.0.2:7000")
        }]
    );
    a.handle_dialled("b", Ok(LinkId(1)), 0);
    a.handle_link_up(
        LinkId(1),
        LinkSide::Dialled,
        addr("10.0.0.2:7000"),
        Some(CertificateDer::from(b"b".to_vec())),
        10_000,
    );
    let (tx, _) = drain(&mut a);
    assert_eq!(tx.len(), 1, "a Hello");
    assert!(matches!(
        mesh::decode(&tx[0].bytes),
        Ok(Message::Hello(h)) if h.name == "a"
    ));
    // A second link whose certificate names someone else, claiming to be "c".
    a.handle_link_up(
        LinkId(2),
        LinkSide::Accepted,
        addr("10.0.0.9:7000"),
        Some(CertificateDer::from(b"x".to_vec())),
        20_000,
    );
    let mut buf = [0u8; 512];
    let hello = Message::Hello(Hello {
        version: mesh::PROTOCOL_VERSION,
        name: "c",
        region: "",
        position: None,
        edge_url: "",
        mesh_addr: "",
    });
    let f = mesh::encode(&hello, &mut buf).expect("encode").to_vec();
    drain(&mut a);
    a.handle_control(LinkId(2), &f, 30_000);
    let (_, ev) = drain(&mut a);
    assert_eq!(
        ev,
        vec![MeshEvent::Close {
            link: LinkId(2),
            code: mesh::close::PROTOCOL,
            reason: "certificate does not name this relay"
        }]
    );
    assert_eq!(a.status(30_000).counters.mesh.refused_identity, 1);
}

#[test]
fn a_refused_probe_is_not_a_loss_and_refusals_are_counted() {
    let mut a = node("a", &[]);
    a.handle_link_up(
        LinkId(1),
        LinkSide::Accepted,
        addr("10.0.0.2:7000"),
        Some(CertificateDer::from(b"b".to_vec())),
        0,
    );
    let mut buf = [0u8; 512];
    let hello = Message::Hello(Hello {
        version: mesh::PROTOCOL_VERSION,
        name: "b",
        region: "",
        position: None,
        edge_url: "",
        mesh_addr: "10.0.0.2:7000",
    });
    let f = mesh::encode(&hello, &mut buf).expect("encode").to_vec();
    a.handle_control(LinkId(1), &f, 0);
    drain(&mut a);
    a.handle_timeout(0);
    let (tx, _) = drain(&mut a);
    let probe = tx
        .iter()
        .find(|t| t.kind == TransmitKind::Datagram)
        .expect("a probe")
        .clone();
    a.handle_refused(&probe, Refused::QueueFull, 0);
    let st = a.status(0);
    assert_eq!(st.counters.mesh.datagrams_refused, 1);
    let link = st.links.first().expect("the link");
    assert_eq!(link.probes_sent, 0, "the refused probe never left");
    // Control frames refused are counted too, and not as sent bytes.
    a.handle_interest("acme", "chat.#", true, 0);
    let (tx, _) = drain(&mut a);
    let control = tx
        .iter()
        .find(|t| t.kind == TransmitKind::Control)
        .expect("the interest update")
        .clone();
    let sent_before: u64 = a
        .status(0)
        .counters
        .control_by_kind
        .values()
        .map(|v| v[0])
        .sum();
    a.handle_refused(&control, Refused::NoLink, 0);
    let st = a.status(0);
    assert_eq!(st.counters.mesh.control_refused, 1);
    let sent_after: u64 = st.counters.control_by_kind.values().map(|v| v[0]).sum();
    assert_eq!(sent_before - sent_after, control.bytes.len() as u64 + 4);
}
