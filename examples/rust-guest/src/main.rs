//! x12-to-csv: an Atom process guest that turns an X12 850 purchase order
//! into a CSV of its line items.
//!
//! Guest ABI (WASI preview 1 command): the received document is stdin, the
//! CSV written to stdout becomes the output document, stderr is the process
//! log, and a non-zero exit code fails the execution.
//!
//! ```text
//! po_number,line,quantity,unit,unit_price,product_id
//! PO-1001,1,10,EA,9.95,WIDGET-1
//! ```
//!
//! Standard library only, so that it builds with a distribution's rustc
//! (Debian's 1.63 and its wasm32-wasi std) as well as with rustup.

use std::io::{self, Read, Write};
use std::process;

// The X12 reader, shared with the x12-997 example.
mod x12;
use x12::{Interchange, Segment};

/// Exit code for input that is not what this guest handles (the runtime
/// reports "exited with code 2"); 1 is left for I/O failures.
const EXIT_BAD_INPUT: i32 = 2;
const EXIT_IO: i32 = 1;

/// Product ID qualifiers of PO1-06, -08, ...: vendor's part number, buyer's
/// part number, buyer's item number. The first one found is the product.
const PRODUCT_QUALIFIERS: [&[u8]; 3] = [b"VP", b"BP", b"IN"];

const HEADER: &str = "po_number,line,quantity,unit,unit_price,product_id\n";

/// Why the guest stops, and with which exit code.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn bad_input(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_BAD_INPUT,
            message: message.into(),
        }
    }

    fn io(context: &str, error: io::Error) -> Failure {
        Failure {
            code: EXIT_IO,
            message: format!("{context}: {error}"),
        }
    }
}

fn main() {
    if let Err(failure) = run() {
        eprintln!("x12-to-csv: {}", failure.message);
        process::exit(failure.code);
    }
}

fn run() -> Result<(), Failure> {
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| Failure::io("reading the document from stdin", e))?;

    let interchange = Interchange::parse(&input).map_err(Failure::bad_input)?;
    let mut csv = Vec::from(HEADER.as_bytes());
    let lines = write_lines(&interchange, &mut csv);

    // Written in one go: a partial CSV must never look like a complete one.
    io::stdout()
        .write_all(&csv)
        .and_then(|()| io::stdout().flush())
        .map_err(|e| Failure::io("writing the CSV to stdout", e))?;

    // A log line starting with "warn" marks the execution COMPLETE_WARN: an
    // order without items is worth a look, but is not an error.
    if lines == 0 {
        eprintln!("warn x12-to-csv: 0 line(s): the input has no PO1 segment");
    } else {
        eprintln!("x12-to-csv: {lines} line(s)");
    }
    Ok(())
}

/// Appends one CSV row per PO1 segment; returns how many.
fn write_lines(interchange: &Interchange<'_>, csv: &mut Vec<u8>) -> usize {
    // An interchange may hold several orders; each PO1 belongs to the
    // BEG (and so the PO number) that came before it.
    let mut po_number: &[u8] = b"";
    let mut lines = 0;
    for segment in interchange.segments() {
        match segment.id() {
            b"BEG" => po_number = segment.element(3),
            b"PO1" => {
                let row = [
                    po_number,
                    segment.element(1),
                    segment.element(2),
                    segment.element(3),
                    segment.element(4),
                    product_id(&segment),
                ];
                write_row(csv, &row);
                lines += 1;
            }
            _ => {}
        }
    }
    lines
}

/// The ID after the first known qualifier among the (qualifier, ID) pairs
/// that start at PO1-06; empty when the line names no product that way.
fn product_id<'a>(po1: &Segment<'a>) -> &'a [u8] {
    (6..po1.elements.len())
        .step_by(2)
        .find(|&i| PRODUCT_QUALIFIERS.contains(&po1.element(i)))
        .map(|i| po1.element(i + 1))
        .unwrap_or(b"")
}

/// Appends one RFC 4180 row. Bytes pass through unchanged: X12 is often
/// not UTF-8, and the CSV keeps whatever encoding the partner used.
fn write_row(csv: &mut Vec<u8>, fields: &[&[u8]]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            csv.push(b',');
        }
        let needs_quotes = field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
        if needs_quotes {
            csv.push(b'"');
            for &b in *field {
                if b == b'"' {
                    csv.push(b'"');
                }
                csv.push(b);
            }
            csv.push(b'"');
        } else {
            csv.extend_from_slice(field);
        }
    }
    csv.push(b'\n');
}
