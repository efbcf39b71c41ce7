//! A small X12 reader for guests: the delimiters from the ISA segment,
//! then segments and elements as byte slices (X12 is often not UTF-8).
//! Shared by the x12-to-csv, x12-997 and route-by-sender examples
//! (`#[path]` module).

/// The ISA segment has fixed-width elements: it is always 106 characters,
/// terminator included, which is how a reader learns the delimiters.
const ISA_LENGTH: usize = 106;
const ISA_ELEMENT_SEPARATOR: usize = 3;
const ISA_SEGMENT_TERMINATOR: usize = 105;

/// An X12 document and the delimiters its ISA segment declares.
pub struct Interchange<'a> {
    data: &'a [u8],
    pub element_separator: u8,
    pub segment_terminator: u8,
}

impl<'a> Interchange<'a> {
    pub fn parse(input: &'a [u8]) -> Result<Interchange<'a>, String> {
        // Files saved by editors may start with a byte order mark or blank lines.
        let data = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        let start = data
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(data.len());
        let data = &data[start..];
        if !data.starts_with(b"ISA") {
            return Err("the input is not X12: it does not start with an ISA segment".into());
        }
        if data.len() < ISA_LENGTH {
            return Err(format!(
                "the ISA segment is cut short: {} bytes, an ISA segment has {ISA_LENGTH}",
                data.len()
            ));
        }
        let element_separator = data[ISA_ELEMENT_SEPARATOR];
        let segment_terminator = data[ISA_SEGMENT_TERMINATOR];
        if element_separator.is_ascii_alphanumeric()
            || segment_terminator.is_ascii_alphanumeric()
            || element_separator == segment_terminator
        {
            return Err(format!(
                "the ISA segment declares unusable delimiters (element {:?}, segment {:?})",
                char::from(element_separator),
                char::from(segment_terminator)
            ));
        }
        Ok(Interchange {
            data,
            element_separator,
            segment_terminator,
        })
    }

    /// The non-empty segments, without their terminator. Line breaks
    /// around segments ("~\r\n", common in files made for people to read)
    /// are not part of them.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        self.data
            .split(move |&b| b == self.segment_terminator)
            .map(trim_line_breaks)
            .filter(|s| !s.is_empty())
            .map(move |s| Segment {
                bytes: s,
                elements: s.split(|&b| b == self.element_separator).collect(),
            })
    }
}

fn trim_line_breaks(mut s: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// One segment split into elements; element 0 is the segment ID.
pub struct Segment<'a> {
    /// The segment as received, without its terminator.
    pub bytes: &'a [u8],
    pub elements: Vec<&'a [u8]>,
}

impl<'a> Segment<'a> {
    pub fn id(&self) -> &'a [u8] {
        self.element(0)
    }

    /// Element `n` (X12 numbering: BEG03 is `element(3)`); empty when the
    /// segment is shorter, as X12 drops trailing empty elements.
    pub fn element(&self, n: usize) -> &'a [u8] {
        self.elements.get(n).copied().unwrap_or(b"")
    }
}
