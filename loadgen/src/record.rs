//! The recording a replay sends: the "assen" live phase's documents as they stand when
//! it starts, and the writers' sync messages of its edits, in the order they were made.
//!
//! Made once, in this process, without any server (`buurtsync-loadgen record`): the
//! same documents, devices and schema-valid edits as `run`'s live phase (plans edited
//! by the professionals of their wijk, activiteiten by every device of it), each
//! device editing in turn. A replay is only valid against a server holding exactly the
//! recorded documents, so the recording carries every document's initial state and id,
//! and `replay` uploads them to the fresh server first.
//!
//! Each edit is made on the document as every earlier edit left it (a device builds on
//! what it has received), so a document's recorded history is one line: change `k`
//! depends on change `k − 1`. The writer's frame is the sync message a device in a
//! settled session sends after one local change: its heads (the new change), the
//! change's dependencies as the last heads both sides shared, a bloom filter holding
//! the new change, and the change itself.

use std::collections::HashMap;
use std::path::Path;

use automerge::sync::{self, BloomFilter, Have, MessageVersion};
use automerge::{ActorId, Automerge, ChangeHash};
use serde::{Deserialize, Serialize};
use sync_core::protocol::DocumentId;

use crate::workload::{self, Role, Sizes};
use crate::Error;

/// Version of the recording format; `replay` refuses any other.
pub const FORMAT: u32 = 1;

/// A recorded document: where it lives and what it holds when the replay starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecDoc {
    /// bs58check document id (the same id on every server the recording is replayed on).
    pub id: String,
    pub wijk: usize,
    pub is_plan: bool,
    /// `Automerge::save` of the initial state, hex.
    pub initial: String,
    /// Heads of the initial state, hex.
    pub initial_heads: Vec<String>,
}

/// A recorded device (one connection in the replay).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecDevice {
    pub name: String,
    /// "professional" or "volunteer" (picks the token).
    pub role: String,
    pub wijk: usize,
}

/// One recorded change: who wrote it, to which document, and the writer's frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecChange {
    /// Index into `devices`.
    pub device: usize,
    /// Index into `documents`.
    pub doc: usize,
    /// The change's hash, hex.
    pub hash: String,
    /// The automerge sync message the writer sends (the `data` of a `sync` frame), hex.
    pub sync: String,
}

/// A whole recording (JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recording {
    pub format: u32,
    pub sizes: Sizes,
    pub history: usize,
    pub seed: u64,
    pub documents: Vec<RecDoc>,
    pub devices: Vec<RecDevice>,
    pub changes: Vec<RecChange>,
}

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    pub sizes: Sizes,
    pub history: usize,
    pub changes: usize,
    pub seed: u64,
}

fn hex_bytes(s: &str, what: &str) -> Result<Vec<u8>, Error> {
    hex::decode(s).map_err(|e| Error::Setup(format!("recording: bad hex in {what}: {e}")))
}

impl RecDevice {
    pub fn role(&self) -> Role {
        if self.role == Role::Volunteer.as_str() {
            Role::Volunteer
        } else {
            Role::Professional
        }
    }
}

impl RecDoc {
    pub fn document_id(&self) -> Result<DocumentId, Error> {
        self.id
            .parse()
            .map_err(|e| Error::Setup(format!("recording: bad document id {}: {e:?}", self.id)))
    }

    pub fn load(&self) -> Result<Automerge, Error> {
        Automerge::load(&hex_bytes(&self.initial, "initial")?)
            .map_err(|e| Error::Setup(format!("recording: document {}: {e}", self.id)))
    }

    pub fn heads(&self) -> Result<Vec<ChangeHash>, Error> {
        self.initial_heads.iter().map(|h| parse_hash(h)).collect()
    }
}

impl RecChange {
    pub fn hash(&self) -> Result<ChangeHash, Error> {
        parse_hash(&self.hash)
    }

    pub fn sync_bytes(&self) -> Result<Vec<u8>, Error> {
        hex_bytes(&self.sync, "sync")
    }
}

pub fn parse_hash(s: &str) -> Result<ChangeHash, Error> {
    s.parse()
        .map_err(|e| Error::Setup(format!("recording: bad change hash {s}: {e:?}")))
}

