//! `ErrorKind` to errno: one exhaustive table, no catch-all arm.

use nuage::ErrorKind;

/// The errno a FUSE callback answers for an error kind.
pub fn errno(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::AlreadyExists => libc::EEXIST,
        ErrorKind::NotEmpty => libc::ENOTEMPTY,
        ErrorKind::NotADirectory => libc::ENOTDIR,
        ErrorKind::IsADirectory => libc::EISDIR,
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::InvalidName => libc::EINVAL,
        ErrorKind::NameTooLong => libc::ENAMETOOLONG,
        ErrorKind::NoSpace => libc::ENOSPC,
        ErrorKind::Stale => libc::ESTALE,
        ErrorKind::Replaced => libc::ESTALE,
        ErrorKind::Busy => libc::EBUSY,
        ErrorKind::Offline => libc::ENETUNREACH,
        ErrorKind::TimedOut => libc::ETIMEDOUT,
        ErrorKind::ReadOnly => libc::EROFS,
        ErrorKind::Unsupported => libc::ENOTSUP,
        ErrorKind::InvalidArgument => libc::EINVAL,
        ErrorKind::NoAttribute => libc::ENODATA,
        ErrorKind::Io => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(errno(ErrorKind::NotFound), libc::ENOENT);
        assert_eq!(errno(ErrorKind::PermissionDenied), libc::EACCES);
        assert_eq!(errno(ErrorKind::TimedOut), libc::ETIMEDOUT);
        assert_eq!(errno(ErrorKind::Io), libc::EIO);
        assert_eq!(errno(ErrorKind::NoSpace), libc::ENOSPC);
    }
}
