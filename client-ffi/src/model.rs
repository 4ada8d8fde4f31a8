//! The types that cross the FFI: domain enums mirrored from sync-core's schema (UniFFI
//! needs them defined here), the records the app passes in and gets back, and the
//! events the app's listener receives. Conversions to and from sync-core live here too,
//! so the rest of the crate works with sync-core's types only.

use sync_core::partition::DocumentKind as CoreKind;
use sync_core::schema;

/// Which kind of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DocumentKind {
    Plan,
    Activiteit,
}

/// The plan's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PlanStatus {
    Aanmelding,
    Intake,
    Plan,
    Uitvoering,
    Evaluatie,
    Afgesloten,
}

/// When in the support a measurement was taken (schema 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Moment {
    Intake,
    Tussenevaluatie,
    Eindevaluatie,
}

/// A domain of the zelfredzaamheidsmatrix (schema 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ZrmDomein {
    Financien,
    WerkEnOpleiding,
    Tijdsbesteding,
    Huisvesting,
    HuiselijkeRelaties,
    GeestelijkeGezondheid,
    LichamelijkeGezondheid,
    Middelengebruik,
    BasaleAdl,
    InstrumenteleAdl,
    SociaalNetwerk,
    MaatschappelijkeParticipatie,
    Justitie,
}

/// The life domain of a goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Leefdomein {
    Financien,
    Wonen,
    Opvoeding,
    Gezondheid,
    SociaalNetwerk,
    Dagbesteding,
    Veiligheid,
    WerkEnInkomen,
    Zorg,
    Overig,
}

/// How far a goal has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum GoalStatus {
    Open,
    Bezig,
    Behaald,
    Gestopt,
}

/// Who carries out an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ActionWho {
    Inwoner,
    Netwerk,
    Buurtteam,
    Partner,
}

/// Where or how a contact took place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ContactKind {
    Huisbezoek,
    Wijkcentrum,
    School,
    Telefoon,
    Digitaal,
}

/// One logged session of an activiteit.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SessionInput {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// How many people came.
    pub attendance: u64,
    /// Hours volunteers spent; never negative.
    pub volunteer_hours: f64,
    pub notes: Option<String>,
    /// Things the buurtteam should know about, one text per signal.
    pub signals: Vec<String>,
    /// Names, only of participants who agreed to be named.
    pub participants: Vec<String>,
}

/// A document in the local store, for lists.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DocumentSummary {
    /// The document id (bs58check); `automerge:<id>` is its URL.
    pub id: String,
    pub kind: DocumentKind,
    pub wijk: String,
    /// The household pseudonym of a plan, the title of an activiteit.
    pub label: String,
    /// Local changes the server has not yet acknowledged as committed.
    pub pending_changes: u64,
}

/// Where the connection to the server stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Syncing is wanted and a connection is being made (or retried after a drop).
    Connecting,
    /// Connected, the handshake done: changes flow both ways.
    Online,
    /// Not connected: the app went offline, or the network is away (retried with backoff).
    Offline,
    /// The server refused the token and the credentials provider had no better one.
    /// Nothing is purged; syncing resumes after `set_token` (or when the provider, asked
    /// again later, gives a token the server takes).
    Unauthorized,
    /// The server's certificate was not trusted (unknown issuer, wrong host name,
    /// expired). Not retried until the app calls `go_online` or `sync_now` again.
    TlsError { reason: String },
    /// The token belongs to another user than the one this store belongs to. Nothing
    /// syncs until a token of the store's own user is given (or the store is wiped).
    WrongUser {
        store_user: String,
        token_user: String,
    },
}

/// What the sync loop is doing, for the app's status bar.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncStatus {
    /// The connection's state.
    pub state: ConnectionState,
    /// `state == Online`, for a quick check.
    pub online: bool,
    /// The app asked for syncing (`go_online`); false after `go_offline`.
    pub sync_enabled: bool,
    /// Local changes the server has not acknowledged as committed (exactly those: remote
    /// changes are never counted).
    pub pending_changes: u64,
    /// Documents with unacknowledged local changes that are being sent right now.
    pub uploading: u64,
    /// Documents the server listed that have not arrived yet.
    pub downloading: u64,
    /// Documents whose changes the server refused (see `document_state`); they do not
    /// hold back `last_synced_at_ms`.
    pub refused_documents: u64,
    /// This store has completed a sync at least once (persisted).
    pub has_synced: bool,
    /// Unix time (ms) of the last moment every local change (except refused ones) was on
    /// the server's disk and the listing had been applied. Persisted across restarts.
    pub last_synced_at_ms: Option<i64>,
    /// The last connection or server error, cleared by the next successful sync.
    pub last_error: Option<String>,
}

