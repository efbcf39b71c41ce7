//! MIME entities (RFC 2045/2046) and multipart/signed bodies (RFC 1847),
//! parsed as views into the received bytes.
//!
//! AS2 signatures and MICs cover a MIME part *exactly as sent*, so this
//! parser never re-encodes: an [`Entity`] holds slices of the input, and the
//! canonical forms used for verification are built explicitly from them.
//! Line ends may be CRLF or bare LF (captured messages often have the latter).

use std::borrow::Cow;

use base64::Engine;

use super::error::{As2Error, ErrorKind, Result};
use super::headers::Headers;

/// The header section of one entity may not exceed this many bytes.
/// Real AS2 parts carry a handful of short headers; a larger block is hostile.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Nor may it hold more header fields than this.
pub const MAX_HEADER_FIELDS: usize = 256;

/// One MIME entity: its header fields and its body, both borrowed.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    /// The whole entity as received.
    pub raw: &'a [u8],
    /// The header lines as received, without the blank line that ends them.
    pub header_block: &'a [u8],
    /// Header fields, unfolded.
    pub headers: Headers,
    /// Everything after the blank line.
    pub body: &'a [u8],
}

impl<'a> Entity<'a> {
    /// The parsed Content-Type; `text/plain` when absent (RFC 2045 section 5.2).
    pub fn content_type(&self) -> Result<ContentType> {
        match self.headers.get("content-type") {
            Some(value) => ContentType::parse(value),
            None => Ok(ContentType {
                mime_type: "text/plain".into(),
                params: Vec::new(),
            }),
        }
    }

    /// The lowercased Content-Transfer-Encoding, `7bit` when absent.
    pub fn transfer_encoding(&self) -> String {
        self.headers
            .get("content-transfer-encoding")
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".into())
    }

    /// The body with its Content-Transfer-Encoding removed.
    pub fn decoded_body(&self) -> Result<Cow<'a, [u8]>> {
        decode_transfer_encoding(&self.transfer_encoding(), self.body)
    }

    /// The entity with header lines ended by CRLF and the body untouched:
    /// the canonical form for a binary part (headers are always text).
    pub fn with_crlf_headers(&self) -> Vec<u8> {
        let mut out = self.with_crlf_headers_only();
        out.extend_from_slice(self.body);
        out
    }

    /// The header section of [`Entity::with_crlf_headers`], blank line
    /// included: what goes before the untouched body.
    pub fn with_crlf_headers_only(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_block.len() + 64);
        if !self.header_block.is_empty() {
            for line in split_lines(self.header_block) {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Splits at LF, dropping a CR before it; a last line without LF is kept.
fn split_lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let trimmed = block.strip_suffix(b"\n").unwrap_or(block);
    trimmed
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// Converts every bare LF to CRLF (RFC 5751 section 3.1.1 canonical text).
pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    to_crlf_after(data, 0)
}

/// [`to_crlf`] of a chunk whose preceding byte was `prev`, so that a long
/// input can be converted piece by piece.
pub fn to_crlf_after(data: &[u8], mut prev: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Parses a MIME entity: header fields, a blank line, a body.
pub fn parse_entity(raw: &[u8]) -> Result<Entity<'_>> {
    let mut headers = Headers::new();
    let mut pos = 0usize;
    let mut current: Option<(String, String)> = None;
    let header_end;
    let body_start;
    loop {
        if pos > MAX_HEADER_BLOCK {
            return Err(As2Error::malformed(format!(
                "MIME header section is longer than {MAX_HEADER_BLOCK} bytes"
            )));
        }
        // No header line is longer than the limit, so look no further: a
        // large (mapped) body without line ends is neither scanned nor
        // paged in just to find that out.
        let rest = &raw[pos..];
        let window = &rest[..rest.len().min(MAX_HEADER_BLOCK + 2)];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            if rest.len() > MAX_HEADER_BLOCK {
                return Err(As2Error::malformed(format!(
                    "MIME header line is longer than {MAX_HEADER_BLOCK} bytes"
                )));
            }
            return Err(As2Error::malformed(
                "truncated MIME entity: no blank line ends the header section",
            ));
        };
        let line_end = pos + nl;
        let line = &raw[pos..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            header_end = pos;
            body_start = line_end + 1;
            break;
        }
        if line.len() > MAX_HEADER_BLOCK {
            return Err(As2Error::malformed(format!(
                "MIME header line is longer than {MAX_HEADER_BLOCK} bytes"
            )));
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            // RFC 5322 folding: a continuation of the previous field.
            match current.as_mut() {
                Some((_, value)) => {
                    // Joined by one space; a field folded right after its
                    // colon, or a blank continuation, adds no stray space.
                    let more = text.trim();
                    if !more.is_empty() {
                        if !value.is_empty() {
                            value.push(' ');
                        }
                        value.push_str(more);
                    }
                }
                None => {
                    return Err(As2Error::malformed(
                        "MIME header section starts with a continuation line",
                    ))
                }
            }
        } else {
            let Some((name, value)) = text.split_once(':') else {
                return Err(As2Error::malformed(format!(
                    "malformed MIME header line (no colon): {:?}",
                    truncate_for_message(&text)
                )));
            };
            let name = name.trim();
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(As2Error::malformed(format!(
                    "malformed MIME header name {:?}",
                    truncate_for_message(name)
                )));
            }
            if let Some((n, v)) = current.take() {
                headers.push(n, v);
            }
            if headers.len() >= MAX_HEADER_FIELDS {
                return Err(As2Error::malformed(format!(
                    "more than {MAX_HEADER_FIELDS} MIME header fields"
                )));
            }
            current = Some((name.to_string(), value.trim().to_string()));
        }
        pos = line_end + 1;
    }
    if let Some((n, v)) = current.take() {
        headers.push(n, v);
    }
    Ok(Entity {
        raw,
        header_block: &raw[..header_end],
        headers,
        body: &raw[body_start..],
    })
}

