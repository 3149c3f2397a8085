//! `ErrorKind` to NTSTATUS, as plain integers so it builds (and is tested) on every platform.

use nuage::ErrorKind;

/// STATUS_OBJECT_NAME_NOT_FOUND
pub const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
/// STATUS_OBJECT_NAME_COLLISION
pub const STATUS_OBJECT_NAME_COLLISION: i32 = 0xC000_0035_u32 as i32;
/// STATUS_DIRECTORY_NOT_EMPTY
pub const STATUS_DIRECTORY_NOT_EMPTY: i32 = 0xC000_0101_u32 as i32;
/// STATUS_NOT_A_DIRECTORY
pub const STATUS_NOT_A_DIRECTORY: i32 = 0xC000_0103_u32 as i32;
/// STATUS_FILE_IS_A_DIRECTORY
pub const STATUS_FILE_IS_A_DIRECTORY: i32 = 0xC000_00BA_u32 as i32;
/// STATUS_ACCESS_DENIED
pub const STATUS_ACCESS_DENIED: i32 = 0xC000_0022_u32 as i32;
/// STATUS_NAME_TOO_LONG
pub const STATUS_NAME_TOO_LONG: i32 = 0xC000_0106_u32 as i32;
/// STATUS_OBJECT_NAME_INVALID
pub const STATUS_OBJECT_NAME_INVALID: i32 = 0xC000_0033_u32 as i32;
/// STATUS_DISK_FULL
pub const STATUS_DISK_FULL: i32 = 0xC000_007F_u32 as i32;
/// STATUS_FILE_INVALID
pub const STATUS_FILE_INVALID: i32 = 0xC000_0098_u32 as i32;
/// STATUS_SHARING_VIOLATION
pub const STATUS_SHARING_VIOLATION: i32 = 0xC000_0043_u32 as i32;
/// STATUS_NETWORK_UNREACHABLE
pub const STATUS_NETWORK_UNREACHABLE: i32 = 0xC000_023C_u32 as i32;
/// STATUS_IO_TIMEOUT
pub const STATUS_IO_TIMEOUT: i32 = 0xC000_00B5_u32 as i32;
/// STATUS_MEDIA_WRITE_PROTECTED
pub const STATUS_MEDIA_WRITE_PROTECTED: i32 = 0xC000_00A2_u32 as i32;
/// STATUS_NOT_SUPPORTED
pub const STATUS_NOT_SUPPORTED: i32 = 0xC000_00BB_u32 as i32;
/// STATUS_INVALID_PARAMETER
pub const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
/// STATUS_NO_EAS_ON_FILE
pub const STATUS_NO_EAS_ON_FILE: i32 = 0xC000_0052_u32 as i32;
/// STATUS_END_OF_FILE (a read at or past the end)
pub const STATUS_END_OF_FILE: i32 = 0xC000_0011_u32 as i32;
/// STATUS_BUFFER_OVERFLOW (a warning: the answer does not fit the caller's buffer)
pub const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
/// STATUS_UNEXPECTED_IO_ERROR
pub const STATUS_UNEXPECTED_IO_ERROR: i32 = 0xC000_00E9_u32 as i32;

/// The NTSTATUS a WinFsp callback answers for an error kind.
pub fn ntstatus(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        ErrorKind::AlreadyExists => STATUS_OBJECT_NAME_COLLISION,
        ErrorKind::NotEmpty => STATUS_DIRECTORY_NOT_EMPTY,
        ErrorKind::NotADirectory => STATUS_NOT_A_DIRECTORY,
        ErrorKind::IsADirectory => STATUS_FILE_IS_A_DIRECTORY,
        ErrorKind::PermissionDenied => STATUS_ACCESS_DENIED,
        ErrorKind::InvalidName => STATUS_OBJECT_NAME_INVALID,
        ErrorKind::NameTooLong => STATUS_NAME_TOO_LONG,
        ErrorKind::NoSpace => STATUS_DISK_FULL,
        ErrorKind::Stale => STATUS_FILE_INVALID,
        ErrorKind::Replaced => STATUS_FILE_INVALID,
        ErrorKind::Busy => STATUS_SHARING_VIOLATION,
        ErrorKind::Offline => STATUS_NETWORK_UNREACHABLE,
        ErrorKind::TimedOut => STATUS_IO_TIMEOUT,
        ErrorKind::ReadOnly => STATUS_MEDIA_WRITE_PROTECTED,
        ErrorKind::Unsupported => STATUS_NOT_SUPPORTED,
        ErrorKind::InvalidArgument => STATUS_INVALID_PARAMETER,
        ErrorKind::NoAttribute => STATUS_NO_EAS_ON_FILE,
        ErrorKind::Io => STATUS_UNEXPECTED_IO_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_an_error_code() {
        for k in [
            ErrorKind::NotFound,
            ErrorKind::NoSpace,
            ErrorKind::Io,
            ErrorKind::ReadOnly,
        ] {
            assert!(ntstatus(k) < 0, "{k:?} must map to an NTSTATUS error");
        }
        assert_eq!(ntstatus(ErrorKind::NotFound), 0xC000_0034_u32 as i32);
    }
}
