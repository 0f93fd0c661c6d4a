//! A plugin's stdout and stderr, captured into one bounded buffer (interleaved as a terminal
//! would show them). Writes never fail — a chatty plugin must behave the same whether or not
//! anyone reads its output — and beyond the cap the middle is dropped, keeping the first and
//! the last bytes, where startup messages and the final traceback are.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept from the start of the output.
const HEAD_BYTES: usize = 256 << 10;
/// Bytes kept from the end of the output.
const TAIL_BYTES: usize = 256 << 10;
/// Largest single write the guest is offered (WASI's usual permit size).
const WRITE_PERMIT: usize = 64 << 10;

#[derive(Debug, Default)]
struct Buffer {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
}

/// A clonable handle to one plugin instance's captured output.
#[derive(Debug, Clone, Default)]
pub struct PluginOutput {
    buffer: Arc<Mutex<Buffer>>,
}

impl PluginOutput {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = HEAD_BYTES.saturating_sub(b.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        b.head.extend_from_slice(to_head);
        b.tail.extend(rest.iter().copied());
        let overflow = b.tail.len().saturating_sub(TAIL_BYTES);
        if overflow > 0 {
            b.tail.drain(..overflow);
            b.dropped += overflow as u64;
        }
    }

    /// Everything captured, lossily decoded, with a marker where bytes were dropped.
    pub fn text(&self) -> String {
        let b = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&b.head).into_owned();
        if b.dropped > 0 {
            text.push_str(&format!(
                "\n[… {} bytes of plugin output dropped (cap {} KiB) …]\n",
                b.dropped,
                (HEAD_BYTES + TAIL_BYTES) >> 10
            ));
        }
        let tail: Vec<u8> = b.tail.iter().copied().collect();
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }

    /// The last `lines` lines, for an error message.
    pub fn last_lines(&self, lines: usize) -> String {
        let text = self.text();
        let all: Vec<&str> = text.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for PluginOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_and_says_what_was_dropped() {
        let out = PluginOutput::default();
        out.push(b"started\n");
        for _ in 0..10_000 {
            out.push(&[b'x'; 100]);
        }
        out.push(b"\nTraceback: the cause\n");
        let text = out.text();
        assert!(text.starts_with("started\n"));
        assert!(text.contains("bytes of plugin output dropped"));
        assert_eq!(out.last_lines(1), "Traceback: the cause");
        assert!(text.len() < HEAD_BYTES + TAIL_BYTES + 200);
    }
}
