//! What Windows is told about a file: attributes and times, as plain numbers so that they are
//! built and tested on every platform.

use nuage::vfs::{Attr, FileKind};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// FILE_ATTRIBUTE_READONLY
pub const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
/// FILE_ATTRIBUTE_DIRECTORY
pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
/// FILE_ATTRIBUTE_NORMAL
pub const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
/// FILE_DIRECTORY_FILE (a create option: make a folder)
pub const FILE_DIRECTORY_FILE: u32 = 0x1;
/// The allocation unit Windows is told about.
pub const ALLOCATION_UNIT: u64 = 4096;

/// Seconds from 1601-01-01 (Windows' epoch) to 1970-01-01.
const EPOCH_GAP_SECS: u64 = 11_644_473_600;
/// FILETIME ticks (100 ns) per second.
const TICKS: u64 = 10_000_000;

/// A time as a FILETIME (100 ns ticks since 1601); times before 1970 become 1970.
pub fn filetime(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() + EPOCH_GAP_SECS) * TICKS + u64::from(d.subsec_nanos()) / 100
}

/// A FILETIME as a time; `None` for 0 (Windows' "leave this time alone") and times before
/// 1970.
pub fn system_time(ft: u64) -> Option<SystemTime> {
    let ticks = ft.checked_sub(EPOCH_GAP_SECS * TICKS)?;
    let nanos = (ticks % TICKS) * 100;
    Some(UNIX_EPOCH + Duration::new(ticks / TICKS, nanos as u32))
}

/// FILE_ATTRIBUTE_* of an entry: a folder, or a file (read-only when it cannot be changed).
pub fn attributes(a: &Attr) -> u32 {
    match a.kind {
        FileKind::Dir => FILE_ATTRIBUTE_DIRECTORY,
        FileKind::File if a.perm & 0o200 == 0 => FILE_ATTRIBUTE_READONLY,
        FileKind::File => FILE_ATTRIBUTE_NORMAL,
    }
}

/// The space a file takes, in whole allocation units.
pub fn allocation(size: u64) -> u64 {
    size.div_ceil(ALLOCATION_UNIT) * ALLOCATION_UNIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuage::vfs::Ino;

    #[test]
    fn times_round_trip_through_filetime() {
        // 2020-01-02 03:04:05.5 UTC
        let t = UNIX_EPOCH + Duration::new(1_577_934_245, 500_000_000);
        assert_eq!(filetime(t), 132_224_078_455_000_000);
        assert_eq!(system_time(filetime(t)), Some(t));
        assert_eq!(filetime(UNIX_EPOCH), EPOCH_GAP_SECS * TICKS);
        assert_eq!(system_time(0), None);
    }

    #[test]
    fn folders_and_read_only_files_are_marked() {
        let mut a = Attr {
            ino: Ino(5),
            kind: FileKind::File,
            size: 5000,
            mtime: UNIX_EPOCH,
            perm: 0o644,
            uid: 0,
            gid: 0,
        };
        assert_eq!(attributes(&a), FILE_ATTRIBUTE_NORMAL);
        a.perm = 0o444;
        assert_eq!(attributes(&a), FILE_ATTRIBUTE_READONLY);
        a.kind = FileKind::Dir;
        assert_eq!(attributes(&a), FILE_ATTRIBUTE_DIRECTORY);
        assert_eq!(allocation(5000), 8192);
        assert_eq!(allocation(0), 0);
    }
}
