//! `RemotePath`: a decoded path below the mount root, and its percent-encoding.
//!
//! Names travel decoded everywhere in the core (exact bytes as the server sent them, so NFC and
//! NFD names both round-trip) and are percent-encoded only here, at the HTTP edge, one segment at
//! a time, keeping only the RFC 3986 unreserved characters literal (nextcloud-protocol.md §1.2).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;

/// Everything but the RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path relative to the mount root, decoded, without leading or trailing `/`.
/// The root itself is the empty path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RemotePath(String);

impl RemotePath {
    /// The root of the mount.
    pub fn root() -> Self {
        RemotePath(String::new())
    }

    /// Builds a path from a decoded string such as `a/b c.txt`; empty segments are dropped.
    pub fn new(s: &str) -> Self {
        let joined: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        RemotePath(joined.join("/"))
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as a decoded string (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The child `name` of this folder. `name` must not contain `/`.
    pub fn join(&self, name: &str) -> Self {
        if self.0.is_empty() {
            RemotePath(name.to_string())
        } else {
            RemotePath(format!("{}/{}", self.0, name))
        }
    }

    /// This path with its leading `from` (itself, or a folder above it) replaced by `to`;
    /// `None` when it is not within `from`.
    pub fn rebased(&self, from: &RemotePath, to: &RemotePath) -> Option<RemotePath> {
        if !self.is_within(from) {
            return None;
        }
        let rest = &self.0[from.0.len()..];
        Some(RemotePath::new(&format!("{}{rest}", to.0)))
    }

    /// Where `self` is on the server while the renames `moves` (`(new, old)` pairs, in the
    /// order they were made) wait to be made there.
    pub fn before_moves(&self, moves: &[(RemotePath, RemotePath)]) -> RemotePath {
        moves.iter().rev().fold(self.clone(), |p, (new, old)| {
            p.rebased(new, old).unwrap_or(p)
        })
    }

    /// The smallest string every path strictly below this one begins with (`a/b/` for
    /// `a/b`; `""` for the root). Not a path itself: a bound for a range of sorted paths,
    /// where everything below `a/b` follows it contiguously (`a/b c` and `a/b.txt`, whose
    /// next byte sorts before `/`, come before it).
    pub fn below_bound(&self) -> RemotePath {
        if self.0.is_empty() {
            RemotePath::root()
        } else {
            RemotePath(format!("{}/", self.0))
        }
    }

    /// True when this path is `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &RemotePath) -> bool {
        ancestor.0.is_empty()
            || self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0)
                && self.0.as_bytes().get(ancestor.0.len()) == Some(&b'/'))
    }

    /// The last segment (`""` for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The parent folder, `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RemotePath(self.0[..i].to_string()),
            None => RemotePath::root(),
        })
    }

    /// The percent-encoded form, segments joined by `/`, no leading slash.
    pub fn encoded(&self) -> String {
        self.0
            .split('/')
            .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Percent-encodes one path segment (used for the user id in Nextcloud DAV paths).
pub fn encode_segment(seg: &str) -> String {
    utf8_percent_encode(seg, SEGMENT).to_string()
}

/// Decodes a percent-encoded href path into a string; invalid UTF-8 is replaced, which can
/// only happen with a server that does not speak UTF-8 (nextcloud-protocol.md §1.2).
pub fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_each_segment_and_keeps_unreserved() {
        let p = RemotePath::new("/My Docs/a#b%c?d&e'f\"g/été 😀.txt/");
        assert_eq!(p.as_str(), "My Docs/a#b%c?d&e'f\"g/été 😀.txt");
        assert_eq!(
            p.encoded(),
            "My%20Docs/a%23b%25c%3Fd%26e%27f%22g/%C3%A9t%C3%A9%20%F0%9F%98%80.txt"
        );
        assert_eq!(decode(&p.encoded()), p.as_str());
        assert_eq!(RemotePath::new("a-b_c.d~e").encoded(), "a-b_c.d~e");
    }

    #[test]
    fn parent_name_join() {
        let p = RemotePath::new("a/b/c");
        assert_eq!(p.name(), "c");
        assert_eq!(p.parent(), Some(RemotePath::new("a/b")));
        assert_eq!(RemotePath::new("a").parent(), Some(RemotePath::root()));
        assert_eq!(RemotePath::root().parent(), None);
        assert_eq!(
            RemotePath::root().join("x").join("y"),
            RemotePath::new("x/y")
        );
        assert!(RemotePath::new("/").is_root());
    }

    #[test]
    fn nfc_and_nfd_stay_distinct_bytes() {
        let nfc = RemotePath::new("caf\u{e9}");
        let nfd = RemotePath::new("cafe\u{301}");
        assert_ne!(nfc.encoded(), nfd.encoded());
        assert_eq!(decode(&nfd.encoded()), nfd.as_str());
    }

    #[test]
    fn paths_are_followed_back_through_waiting_renames() {
        let p = |s: &str| RemotePath::new(s);
        assert_eq!(
            p("a/b/c.txt").rebased(&p("a/b"), &p("x")),
            Some(p("x/c.txt"))
        );
        assert_eq!(p("a/bc/d.txt").rebased(&p("a/b"), &p("x")), None);
        // A folder renamed, then a file inside it renamed under the new folder name.
        let moves = [(p("T1"), p("Trimestre 1")), (p("T1/y.txt"), p("T1/x.txt"))];
        assert_eq!(p("T1/y.txt").before_moves(&moves), p("Trimestre 1/x.txt"));
        assert_eq!(
            p("T1/sub/z.txt").before_moves(&moves),
            p("Trimestre 1/sub/z.txt")
        );
        assert_eq!(p("T10/z.txt").before_moves(&moves), p("T10/z.txt"));
        assert_eq!(p("other.txt").before_moves(&[]), p("other.txt"));
    }
}
