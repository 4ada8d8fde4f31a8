//! The one guard between buurtsync and third-party code that reads untrusted bytes.
//!
//! automerge and autosurgeon are not panic-free on hostile input: automerge 0.12's column
//! decoder (hexane 1.0.0-alpha.5) `unwrap`s a truncated delta column inside
//! `receive_sync_message` (docs/upstream/automerge-hexane-panic.md). "Bad input gets a
//! clear error, never a panic", and a panic must never end a connection task or unwind
//! across the client library's FFI. So every call into automerge or autosurgeon on bytes
//! from a peer or a store — receive, load, load_incremental, generate, hydrate — runs
//! through [`run`], which turns a panic into [`Panicked`], a typed error naming the
//! [`Site`].
//!
//! The guard only catches. Putting things back is the caller's job, because only the
//! caller knows what "before" was: [`crate::engine::PeerSync`] restores the document and
//! the sync session, [`load_incremental`] rebuilds the document at its old heads.
//! Counting is the server's job (sync-core does no I/O): it turns `Site` into the label
//! of `buurtsync_panics_caught_total`.
//!
//! [`install_panic_hook`] keeps guarded panics out of the log: the default hook prints a
//! message (and, with `RUST_BACKTRACE`, a backtrace) for every hostile frame. Under the
//! guard the hook only notes the location; the caller logs one bounded line. Panics
//! outside the guard still reach the previous hook unchanged.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use automerge::{Automerge, AutomergeError, ChangeHash};

/// The longest panic text kept in a [`Panicked`] (and so in a log line or an `error`
/// message): hostile input must not make log lines as long as it likes.
pub const MAX_MESSAGE_CHARS: usize = 240;

/// Which guarded call panicked; the label of the server's panic counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// `receive_sync_message` on a peer's payload.
    Receive,
    /// The caller's check on a received document (schema reads through autosurgeon).
    Check,
    /// `generate_sync_message` for a peer's session.
    Generate,
    /// `Automerge::load` of stored or received bytes.
    Load,
    /// `Automerge::load_incremental` of stored chunks.
    LoadIncremental,
    /// autosurgeon's `hydrate` of a document into schema types.
    Hydrate,
    /// Rebuilding a document at its old heads after one of the above.
    Restore,
}

impl Site {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Receive => "receive",
            Site::Check => "check",
            Site::Generate => "generate",
            Site::Load => "load",
            Site::LoadIncremental => "load_incremental",
            Site::Hydrate => "hydrate",
            Site::Restore => "restore",
        }
    }
}

/// A panic caught by the guard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the document library failed on this input ({})", site.as_str())]
pub struct Panicked {
    pub site: Site,
    /// The panic's text and location, at most [`MAX_MESSAGE_CHARS`] characters: for the
    /// log, not for the peer (it names library internals).
    pub message: String,
}

thread_local! {
    /// How many guards this thread is inside: the hook stays quiet when > 0.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last guarded panic on this thread happened, noted by the hook.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`; a panic inside it becomes `Err(Panicked)` instead of unwinding further.
///
/// `AssertUnwindSafe` is sound here only because every caller restores (or throws away)
/// whatever `f` had borrowed mutably when it panicked.
pub fn run<T>(site: Site, f: impl FnOnce() -> T) -> Result<T, Panicked> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        let location = LOCATION.with(|l| l.borrow_mut().take());
        Panicked {
            site,
            message: describe(payload.as_ref(), location.as_deref()),
        }
    })
}

/// Is this thread inside [`run`]?
pub fn is_guarded() -> bool {
    DEPTH.with(Cell::get) > 0
}

/// Installs (once per process) a panic hook that is silent for panics inside [`run`] —
/// it notes their location for [`Panicked::message`] — and hands every other panic to
/// the hook that was installed before.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if is_guarded() {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.with(|l| *l.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

fn describe(payload: &(dyn Any + Send), location: Option<&str>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic");
    let full = match location {
        Some(at) => format!("{text} at {at}"),
        None => text.to_owned(),
    };
    bounded(&full)
}

fn bounded(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// A guarded automerge call that failed: automerge's own error, or a caught panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Automerge(String),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl From<AutomergeError> for GuardError {
    fn from(e: AutomergeError) -> Self {
        GuardError::Automerge(e.to_string())
    }
}