/// The documents a device holds: plans and activiteiten of its wijk for a
/// professional, activiteiten only for a volunteer (as in `workload::holdings`).
pub fn holds(device: &RecDevice, doc: &RecDoc) -> bool {
    device.wijk == doc.wijk && (!doc.is_plan || device.role() == Role::Professional)
}

/// Whether `device` edits `doc` in the live phase (professionals plans, volunteers
/// activiteiten, each in their own wijk).
fn edits(device: &RecDevice, doc: &RecDoc) -> bool {
    device.wijk == doc.wijk && (doc.is_plan == (device.role() == Role::Professional))
}

/// A device's actor id: fixed by the seed and the device, so two recordings with the
/// same settings are the same.
fn actor(seed: u64, device: usize) -> ActorId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[8..].copy_from_slice(&(device as u64 + 1).to_be_bytes());
    ActorId::from(bytes)
}

/// The sync message a writer in a settled session sends after one local change `c`
/// whose dependencies the server already holds.
pub fn writer_message(change: &automerge::Change) -> Vec<u8> {
    sync::Message {
        heads: vec![change.hash()],
        need: Vec::new(),
        have: vec![Have {
            last_sync: change.deps().to_vec(),
            bloom: BloomFilter::from_hashes([change.hash()].iter()),
        }],
        changes: vec![change.raw_bytes().to_vec()].into(),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode()
}

/// Builds a recording: the documents of `create` (with `history` changes each), the
/// devices of the live phase, and `changes` edits, the devices taking turns in a
/// shuffled order each round.
pub fn record(settings: &RecordSettings) -> Result<Recording, Error> {
    let sizes = settings.sizes;
    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let mut documents = Vec::new();
    let mut docs = Vec::new();
    for w in 0..sizes.wijken {
        let wijk = workload::wijk_id(w);
        let plans = crate::run::share(sizes.plans, sizes.wijken, w);
        let acts = crate::run::share(sizes.activiteiten, sizes.wijken, w);
        for k in 0..plans + acts {
            let is_plan = k < plans;
            let doc = if is_plan {
                workload::new_plan(&wijk, k, settings.history, &mut rng)
            } else {
                workload::new_activiteit(&wijk, k, settings.history, &mut rng)
            }
            .map_err(|e| Error::Setup(e.to_string()))?;
            let id = DocumentId::random();
            documents.push(RecDoc {
                id: id.to_string(),
                wijk: w,
                is_plan,
                initial: hex::encode(doc.save()),
                initial_heads: doc.get_heads().iter().map(ToString::to_string).collect(),
            });
            docs.push(doc);
        }
    }
    let devices: Vec<RecDevice> = workload::devices(&sizes)
        .into_iter()
        .map(|d| RecDevice {
            name: d.name,
            role: d.role.as_str().to_owned(),
            wijk: d.wijk,
        })
        .collect();
    let editable: Vec<Vec<usize>> = devices
        .iter()
        .map(|dev| {
            (0..documents.len())
                .filter(|&i| edits(dev, &documents[i]))
                .collect()
        })
        .collect();
    let writers: Vec<usize> = (0..devices.len())
        .filter(|&d| !editable[d].is_empty())
        .collect();
    if writers.is_empty() {
        return Err(Error::Setup(
            "recording: no device edits any document".into(),
        ));
    }
    let actors: Vec<ActorId> = (0..devices.len())
        .map(|d| actor(settings.seed, d))
        .collect();
    let mut changes = Vec::with_capacity(settings.changes);
    let mut order = writers.clone();
    while changes.len() < settings.changes {
        rng.shuffle(&mut order);
        for &d in &order {
            if changes.len() >= settings.changes {
                break;
            }
            let i = editable[d][rng.usize(..editable[d].len())];
            let doc = &mut docs[i];
            doc.set_actor(actors[d].clone());
            let before = doc.get_heads();
            workload::edit(doc, documents[i].is_plan, &mut rng)
                .map_err(|e| Error::Setup(format!("recording: edit failed: {e}")))?;
            let new = doc.get_changes(&before);
            let [change] = new.as_slice() else {
                return Err(Error::Setup(format!(
                    "recording: an edit made {} changes, expected one",
                    new.len()
                )));
            };
            changes.push(RecChange {
                device: d,
                doc: i,
                hash: change.hash().to_string(),
                sync: hex::encode(writer_message(change)),
            });
        }
    }
    Ok(Recording {
        format: FORMAT,
        sizes,
        history: settings.history,
        seed: settings.seed,
        documents,
        devices,
        changes,
    })
}

/// Reads a recording file and checks its format.
pub fn load(path: &Path) -> Result<Recording, Error> {
    let text = std::fs::read(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
    let rec: Recording =
        serde_json::from_slice(&text).map_err(|e| Error::Json(path.display().to_string(), e))?;
    if rec.format != FORMAT {
        return Err(Error::Setup(format!(
            "{}: recording format {} (this load generator reads {FORMAT})",
            path.display(),
            rec.format
        )));
    }
    let bad_ref = rec
        .changes
        .iter()
        .any(|c| c.device >= rec.devices.len() || c.doc >= rec.documents.len());
    if bad_ref {
        return Err(Error::Setup(format!(
            "{}: a change names a device or document the recording does not have",
            path.display()
        )));
    }
    Ok(rec)
}

/// A recorded change's hash → (document, position in its line).
pub type ByHash = HashMap<ChangeHash, (usize, u32)>;

/// Positions of the recorded changes within their document's line of history (1 for
/// the first recorded change of a document), and each change's hash to (doc, position).
pub fn positions(rec: &Recording) -> Result<(Vec<u32>, ByHash), Error> {
    let mut next = vec![0u32; rec.documents.len()];
    let mut pos = Vec::with_capacity(rec.changes.len());
    let mut by_hash = HashMap::with_capacity(rec.changes.len());
    for c in &rec.changes {
        next[c.doc] += 1;
        pos.push(next[c.doc]);
        by_hash.insert(c.hash()?, (c.doc, next[c.doc]));
    }
    Ok((pos, by_hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::SyncDoc;

    fn small() -> RecordSettings {
        RecordSettings {
            sizes: Sizes {
                wijken: 2,
                professionals: 2,
                volunteers: 2,
                plans: 2,
                activiteiten: 2,
            },
            history: 3,
            changes: 12,
            seed: 5,
        }
    }

    /// Every document's recorded changes form one line, each writer frame carries
    /// exactly its change on top of the document's heads before it, and every writer
    /// holds what it edits.
    #[test]
    fn recording_is_a_line_per_document() {
        let rec = record(&small()).expect("record");
        assert_eq!(rec.changes.len(), 12);
        let mut docs: Vec<Automerge> = rec
            .documents
            .iter()
            .map(|d| d.load().expect("load"))
            .collect();
        for c in &rec.changes {
            let msg = sync::Message::decode(&c.sync_bytes().expect("hex")).expect("sync");
            let doc = &mut docs[c.doc];
            // The frame's last shared heads are the document's heads before it.
            assert_eq!(msg.have[0].last_sync, doc.get_heads());
            let mut state = sync::State::new();
            doc.receive_sync_message(&mut state, msg).expect("apply");
            assert_eq!(doc.get_heads(), vec![c.hash().expect("hash")]);
            assert!(holds(&rec.devices[c.device], &rec.documents[c.doc]));
        }
        let (pos, by_hash) = positions(&rec).expect("positions");
        assert_eq!(by_hash.len(), 12);
        assert!(pos.iter().all(|p| *p >= 1));
    }

    /// Volunteers hold activiteiten of their wijk only; professionals both kinds.
    #[test]
    fn holdings_follow_roles() {
        let doc = |is_plan| RecDoc {
            id: String::new(),
            wijk: 1,
            is_plan,
            initial: String::new(),
            initial_heads: Vec::new(),
        };
        let dev = |role: Role, wijk| RecDevice {
            name: String::new(),
            role: role.as_str().into(),
            wijk,
        };
        assert!(holds(&dev(Role::Professional, 1), &doc(true)));
        assert!(holds(&dev(Role::Professional, 1), &doc(false)));
        assert!(!holds(&dev(Role::Volunteer, 1), &doc(true)));
        assert!(holds(&dev(Role::Volunteer, 1), &doc(false)));
        assert!(!holds(&dev(Role::Professional, 0), &doc(false)));
    }
}
