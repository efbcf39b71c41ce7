//! Issue 11, "Zip bombs before authentication", against the real `atom`
//! binary: four concurrent 1 GiB decompression bombs (about 1 MB each on
//! the wire) to a partner that requires encryption and four to a partner
//! without security requirements (default 512 MiB limit). Each is refused
//! with the right negative MDN, and the server's peak RSS stays small.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use atom_connectors::as2::compress;
use atom_connectors::as2::error::ErrorModifier;
use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use common::{plain_headers, plain_start, set_header, Site};

const MIB: usize = 1 << 20;

/// The server may use this much memory at its peak, whatever it was sent.
const PEAK_RSS_LIMIT_KIB: u64 = 256 * 1024;

/// A zlib stream of `mib` MiB of zeros after a MIME header, built without
/// holding the inflated bytes: blocks deflated by fresh compressors and
/// sync-flushed (self-contained, byte-aligned) are concatenated.
fn zlib_zero_bomb(head: &[u8], mib: usize) -> Vec<u8> {
    let block = |data: &[u8]| {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("deflate");
        e.flush().expect("sync flush");
        e.get_ref().clone()
    };
    let zeros = block(&vec![0u8; MIB]);
    let last = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best())
        .finish()
        .expect("final block");
    let mut out = vec![0x78, 0xda];
    out.extend_from_slice(&block(head));
    for _ in 0..mib {
        out.extend_from_slice(&zeros);
    }
    out.extend_from_slice(&last);
    // Adler-32: over the header, then zeros (a stays, b grows by a per byte).
    let (mut a, mut b) = (1u64, 0u64);
    for &byte in head {
        a = (a + u64::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b = (b + (mib as u64 * MIB as u64) % 65521 * a) % 65521;
    out.extend_from_slice(&(((b << 16) | a) as u32).to_be_bytes());
    out
}

/// POSTs over plain HTTP/1.1 and returns (status, content type, body);
/// with a longer read timeout than `common::post`, for a loaded machine.
fn post(addr: SocketAddr, headers: &[(String, String)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    let mut request = format!(
        "POST /as2 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write head");
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "sync MDNs are sent with a length"
    );
    (status, content_type, raw[end + 4..].to_vec())
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn zip_bombs_inflated_before_authentication_regression() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy(
        "strict",
        "start:\n  as2:\n    as2_from:\n      id: bomber-strict\n    as2_to:\n      id: atom\n      decryption_key: keystore:receiver\n    security:\n      require_encrypted: true\n",
    );
    site.deploy("open", &plain_start("bomber-open", "atom"));
    let atom = site.start();
    let pid = atom.child.id();
    let (hwm_at_start, _) = memory_kib(pid);

    let bomb = compress::compressed_data(&zlib_zero_bomb(
        b"Content-Type: application/octet-stream\r\n\r\n",
        1024,
    ));
    assert!(
        bomb.len() < 2 * MIB,
        "1 GiB bomb of {} bytes on the wire",
        bomb.len()
    );
    let started = Instant::now();
    let addr = atom.http();
    let results: Vec<(String, u16, String, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let from = if i % 2 == 0 {
                    "bomber-strict"
                } else {
                    "bomber-open"
                };
                let bomb = &bomb;
                scope.spawn(move || {
                    let mut headers = plain_headers(from, "atom", &format!("<bomb-{i}@{from}>"));
                    set_header(
                        &mut headers,
                        "Content-Type",
                        "application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z",
                    );
                    set_header(&mut headers, "Content-Transfer-Encoding", "binary");
                    let (status, content_type, body) = post(addr, &headers, bomb);
                    (from.to_string(), status, content_type, body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender thread"))
            .collect()
    });
    let elapsed = started.elapsed();

    for (from, status, content_type, body) in &results {
        assert_eq!(*status, 200, "{from}: {}", String::from_utf8_lossy(body));
        let receipt = mdn::parse(content_type, body, MdnTrust::Skip)
            .unwrap_or_else(|e| panic!("{from}: MDN: {e}"));
        let (expected, reason) = if from == "bomber-strict" {
            (
                ErrorModifier::InsufficientMessageSecurity,
                "requires encryption",
            )
        } else {
            (
                ErrorModifier::DecompressionFailed,
                "exceeds the limit of 536870912 bytes",
            )
        };
        assert_eq!(
            receipt.disposition,
            Disposition::Error(expected),
            "{from}: {}",
            String::from_utf8_lossy(body)
        );
        assert!(
            String::from_utf8_lossy(body).contains(reason),
            "{from}: the receipt names the reason {reason:?}: {}",
            String::from_utf8_lossy(body)
        );
    }
    let (hwm, rss) = memory_kib(pid);
    eprintln!(
        "8 bombs of {} bytes (4 per listener) answered in {:.1} s; server VmHWM {} MiB \
         (at start {} MiB), VmRSS now {} MiB",
        bomb.len(),
        elapsed.as_secs_f64(),
        hwm >> 10,
        hwm_at_start >> 10,
        rss >> 10
    );
    assert!(
        hwm < PEAK_RSS_LIMIT_KIB,
        "server peak RSS {} MiB (limit {} MiB)",
        hwm >> 10,
        PEAK_RSS_LIMIT_KIB >> 10
    );
    // The refusals are logged with their modifiers, and nothing was
    // stored as a payload.
    let messages = site.messages();
    assert_eq!(messages.len(), 8, "{messages:?}");
    for m in &messages {
        assert!(m["payload_path"].is_null(), "{m}");
    }
    let log = site.log();
    let refused = |modifier: &str| {
        log.lines()
            .filter(|l| l.contains("message refused") && l.contains(modifier))
            .count()
    };
    assert_eq!(refused("insufficient-message-security"), 4, "{log}");
    assert_eq!(refused("decompression-failed"), 4, "{log}");
    atom.stop();
}
