//! The one error type that platform adapters see.
//!
//! Every module below `vfs` has its own precise error enum (`DavError`, `CacheError`). At the
//! `vfs` boundary they all become [`Error`], whose [`ErrorKind`] is portable: each platform adapter
//! maps it to an errno (FUSE) or an NTSTATUS (WinFsp) with one exhaustive `match`, so adding a kind
//! does not compile until every platform has decided what it means.

use std::fmt;

/// Portable classification of a failed filesystem operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file or folder does not exist.
    NotFound,
    /// Something already exists under that name.
    AlreadyExists,
    /// A folder that must be empty is not.
    NotEmpty,
    /// A folder was expected.
    NotADirectory,
    /// A file was expected, a folder was found.
    IsADirectory,
    /// The server or the local policy refuses the operation.
    PermissionDenied,
    /// The name is not allowed (by the server or by the platform).
    InvalidName,
    /// The name is longer than the server allows.
    NameTooLong,
    /// The account is out of quota or the cache disk is full.
    NoSpace,
    /// The file changed on the server while it was being read.
    Stale,
    /// The file was given a new inode (a new version opened while programs read the old
    /// one): the name must be looked up again. The kernel does so by itself on `ESTALE`.
    Replaced,
    /// The resource is locked or busy; try again later.
    Busy,
    /// The server cannot be reached.
    Offline,
    /// The server did not answer in time.
    TimedOut,
    /// The mount is read-only.
    ReadOnly,
    /// The operation is deliberately not supported.
    Unsupported,
    /// An invalid argument (bad offset, bad handle).
    InvalidArgument,
    /// No such extended attribute.
    NoAttribute,
    /// Anything else: the server answered nonsense, a local I/O error...
    Io,
}

impl ErrorKind {
    /// An answer programs expect in normal use (a name that is not there, a folder that is
    /// not empty...): adapters log it quietly, not as a failure.
    pub fn is_routine(self) -> bool {
        matches!(
            self,
            ErrorKind::NotFound
                | ErrorKind::AlreadyExists
                | ErrorKind::NotEmpty
                | ErrorKind::NotADirectory
                | ErrorKind::IsADirectory
                | ErrorKind::ReadOnly
                | ErrorKind::NoAttribute
                | ErrorKind::Unsupported
                | ErrorKind::Replaced
                | ErrorKind::InvalidArgument
        )
    }
}

/// An error at the `vfs` boundary: a portable kind plus one readable line.
#[derive(Debug, Clone)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// One human-readable line, never containing a secret.
    pub msg: String,
}

impl Error {
    /// Builds an error from a kind and a message.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
        }
    }
}

impl Error {
    /// Logs a failed operation `op` for an adapter: quietly when [`ErrorKind::is_routine`].
    pub fn log(&self, op: &str) {
        if self.kind.is_routine() {
            tracing::debug!(op, error = %self, "refused");
        } else {
            tracing::warn!(op, error = %self, "operation failed");
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Result alias for `vfs` operations.
pub type Result<T> = std::result::Result<T, Error>;
