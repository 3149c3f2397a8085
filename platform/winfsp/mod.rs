//! The Windows adapter (WinFsp). Only the NTSTATUS table exists so far: it is plain data, built
//! and tested on Linux, so the error decisions for Windows are made together with FUSE's.
//! The path-based adapter itself (`FileSystemContext` over `Vfs::resolve`) is not written yet.

pub mod ntstatus;
