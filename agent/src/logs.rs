//! Cutting a command's output into `LogChunk`s. **Invariant:** pure: bytes and instants in,
//! chunks out; the caller does the reading, the clock and the posting.
//!
//! A chunk is sent when its oldest byte has waited the flush delay (which the caller passes
//! in: short while someone follows the log, long otherwise), or when `max_bytes` have piled up
//! (chunks are at most that long), and at the end. Sequence numbers count from 0 per phase.
//! The wire wants text: the bytes are decoded as UTF-8, a character split between two reads is
//! kept back until its end arrives, and invalid bytes become U+FFFD.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use shared::agent_protocol::LogChunk;
use shared::job::Phase;

/// The pending output of one phase.
#[derive(Debug)]
pub struct LogBatcher {
    phase: Phase,
    /// Most bytes of text in one chunk (a full one is sent at once).
    max_bytes: usize,
    /// Most bytes of output the phase keeps; the rest is dropped, with a notice.
    quota: u64,
    /// Bytes taken so far.
    taken: u64,
    next_seq: u64,
    text: String,
    /// The start of a character whose remaining bytes have not been read yet.
    partial: Vec<u8>,
    /// When the oldest byte of `text` arrived.
    since: Option<Instant>,
}

impl LogBatcher {
    pub fn new(phase: Phase, max_bytes: usize) -> LogBatcher {
        LogBatcher::with_quota(phase, max_bytes, u64::MAX)
    }

    /// A batcher that keeps at most `quota` bytes of the phase's output: what comes after is
    /// dropped, and a line says so.
    pub fn with_quota(phase: Phase, max_bytes: usize, quota: u64) -> LogBatcher {
        LogBatcher {
            phase,
            quota,
            taken: 0,
            max_bytes: max_bytes.max(4),
            next_seq: 0,
            text: String::new(),
            partial: Vec::new(),
            since: None,
        }
    }