/// `Automerge::load` behind the guard. Nothing to restore: the document is new.
pub fn load(bytes: &[u8]) -> Result<Automerge, GuardError> {
    Ok(run(Site::Load, || Automerge::load(bytes))??)
}

/// `Automerge::load_incremental` behind the guard. After a panic the document is rebuilt
/// at the heads it had before (see [`restore`]), so it is never left half-changed.
pub fn load_incremental(doc: &mut Automerge, bytes: &[u8]) -> Result<usize, GuardError> {
    let heads = doc.get_heads();
    match run(Site::LoadIncremental, || doc.load_incremental(bytes)) {
        Ok(result) => Ok(result?),
        Err(panicked) => {
            restore(doc, &heads);
            Err(panicked.into())
        }
    }
}

/// autosurgeon's `hydrate` behind the guard (it only reads the document, or the open
/// transaction a typed edit will reconcile into).
pub fn hydrate<T: autosurgeon::Hydrate, D: autosurgeon::ReadDoc>(doc: &D) -> Result<T, GuardError> {
    run(Site::Hydrate, || autosurgeon::hydrate(doc))?
        .map_err(|e| GuardError::Automerge(e.to_string()))
}

/// Puts `doc` back at `heads` after a refused or panicked call, dropping whatever it
/// gained since, including changes waiting in automerge's queue for missing dependencies.
///
/// Why a rebuild and not a clone taken before the call: a clone of the whole document on
/// every receive would cost as much as the receive itself, to protect against something
/// that happens only on hostile input. `fork_at` instead pays on the refusal path only: it
/// replays the changes up to `heads`, which were complete before the call and are never
/// rewritten by a later one (automerge's history only grows). If even the rebuild fails
/// or panics, the document is replaced by an empty one with the same actor, and the
/// function returns false: a caller with a durable copy (the server's store, the client's
/// local store) must reload from it; a document is never left half-changed.
pub fn restore(doc: &mut Automerge, heads: &[ChangeHash]) -> bool {
    let actor = doc.get_actor().clone();
    let rebuilt = if heads.is_empty() {
        Ok(Ok(Automerge::new()))
    } else {
        run(Site::Restore, || doc.fork_at(heads))
    };
    let (mut fresh, ok) = match rebuilt {
        Ok(Ok(fresh)) if fresh.get_heads() == sorted(heads) => (fresh, true),
        _ => (Automerge::new(), false),
    };
    fresh.set_actor(actor);
    *doc = fresh;
    ok
}

fn sorted(heads: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut heads = heads.to_vec();
    heads.sort();
    heads.dedup();
    heads
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ReadDoc, ROOT};

    /// A panic inside the guard is a typed error with its site and a bounded message,
    /// and the thread goes on.
    #[test]
    fn panic_becomes_a_bounded_error() {
        install_panic_hook();
        let long = "x".repeat(10_000);
        let err = run(Site::Receive, || -> u8 { panic!("{long}") }).expect_err("caught");
        assert_eq!(err.site, Site::Receive);
        assert!(err.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(err.message.starts_with("xxx"));
        assert!(!is_guarded());
        assert_eq!(run(Site::Load, || 7), Ok(7));
    }

    /// `restore` puts a document back at old heads and keeps its actor; empty heads give
    /// an empty document.
    #[test]
    fn restore_rebuilds_at_old_heads() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "a", 1).expect("put");
        tx.commit();
        let old = doc.get_heads();
        let mut tx = doc.transaction();
        tx.put(ROOT, "b", 2).expect("put");
        tx.commit();
        let actor = doc.get_actor().clone();
        assert!(restore(&mut doc, &old));
        assert_eq!(doc.get_heads(), old);
        assert_eq!(doc.get_actor(), &actor);
        assert!(doc.get(ROOT, "b").expect("get").is_none());
        assert!(restore(&mut doc, &[]));
        assert!(doc.get_heads().is_empty());
    }

    /// Garbage given to the guarded loaders is an error, never a panic.
    #[test]
    fn guarded_loaders_refuse_garbage() {
        assert!(load(b"not automerge").is_err());
        let mut doc = Automerge::new();
        assert!(load_incremental(&mut doc, b"\x85\x6f\x4a\x83garbage").is_err());
    }
}