/// Parses a block of header fields that is not followed by a body, such as
/// the content of message/disposition-notification (RFC 3798 section 3):
/// groups of fields separated by blank lines, all collected in order.
pub fn parse_field_block(block: &[u8]) -> Result<Headers> {
    let mut fields = Headers::new();
    let mut rest = block;
    while !rest.is_empty() {
        // Skip blank lines between groups.
        let line_len = memchr::memchr(b'\n', rest)
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        if rest[..line_len].iter().all(|b| b.is_ascii_whitespace()) {
            rest = &rest[line_len..];
            continue;
        }
        // Copy only this group, up to the blank line that ends it: copying
        // all of `rest` for every group made many small groups quadratic.
        let mut group = rest[..group_end(rest)].to_vec();
        group.extend_from_slice(b"\r\n\r\n");
        let entity = parse_entity(&group)?;
        for (name, value) in entity.headers.iter() {
            fields.push(name, value);
        }
        let consumed = entity.header_block.len().min(rest.len());
        rest = &rest[consumed..];
    }
    Ok(fields)
}

/// Where the first group of a field block ends: the start of the first
/// line that [`parse_entity`] takes for the blank line (empty, or a lone
/// CR), or the end of the block.
fn group_end(block: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(nl) = memchr::memchr(b'\n', &block[pos..]) {
        let line = &block[pos..pos + nl];
        if line.is_empty() || line == b"\r" {
            return pos;
        }
        pos += nl + 1;
    }
    block.len()
}

