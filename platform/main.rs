//! The `nuage` binary: picks the OS adapter and hands it to the platform-independent CLI.

#[cfg(unix)]
mod fuse;
// The NTSTATUS table is plain data, built and tested on every platform.
#[allow(dead_code)]
mod winfsp;

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    {
        nuage::cli::run(&fuse::FusePlatform)
    }
    #[cfg(windows)]
    {
        // The WinFsp adapter is not written yet (only its NTSTATUS table is): say so plainly.
        eprintln!("nuage: mounting on Windows (WinFsp) is not available yet");
        std::process::ExitCode::FAILURE
    }
}