    /// Adds bytes read at `now`.
    pub fn push(&mut self, bytes: &[u8], now: Instant) {
        if self.taken >= self.quota {
            return;
        }
        let room = usize::try_from(self.quota - self.taken).unwrap_or(usize::MAX);
        let bytes = if bytes.len() > room {
            &bytes[..room]
        } else {
            bytes
        };
        self.taken += bytes.len() as u64;
        self.partial.extend_from_slice(bytes);
        let partial = std::mem::take(&mut self.partial);
        let mut rest = partial.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.text.push_str(text);
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    self.text
                        .push_str(std::str::from_utf8(valid).expect("checked by valid_up_to"));
                    let Some(len) = error.error_len() else {
                        // An incomplete character at the end: wait for the next read.
                        rest = after;
                        break;
                    };
                    self.text.push(char::REPLACEMENT_CHARACTER);
                    rest = &after[len..];
                }
            }
        }
        self.partial = rest.to_vec();
        if self.taken >= self.quota {
            if !self.partial.is_empty() {
                self.text.push(char::REPLACEMENT_CHARACTER);
                self.partial.clear();
            }
            let _ = write!(
                self.text,
                "\n[stratus: this node's {} output reached the log quota of {} bytes; the rest is not kept]\n",
                self.phase, self.quota
            );
        }
        if !self.text.is_empty() && self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// A full chunk, if `max_bytes` are pending. Call until `None`.
    pub fn pop_full(&mut self) -> Option<LogChunk> {
        if self.text.len() < self.max_bytes {
            return None;
        }
        let mut end = self.max_bytes;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let rest = self.text.split_off(end);
        let data = std::mem::replace(&mut self.text, rest);
        if self.text.is_empty() {
            self.since = None;
        }
        Some(self.chunk(data))
    }

    /// Everything pending, if its oldest byte has waited `flush_after` at `now`.
    pub fn pop_due(&mut self, now: Instant, flush_after: Duration) -> Option<LogChunk> {
        match self.deadline(flush_after) {
            Some(deadline) if now >= deadline => self.take(),
            _ => None,
        }
    }

    /// When the pending text is due, if there is any.
    pub fn deadline(&self, flush_after: Duration) -> Option<Instant> {
        self.since.map(|since| since + flush_after)
    }

    /// How many chunks this batcher has cut so far.
    pub fn chunks(&self) -> u64 {
        self.next_seq
    }

    /// Everything pending, at the end of the output (a dangling partial character becomes
    /// U+FFFD).
    pub fn finish(&mut self) -> Vec<LogChunk> {
        if !self.partial.is_empty() {
            self.text.push(char::REPLACEMENT_CHARACTER);
            self.partial.clear();
        }
        let mut chunks = Vec::new();
        while let Some(chunk) = self.pop_full() {
            chunks.push(chunk);
        }
        chunks.extend(self.take());
        chunks
    }

    fn take(&mut self) -> Option<LogChunk> {
        self.since = None;
        if self.text.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.text);
        Some(self.chunk(data))
    }

    fn chunk(&mut self, data: String) -> LogChunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        LogChunk {
            phase: self.phase,
            seq,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(chunks: &[LogChunk]) -> Vec<(u64, usize)> {
        chunks.iter().map(|c| (c.seq, c.data.len())).collect()
    }

    const FLUSH_AFTER: Duration = Duration::from_millis(200);
    const FLUSH_BYTES: usize = 32 * 1024;

    #[test]
    fn waits_for_the_deadline() {
        let t0 = Instant::now();
        let mut batcher = LogBatcher::new(Phase::Run, FLUSH_BYTES);
        assert_eq!(batcher.deadline(FLUSH_AFTER), None);
        batcher.push(b"a\n", t0);
        batcher.push(b"b\n", t0 + Duration::from_millis(150));
        assert_eq!(batcher.deadline(FLUSH_AFTER), Some(t0 + FLUSH_AFTER));
        assert_eq!(
            batcher.pop_due(t0 + Duration::from_millis(199), FLUSH_AFTER),
            None
        );
        // Someone starts following: the shorter delay applies to what is pending.
        assert!(
            batcher
                .pop_due(t0 + Duration::from_millis(199), Duration::from_millis(100))
                .is_some()
        );
        batcher.push(b"a\nb\n", t0);
        let chunk = batcher.pop_due(t0 + FLUSH_AFTER, FLUSH_AFTER).unwrap();
        assert_eq!(
            (chunk.phase, chunk.seq, chunk.data.as_str()),
            (Phase::Run, 1, "a\nb\n")
        );
        assert_eq!(batcher.deadline(FLUSH_AFTER), None);
        batcher.push(b"c", t0 + Duration::from_secs(1));
        assert_eq!(batcher.finish()[0].seq, 2);
        assert_eq!(batcher.chunks(), 3);
        assert!(batcher.finish().is_empty());
    }

    #[test]
    fn full_chunks_are_cut_at_char_boundaries() {
        let t0 = Instant::now();
        let mut batcher = LogBatcher::new(Phase::Setup, FLUSH_BYTES);
        let text = format!(
            "{}é{}",
            "x".repeat(FLUSH_BYTES - 1),
            "y".repeat(FLUSH_BYTES + 10)
        );
        batcher.push(text.as_bytes(), t0);
        let mut chunks = Vec::new();
        while let Some(chunk) = batcher.pop_full() {
            chunks.push(chunk);
        }
        assert_eq!(data(&chunks), [(0, FLUSH_BYTES - 1), (1, FLUSH_BYTES)]);
        chunks.extend(batcher.finish());
        assert_eq!(data(&chunks[2..]), [(2, 12)]);
        let joined: String = chunks.into_iter().map(|c| c.data).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn output_past_the_quota_is_dropped_with_a_notice() {
        let t0 = Instant::now();
        let mut batcher = LogBatcher::with_quota(Phase::Run, FLUSH_BYTES, 10);
        batcher.push(b"0123456", t0);
        batcher.push(b"789abcdef", t0);
        batcher.push(b"more", t0);
        let text: String = batcher.finish().into_iter().map(|c| c.data).collect();
        assert_eq!(
            text,
            "0123456789\n[stratus: this node's run output reached the log quota of 10 bytes; the rest is not kept]\n"
        );
    }

    #[test]
    fn characters_split_between_reads_are_kept_whole() {
        let t0 = Instant::now();
        let mut batcher = LogBatcher::new(Phase::Run, FLUSH_BYTES);
        let snowman = "☃".as_bytes();
        batcher.push(&snowman[..1], t0);
        assert_eq!(batcher.deadline(FLUSH_AFTER), None, "nothing decodable yet");
        batcher.push(&snowman[1..], t0);
        batcher.push(b"\xffok\xe2\x98", t0);
        let chunks = batcher.finish();
        assert_eq!(chunks[0].data, "☃\u{fffd}ok\u{fffd}");
    }
}