/// The sync state of one document (`document_state`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum DocumentState {
    /// Everything local is on the server.
    Synced,
    /// `changes` local changes are not yet acknowledged.
    Pending { changes: u64 },
    /// The server refused a change of this document, for `reason` (its own words).
    /// `discard_unsynced` forks back to what the server acknowledged.
    Refused { reason: String, changes: u64 },
    /// The stored row does not decrypt or load. Only this document is affected; if the
    /// server still lists it, it is downloaded again in its place.
    Corrupt { reason: String },
}

/// Why a document was removed from this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PurgeReason {
    /// The server said the document is unavailable to this user: the grant was revoked,
    /// the token no longer covers it, or the document was erased.
    Unavailable,
    /// The server's listing no longer has a document it had acknowledged: access ended
    /// while this device was offline.
    NoLongerListed,
    /// The app discarded a document the server never accepted (`discard_unsynced`).
    Discarded,
}

/// What happened to a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ChangeKind {
    /// Edited on this device.
    Local,
    /// Changes arrived from the server (a colleague's edits, or a newly discovered document).
    Remote,
    /// Removed from this device; its bytes are gone from the local store.
    Purged { reason: PurgeReason },
}

/// One entry of a change notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct DocChange {
    pub doc_id: String,
    pub change: ChangeKind,
}

/// Tuning of the sync loop; `ClientOptions::default()` suits a phone.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ClientOptions {
    /// How often to ask the server's listing for new documents while online.
    pub discovery_interval_ms: u64,
    /// First reconnect delay; it doubles per failure, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay.
    pub backoff_max_ms: u64,
    /// Start syncing at once (otherwise call `go_online`).
    pub start_online: bool,
    /// Allow `ws://` (no TLS). Off by default: a plain URL is refused at `open`.
    #[uniffi(default = false)]
    pub allow_insecure: bool,
    /// An extra trust anchor in PEM (for example a gemeente's private CA), trusted
    /// beside the public web roots.
    #[uniffi(default = None)]
    pub extra_ca_pem: Option<String>,
    /// How often the full listing is fetched (it is what tells a device that was
    /// offline that access ended); in between, the listing is asked incrementally.
    #[uniffi(default = 600000)]
    pub full_reconcile_interval_ms: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            discovery_interval_ms: 30_000,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            start_online: true,
            allow_insecure: false,
            extra_ca_pem: None,
            full_reconcile_interval_ms: 600_000,
        }
    }
}

/// `ClientOptions::default()` for the bindings (records have no methods).
#[uniffi::export]
pub fn default_client_options() -> ClientOptions {
    ClientOptions::default()
}

macro_rules! mirror {
    ($ffi:ident <=> $core:path { $($v:ident),+ $(,)? }) => {
        impl From<$ffi> for $core {
            fn from(v: $ffi) -> Self {
                match v { $($ffi::$v => <$core>::$v),+ }
            }
        }
        impl From<$core> for $ffi {
            fn from(v: $core) -> Self {
                match v { $(<$core>::$v => $ffi::$v),+ }
            }
        }
    };
}

mirror!(DocumentKind <=> CoreKind { Plan, Activiteit });
mirror!(PlanStatus <=> schema::PlanStatus { Aanmelding, Intake, Plan, Uitvoering, Evaluatie, Afgesloten });
mirror!(Leefdomein <=> schema::Leefdomein {
    Financien, Wonen, Opvoeding, Gezondheid, SociaalNetwerk, Dagbesteding, Veiligheid,
    WerkEnInkomen, Zorg, Overig,
});
mirror!(GoalStatus <=> schema::GoalStatus { Open, Bezig, Behaald, Gestopt });
mirror!(Moment <=> schema::Moment { Intake, Tussenevaluatie, Eindevaluatie });
mirror!(ZrmDomein <=> schema::ZrmDomein {
    Financien, WerkEnOpleiding, Tijdsbesteding, Huisvesting, HuiselijkeRelaties,
    GeestelijkeGezondheid, LichamelijkeGezondheid, Middelengebruik, BasaleAdl,
    InstrumenteleAdl, SociaalNetwerk, MaatschappelijkeParticipatie, Justitie,
});
mirror!(ActionWho <=> schema::ActionWho { Inwoner, Netwerk, Buurtteam, Partner });
mirror!(ContactKind <=> schema::ContactKind { Huisbezoek, Wijkcentrum, School, Telefoon, Digitaal });
