//! Captured process output: which stream a chunk came from, and a buffer that keeps the first
//! bytes up to a cap and remembers whether anything was dropped.
//!
//! Shared by drivers (which produce output) and the queue (which stores and streams it) without
//! either knowing the other.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// Where a driver sends output while a command runs. Bounded: a slow consumer slows the reader,
/// which lets the pipe fill and the process wait, instead of buffering without limit.
pub type OutputTx = mpsc::Sender<(Stream, Bytes)>;

/// Keeps the first `cap` bytes written to it.
#[derive(Debug)]
pub struct CappedBuffer {
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
    total: u64,
}

impl CappedBuffer {
    pub fn new(cap: usize) -> CappedBuffer {
        CappedBuffer {
            data: Vec::new(),
            cap,
            truncated: false,
            total: 0,
        }
    }

    /// Appends what fits; remembers if anything did not.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.data.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Every byte offered, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The kept bytes as text; invalid UTF-8 becomes U+FFFD, and a character cut by the cap is
    /// dropped rather than half-shown.
    pub fn into_text(self) -> String {
        bytes_to_text(self.data, self.truncated)
    }
}

/// Decodes output for JSON. When `cut` is set, an incomplete UTF-8 sequence at the very end is
/// the cap's doing and is removed instead of being shown as a replacement character.
pub fn bytes_to_text(mut data: Vec<u8>, cut: bool) -> String {
    if cut {
        if let Err(e) = std::str::from_utf8(&data) {
            if e.error_len().is_none() {
                data.truncate(e.valid_up_to());
            }
        }
    }
    match String::from_utf8(data) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_bytes_and_flags_truncation() {
        let mut buf = CappedBuffer::new(5);
        buf.push(b"abc");
        assert!(!buf.truncated());
        buf.push(b"defgh");
        assert!(buf.truncated());
        assert_eq!(buf.total(), 8);
        assert_eq!(buf.into_bytes(), b"abcde");
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let mut buf = CappedBuffer::new(3);
        buf.push(b"abc");
        assert!(!buf.truncated());
        buf.push(b"");
        assert!(!buf.truncated());
    }

    #[test]
    fn cut_multibyte_character_is_dropped() {
        let mut buf = CappedBuffer::new(4);
        buf.push("aé€".as_bytes()); // a(1) é(2) €(3): the cap falls inside €
        assert_eq!(buf.into_text(), "aé");
    }

    #[test]
    fn invalid_utf8_becomes_replacement() {
        assert_eq!(bytes_to_text(vec![b'a', 0xff, b'b'], false), "a\u{fffd}b");
    }
}
