//! Reading a Server-Sent Events stream (an MCP server's SSE answer) into the data of its
//! events, as the relay needs them: ids, event types and retry hints are not used, comments
//! (keep-alives) are skipped.

/// Splits an SSE byte stream into the data of each event. Feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// The data lines of the event being read.
    data: Vec<String>,
    /// Whether the event being read has a `data` field (an empty one counts).
    has_data: bool,
}

impl SseParser {
    /// Takes a chunk and returns the data of every event it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line(&String::from_utf8_lossy(&line), &mut events);
            } else {
                self.partial.push(byte);
            }
        }
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if self.has_data {
                events.push(self.data.join("\n"));
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            self.data.push(value.to_string());
            self.has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_comments_and_multiline_data() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b": stream open\n\nid: 1\nretry: 100\ndata: {\"a\"");
        assert!(events.is_empty());
        events.extend(parser.push(b":1}\n\nevent: message\r\ndata: x\r\ndata: y\r\n\r\n"));
        events.extend(parser.push(b"id: 3\n\n"));
        assert_eq!(events, ["{\"a\":1}", "x\ny"]);
    }
}
