//! The crate's error type: every way pure sync logic can refuse its input.

/// Everything sync-core can refuse, with a message fit for a client developer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Decode(#[from] crate::protocol::DecodeError),
    #[error(transparent)]
    DocumentId(#[from] crate::protocol::InvalidDocumentId),
    #[error(transparent)]
    Sync(#[from] crate::engine::SyncError),
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    #[error(transparent)]
    Denied(#[from] crate::policy::Denied),
    #[error(transparent)]
    Kind(#[from] crate::partition::UnknownKind),
    #[error(transparent)]
    Request(#[from] crate::api::InvalidRequest),
    #[error(transparent)]
    Wijk(#[from] crate::partition::InvalidWijkId),
}
