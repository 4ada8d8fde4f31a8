//! Writes the seed plan and the starting corpus of both targets: one frame of every
//! message type, and sync payloads that carry real changes to the seed plan.
//! Run from the repository root: `cargo run --manifest-path fuzz/Cargo.toml --bin seed-corpus`.

use std::collections::BTreeMap;
use std::path::Path;

use automerge::sync::{self, SyncDoc};
use sync_core::protocol::{self, DocumentId, HeadsAtTime, Message, PeerMetadata};
use sync_core::schema::{self, Goal, Leefdomein, Plan};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed_path = root.join("seed_plan.automerge");
    if std::fs::metadata(&seed_path).map(|m| m.len()).unwrap_or(0) == 0 {
        std::fs::write(&seed_path, buurtsync_fuzz::new_seed_plan().save()).expect("write seed");
        println!(
            "wrote {}; rebuild and run again for the corpus",
            seed_path.display()
        );
        return;
    }
    let server = buurtsync_fuzz::seed_document();
    let mut client = server.fork();
    schema::update::<Plan>(&mut client, |p| {
        p.goals
            .push(Goal::new(Leefdomein::Financien, "Schulden in kaart"));
    })
    .expect("edit");
    // A whole sync conversation; every message the client sends is a seed.
    let (mut server_doc, mut s_state, mut c_state) =
        (server.fork(), sync::State::new(), sync::State::new());
    let mut payloads = Vec::new();
    for _ in 0..4 {
        if let Some(m) = client.generate_sync_message(&mut c_state) {
            let bytes = m.encode();
            payloads.push(bytes.clone());
            server_doc
                .receive_sync_message(&mut s_state, sync::Message::decode(&bytes).expect("decode"))
                .expect("server applies");
        }
        if let Some(m) = server_doc.generate_sync_message(&mut s_state) {
            client
                .receive_sync_message(&mut c_state, m)
                .expect("client applies");
        }
    }
    let id = DocumentId::from_bytes([7; 16]);
    let mut new_heads = BTreeMap::new();
    new_heads.insert(
        "storage-1".to_string(),
        HeadsAtTime {
            heads: protocol::encode_heads(&client.get_heads()),
            timestamp: 1,
        },
    );
    let mut messages = vec![
        Message::Join {
            sender_id: "peer".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("storage-1".into()),
                is_ephemeral: Some(false),
                capabilities: None,
            }),
            supported_protocol_versions: vec!["1".into()],
        },
        Message::Peer {
            sender_id: "server".into(),
            target_id: "peer".into(),
            peer_metadata: None,
            selected_protocol_version: "1".into(),
        },
        Message::DocUnavailable {
            sender_id: "peer".into(),
            target_id: "server".into(),
            document_id: id,
        },
        Message::Ephemeral {
            sender_id: "peer".into(),
            target_id: "server".into(),
            count: 3,
            session_id: "s".into(),
            document_id: id,
            data: vec![0xa0],
        },
        Message::RemoteSubscriptionChange {
            sender_id: "peer".into(),
            target_id: "server".into(),
            add: vec!["storage-1".into()],
            remove: vec![],
        },
        Message::RemoteHeadsChanged {
            sender_id: "peer".into(),
            target_id: "server".into(),
            document_id: id,
            new_heads,
        },
        Message::Error {
            sender_id: Some("peer".into()),
            target_id: None,
            message: "oops".into(),
        },
        Message::Leave {
            sender_id: "peer".into(),
        },
    ];
    for data in &payloads {
        messages.push(Message::Sync {
            sender_id: "peer".into(),
            target_id: "server".into(),
            document_id: id,
            data: data.clone(),
        });
        messages.push(Message::Request {
            sender_id: "peer".into(),
            target_id: "server".into(),
            document_id: id,
            data: data.clone(),
        });
    }
    let codec = root.join("corpus/codec");
    let apply = root.join("corpus/apply");
    std::fs::create_dir_all(&codec).expect("mkdir");
    std::fs::create_dir_all(&apply).expect("mkdir");
    for (i, msg) in messages.iter().enumerate() {
        let bytes = protocol::encode(msg);
        std::fs::write(
            codec.join(format!("seed-{i:02}-{}", msg.type_name())),
            &bytes,
        )
        .expect("write");
        if matches!(msg, Message::Sync { .. } | Message::Request { .. }) {
            let mut framed = vec![0u8];
            framed.extend_from_slice(&bytes);
            std::fs::write(apply.join(format!("seed-frame-{i:02}")), framed).expect("write");
        }
    }
    for (i, data) in payloads.iter().enumerate() {
        let mut raw = vec![1u8];
        raw.extend_from_slice(data);
        std::fs::write(apply.join(format!("seed-payload-{i:02}")), raw).expect("write");
    }
    // Summaries: a few documents with zero, one and two heads; the first byte picks
    // the principal (see `buurtsync_fuzz::summary`).
    let summary = root.join("corpus/summary");
    std::fs::create_dir_all(&summary).expect("mkdir");
    let plan = buurtsync_fuzz::seed_document();
    let heads = plan.get_heads();
    let docs = [
        (DocumentId::from_bytes([0x00; 16]), heads.clone()),
        (DocumentId::from_bytes([0x13; 16]), heads.clone()),
        (DocumentId::from_bytes([0x26; 16]), Vec::new()),
        (
            DocumentId::from_bytes([0x31; 16]),
            vec![heads[0], automerge::ChangeHash([9; 32])],
        ),
    ];
    for (i, frame) in protocol::summary_frames("peer", "server", docs)
        .iter()
        .enumerate()
    {
        for shape in [0u8, 1, 6] {
            let mut bytes = vec![shape];
            bytes.extend_from_slice(&protocol::encode(frame));
            std::fs::write(summary.join(format!("seed-{i:02}-shape-{shape}")), bytes)
                .expect("write");
        }
    }
    println!(
        "wrote {} codec and {} apply seeds",
        messages.len(),
        messages.len() + payloads.len()
    );
}