/// Builds an entity view for a body whose headers came from elsewhere
/// (the HTTP request headers of an AS2 message).
pub fn entity_from_parts<'a>(headers: Headers, body: &'a [u8]) -> Entity<'a> {
    Entity {
        raw: body,
        header_block: &[],
        headers,
        body,
    }
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A header value of the form `token; name=value; name="quoted value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameterized {
    /// The leading token, lowercased (`multipart/signed`, `attachment`).
    pub value: String,
    /// Parameters with lowercased names, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Parameterized {
    pub fn parse(raw: &str) -> Result<Self> {
        let mut rest = raw.trim();
        let end = rest.find(';').unwrap_or(rest.len());
        let value = rest[..end].trim().to_ascii_lowercase();
        rest = &rest[end..];
        let mut params = Vec::new();
        while let Some(after) = rest.strip_prefix(';') {
            let after = after.trim_start();
            if after.is_empty() {
                break;
            }
            let Some(eq) = after.find('=') else {
                // A bare token without '=': tolerated, skipped (some senders write "; ;").
                rest = after.find(';').map(|i| &after[i..]).unwrap_or("");
                continue;
            };
            let name = after[..eq].trim().to_ascii_lowercase();
            let value_part = after[eq + 1..].trim_start();
            let (param_value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut close = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                out.push(escaped);
                            }
                        }
                        '"' => {
                            close = Some(i);
                            break;
                        }
                        _ => out.push(c),
                    }
                }
                let Some(close) = close else {
                    return Err(As2Error::malformed(format!(
                        "unterminated quoted parameter {name:?} in {raw:?}"
                    )));
                };
                let remaining = &quoted[close + 1..];
                let remaining = remaining.find(';').map(|i| &remaining[i..]).unwrap_or("");
                (out, remaining)
            } else {
                let end = value_part.find(';').unwrap_or(value_part.len());
                (value_part[..end].trim().to_string(), &value_part[end..])
            };
            if !name.is_empty() {
                params.push((name, param_value));
            }
            rest = remaining;
        }
        Ok(Parameterized { value, params })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lowercased.
    pub mime_type: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(raw: &str) -> Result<Self> {
        let p = Parameterized::parse(raw)?;
        if !p.value.contains('/') {
            return Err(As2Error::malformed(format!(
                "Content-Type {raw:?} has no type/subtype"
            )));
        }
        Ok(ContentType {
            mime_type: p.value,
            params: p.params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, mime_type: &str) -> bool {
        self.mime_type.eq_ignore_ascii_case(mime_type)
    }

    pub fn is_multipart(&self) -> bool {
        self.mime_type.starts_with("multipart/")
    }

    /// application/pkcs7-mime or the pre-standard x-pkcs7-mime.
    pub fn is_pkcs7_mime(&self) -> bool {
        self.is("application/pkcs7-mime") || self.is("application/x-pkcs7-mime")
    }

    /// application/pkcs7-signature or x-pkcs7-signature.
    pub fn is_pkcs7_signature(&self) -> bool {
        self.is("application/pkcs7-signature") || self.is("application/x-pkcs7-signature")
    }
}

/// Splits a multipart body (RFC 2046 section 5.1.1) into its parts, each
/// exactly as received. The line end before a delimiter belongs to the
/// delimiter, not to the part. A missing closing delimiter is an error:
/// it is how a truncated upload shows.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(As2Error::malformed(format!(
            "invalid multipart boundary of {} bytes",
            boundary.len()
        )));
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let finder = memchr::memmem::Finder::new(delimiter);
    let mut parts = Vec::new();
    // Start of the current part, once the first delimiter was seen.
    let mut part_start: Option<usize> = None;
    let mut search_from = 0usize;
    while let Some(found) = finder.find(&body[search_from..]) {
        let at = search_from + found;
        search_from = at + delimiter.len();
        let at_line_start = at == 0 || body[at - 1] == b'\n';
        if !at_line_start {
            continue;
        }
        let after = &body[at + delimiter.len()..];
        let closing = after.starts_with(b"--");
        // The rest of the delimiter line may only hold transport padding.
        let line_len = memchr::memchr(b'\n', after).unwrap_or(after.len());
        let rest_of_line = &after[if closing { 2 } else { 0 }..line_len];
        if !rest_of_line
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
        {
            continue; // "--boundaryX": a longer string, not our delimiter
        }
        if let Some(start) = part_start {
            let mut end = at;
            if end > start && body[end - 1] == b'\n' {
                end -= 1;
                if end > start && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            parts.push(&body[start..end.max(start)]);
        }
        if closing {
            if part_start.is_none() {
                return Err(As2Error::malformed(
                    "multipart body closes before its first part",
                ));
            }
            return Ok(parts);
        }
        if line_len == after.len() {
            break; // delimiter line is the end of the input
        }
        part_start = Some(at + delimiter.len() + line_len + 1);
    }
    Err(As2Error::malformed(format!(
        "truncated multipart body: closing delimiter --{boundary}-- not found ({} parts read)",
        parts.len()
    )))
}

/// Removes a Content-Transfer-Encoding (RFC 2045 section 6).
pub fn decode_transfer_encoding<'a>(encoding: &str, body: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(Cow::Borrowed(body)),
        "base64" => decode_base64(body).map(Cow::Owned),
        "quoted-printable" => quoted_printable::decode(body, quoted_printable::ParseMode::Robust)
            .map(Cow::Owned)
            .map_err(|e| As2Error::malformed(format!("invalid quoted-printable body: {e}"))),
        other => Err(As2Error::new(
            ErrorKind::Unsupported,
            format!("unsupported Content-Transfer-Encoding {other:?}"),
        )),
    }
}

/// Lenient base64: line breaks and spaces anywhere, padding optional.
pub fn decode_base64(data: &[u8]) -> Result<Vec<u8>> {
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    lenient_base64()
        .decode(&compact)
        .map_err(|e| As2Error::malformed(format!("invalid base64 body: {e}")))
}

fn lenient_base64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// Piece size of the streaming decoders.
const DECODE_CHUNK: usize = 256 << 10;

/// Removes a Content-Transfer-Encoding piece by piece into `sink`, holding
/// at most a few hundred KiB at once: for bodies too large to decode into
/// one buffer (an inflated layer spilled to disk).
pub fn decode_transfer_encoding_to(
    encoding: &str,
    body: &[u8],
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    match encoding.trim().to_ascii_lowercase().as_str() {
        "base64" => {
            let mut decoder = Base64Stream::default();
            for chunk in body.chunks(DECODE_CHUNK) {
                decoder.push(chunk, &mut sink)?;
            }
            decoder.finish(&mut sink)
        }
        "quoted-printable" => {
            // Pieces end at a line end, where quoted-printable state resets.
            let mut rest = body;
            while !rest.is_empty() {
                let mut end = rest.len().min(DECODE_CHUNK);
                if end < rest.len() {
                    end = match memchr::memrchr(b'\n', &rest[..end]) {
                        Some(i) => i + 1,
                        None => memchr::memchr(b'\n', &rest[end..])
                            .map(|i| end + i + 1)
                            .unwrap_or(rest.len()),
                    };
                }
                sink(&decode_transfer_encoding("quoted-printable", &rest[..end])?)?;
                rest = &rest[end..];
            }
            Ok(())
        }
        other => sink(&decode_transfer_encoding(other, body)?),
    }
}

/// Lenient base64 decoded piece by piece, pieces cut anywhere.
#[derive(Default)]
pub struct Base64Stream {
    /// Characters of an incomplete quantum, waiting for the next piece.
    pending: Vec<u8>,
}

impl Base64Stream {
    /// Decodes what `chunk` completes into `sink`.
    pub fn push(&mut self, chunk: &[u8], sink: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.pending
            .extend(chunk.iter().filter(|b| !b.is_ascii_whitespace()));
        // Whole quanta only; the rest waits for the next piece.
        let whole = self.pending.len() / 4 * 4;
        if whole > 0 {
            let decoded = lenient_base64()
                .decode(&self.pending[..whole])
                .map_err(|e| As2Error::malformed(format!("invalid base64 body: {e}")))?;
            sink(&decoded)?;
            self.pending.drain(..whole);
        }
        Ok(())
    }

    /// Decodes the last, possibly unpadded, quantum.
    pub fn finish(self, sink: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if !self.pending.is_empty() {
            sink(&decode_base64(&self.pending)?)?;
        }
        Ok(())
    }
}

/// Base64 with 76-character CRLF-terminated lines, as MIME writes it.
pub fn encode_base64_lines(data: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reduces a file name from Content-Disposition (RFC 6266/6362) to a safe
/// base name: no directories, no `..`, no control characters.
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != ':')
        .collect();
    // Dots and spaces in any mix (". .x" included): no hidden or relative names.
    let cleaned = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end()
        .to_string();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        None
    } else {
        Some(cleaned.chars().take(255).collect())
    }
}

/// The file name a Content-Disposition carries, sanitised.
/// Understands `filename=` and the RFC 2231 form `filename*=utf-8''...`.
pub fn disposition_file_name(content_disposition: &str) -> Option<String> {
    let parsed = Parameterized::parse(content_disposition).ok()?;
    if let Some(extended) = parsed.param("filename*") {
        let encoded = extended.splitn(3, '\'').nth(2).unwrap_or(extended);
        if let Some(decoded) = percent_decode(encoded) {
            return sanitize_file_name(&decoded);
        }
    }
    parsed.param("filename").and_then(sanitize_file_name)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_with_lf_and_crlf() {
        for sep in ["\n", "\r\n"] {
            let raw =
                format!("Content-Type: text/plain{sep}X-Folded: a{sep}\tb{sep}{sep}body{sep}");
            let e = parse_entity(raw.as_bytes()).expect("parses");
            assert_eq!(e.headers.get("content-type"), Some("text/plain"));
            assert_eq!(e.headers.get("x-folded"), Some("a b"));
            assert_eq!(e.body, format!("body{sep}").as_bytes());
            assert_eq!(
                e.with_crlf_headers(),
                format!("Content-Type: text/plain\r\nX-Folded: a\r\n\tb\r\n\r\nbody{sep}")
                    .as_bytes()
            );
        }
    }

    #[test]
    fn entity_errors() {
        assert_eq!(
            parse_entity(b"Content-Type: x/y\r\n")
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(ErrorKind::Malformed)
        );
        assert!(parse_entity(b"no colon here\r\n\r\n").is_err());
        let huge = format!("X-Big: {}\r\n\r\n", "a".repeat(1 << 20));
        let err = parse_entity(huge.as_bytes())
            .map(|_| ())
            .expect_err("huge header refused");
        assert!(err.message().contains("longer than"), "{err}");
        let many: String = (0..300)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
            + "\r\n";
        assert!(parse_entity(many.as_bytes()).is_err());
        // No headers at all is a valid entity.
        let e = parse_entity(b"\r\nbody").expect("parses");
        assert!(e.headers.is_empty());
        assert_eq!(e.body, b"body");
    }

    #[test]
    fn multipart_exact_parts() {
        for sep in ["\n", "\r\n"] {
            let body = format!("preamble{sep}--b1{sep}A: 1{sep}{sep}one{sep}{sep}--b1 {sep}two{sep}--b1--{sep}epilogue");
            let parts = split_multipart(body.as_bytes(), "b1").expect("splits");
            assert_eq!(
                parts,
                vec![
                    format!("A: 1{sep}{sep}one{sep}").as_bytes(),
                    b"two".as_slice()
                ]
            );
        }
        assert!(
            split_multipart(b"--b1\r\nA: 1\r\n\r\none\r\n", "b1").is_err(),
            "truncated"
        );
        let tricky = b"--b1\r\nx\r\n--b1x\r\ny\r\n--b1--\r\n";
        assert_eq!(
            split_multipart(tricky, "b1").expect("splits"),
            vec![b"x\r\n--b1x\r\ny".as_slice()]
        );
    }

    #[test]
    fn content_type_params() {
        let ct = ContentType::parse(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha256; \tboundary=\"----=_Part_1;x\"",
        )
        .expect("parses");
        assert!(ct.is("multipart/signed"));
        assert_eq!(ct.param("boundary"), Some("----=_Part_1;x"));
        assert_eq!(ct.param("MICALG"), Some("sha256"));
        assert!(ContentType::parse("nonsense").is_err());
        assert!(ContentType::parse("a/b; x=\"open").is_err());
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(
            disposition_file_name("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            disposition_file_name("attachment; filename=..\\..\\boot.ini").as_deref(),
            Some("boot.ini")
        );
        assert_eq!(
            disposition_file_name("attachment; filename=\"..\"").as_deref(),
            None
        );
        assert_eq!(
            disposition_file_name("attachment; filename=payload.txt").as_deref(),
            Some("payload.txt")
        );
        assert_eq!(
            disposition_file_name("attachment; filename*=utf-8''caf%C3%A9.edi").as_deref(),
            Some("café.edi")
        );
        assert_eq!(disposition_file_name("attachment").as_deref(), None);
    }

    #[test]
    fn transfer_encodings() {
        assert_eq!(
            decode_transfer_encoding("base64", b"aGVs\r\nbG8=")
                .expect("b64")
                .as_ref(),
            b"hello"
        );
        assert_eq!(
            decode_transfer_encoding("Quoted-Printable", b"a=3Db=\r\nc")
                .expect("qp")
                .as_ref(),
            b"a=bc"
        );
        assert_eq!(
            decode_transfer_encoding("binary", b"\x00\xff")
                .expect("bin")
                .as_ref(),
            b"\x00\xff"
        );
        assert_eq!(
            decode_transfer_encoding("x-uuencode", b"")
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(ErrorKind::Unsupported)
        );
        assert!(decode_base64(b"!!!!").is_err());
        assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }
}
