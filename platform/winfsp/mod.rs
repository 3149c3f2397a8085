//! The Windows adapter (WinFsp): mounts on a drive letter or a new folder. The translation
//! itself (`adapter`) is built only for Windows; the tables it uses (`ntstatus`, `info`) are
//! plain data, built and tested on every platform, so the decisions for Windows are made
//! and checked together with FUSE's.

#[cfg(windows)]
mod adapter;
pub mod info;
pub mod ntstatus;

#[cfg(windows)]
pub use adapter::WinFspPlatform;
