//! A guest's stdin read from a stream (a stored document) piece by piece,
//! as wasmtime-wasi's own `InputFile` reads a file: reads block the worker
//! thread the guest runs on, which is what a file read does anyway.

use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

/// At most this much is read for one guest read.
const MAX_READ: usize = 64 << 10;

/// Every handle the guest opens on stdin shares the one reader.
#[derive(Clone)]
pub struct StreamStdin {
    reader: Arc<Mutex<Box<dyn Read + Send>>>,
}

impl StreamStdin {
    pub fn new(reader: Box<dyn Read + Send>) -> StreamStdin {
        StreamStdin {
            reader: Arc::new(Mutex::new(reader)),
        }
    }

    fn read_into(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| std::io::Error::other("stdin reader poisoned"))?;
        loop {
            match reader.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl IsTerminal for StreamStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for StreamStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StreamStdin {
    async fn ready(&mut self) {}
}

impl InputStream for StreamStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let mut buf = BytesMut::zeroed(size.min(MAX_READ));
        let n = self
            .read_into(&mut buf)
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!(e)))?;
        if n == 0 && size > 0 {
            return Err(StreamError::Closed);
        }
        buf.truncate(n);
        Ok(buf.freeze())
    }
}

impl AsyncRead for StreamStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        let want = unfilled.len().min(MAX_READ);
        match self.read_into(&mut unfilled[..want]) {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
