//! route-by-sender: an Atom process guest that splits an X12 interchange
//! into its transaction sets and tags each with who sent it, so that later
//! steps can route them (a disk step's `{sender}/{transaction_set}-...`).
//!
//! For every ST..SE it sets two dynamic document properties through the
//! runtime's `atom` import module and emits the set as its own document:
//!
//! - `sender`: the interchange sender ID (ISA06, padding trimmed);
//! - `transaction_set`: the transaction set ID (ST01: 850, 856, ...).
//!
//! The emitted documents are the ST..SE segments, each followed by the
//! segment terminator; the ISA/GS envelope is left out. Nothing is
//! written to stdout (a non-empty stdout would become one more document).
//!
//! Standard library only, so that it builds with a distribution's rustc
//! (Debian's 1.63 and its wasm32-wasi std) as well as with rustup.

use std::io::{self, Read};
use std::process;

// The X12 reader of the x12-to-csv example.
#[path = "../../rust-guest/src/x12.rs"]
mod x12;
use x12::Interchange;

/// Exit code for input that is not what this guest handles (the runtime
/// reports "exited with code 2"); 1 is left for I/O and host failures.
const EXIT_BAD_INPUT: i32 = 2;
const EXIT_HOST: i32 = 1;

/// The host functions of the runtime (see the README, "Writing a process").
mod atom {
    #[link(wasm_import_module = "atom")]
    extern "C" {
        fn set_property(name_ptr: i32, name_len: i32, value_ptr: i32, value_len: i32) -> i32;
        fn emit(ptr: i32, len: i32) -> i32;
    }

    /// Sets a dynamic property on the documents emitted from now on.
    pub fn set(name: &str, value: &[u8]) -> Result<(), String> {
        // SAFETY: the host only reads the two ranges, which are live
        // slices of this module's memory (wasm32 pointers are 32-bit).
        let code = unsafe {
            set_property(
                name.as_ptr() as i32,
                name.len() as i32,
                value.as_ptr() as i32,
                value.len() as i32,
            )
        };
        check(code).map_err(|reason| format!("setting property {name:?}: {reason}"))
    }

    /// Emits one output document carrying the properties in force.
    pub fn emit_document(bytes: &[u8]) -> Result<(), String> {
        // SAFETY: as above; the host copies the bytes before returning.
        let code = unsafe { emit(bytes.as_ptr() as i32, bytes.len() as i32) };
        check(code).map_err(|reason| format!("emitting a document: {reason}"))
    }

    fn check(code: i32) -> Result<(), &'static str> {
        match code {
            0 => Ok(()),
            -1 => Err("the host refused the memory range (-1)"),
            -2 => Err("invalid property name (-2)"),
            -3 => Err("invalid property value: not UTF-8 or over 4 KiB (-3)"),
            -4 => Err("the process's output limit is reached (-4)"),
            _ => Err("unknown error code from the host"),
        }
    }
}

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

    fn host(message: String) -> Failure {
        Failure {
            code: EXIT_HOST,
            message,
        }
    }
}

fn main() {
    if let Err(failure) = run() {
        eprintln!("route-by-sender: {}", failure.message);
        process::exit(failure.code);
    }
}

fn run() -> Result<(), Failure> {
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| Failure::host(format!("reading the document from stdin: {e}")))?;

    let interchange = Interchange::parse(&input).map_err(Failure::bad_input)?;
    let sets = split_transaction_sets(&interchange)?;

    // A log line starting with "warn" marks the execution COMPLETE_WARN:
    // an envelope without transaction sets delivers nothing.
    if sets.is_empty() {
        eprintln!("warn route-by-sender: no transaction set (ST..SE) in the interchange");
        return Ok(());
    }
    for set in &sets {
        // Properties stay in force until changed, so both are set again
        // for every document rather than only when they differ.
        atom::set("sender", set.sender).map_err(Failure::host)?;
        atom::set("transaction_set", set.id).map_err(Failure::host)?;
        atom::emit_document(&set.bytes).map_err(Failure::host)?;
    }
    let mut senders = Vec::new();
    for set in &sets {
        let sender = String::from_utf8_lossy(set.sender);
        if !senders.contains(&sender) {
            senders.push(sender);
        }
    }
    eprintln!(
        "route-by-sender: {} transaction set(s) from {}",
        sets.len(),
        senders.join(", ")
    );
    Ok(())
}

/// One ST..SE, ready to emit.
struct TransactionSet<'a> {
    sender: &'a [u8],
    /// ST01.
    id: &'a [u8],
    /// Its segments, each followed by the segment terminator.
    bytes: Vec<u8>,
}

/// Collects every ST..SE. A file may hold several interchanges (ISA..IEA),
/// possibly from different senders: each set takes the ISA06 before it.
fn split_transaction_sets<'a>(
    interchange: &Interchange<'a>,
) -> Result<Vec<TransactionSet<'a>>, Failure> {
    let mut sets = Vec::new();
    let mut sender: &[u8] = b"";
    let mut open: Option<TransactionSet<'a>> = None;
    for segment in interchange.segments() {
        match segment.id() {
            b"ISA" => {
                sender = trim_spaces(segment.element(6));
                if sender.is_empty() {
                    return Err(Failure::bad_input(
                        "the interchange sender ID (ISA06) is empty",
                    ));
                }
                // Property values are UTF-8; say so here rather than fail in the host call.
                if std::str::from_utf8(sender).is_err() {
                    return Err(Failure::bad_input(format!(
                        "the interchange sender ID (ISA06) {:?} is not UTF-8",
                        String::from_utf8_lossy(sender)
                    )));
                }
            }
            b"ST" => {
                if let Some(unclosed) = open {
                    return Err(Failure::bad_input(format!(
                        "transaction set {} has no SE before the next ST",
                        String::from_utf8_lossy(unclosed.id)
                    )));
                }
                let id = segment.element(1);
                if id.is_empty() {
                    return Err(Failure::bad_input(
                        "an ST segment has no transaction set ID (ST01)",
                    ));
                }
                open = Some(TransactionSet {
                    sender,
                    id,
                    bytes: Vec::new(),
                });
            }
            _ => {}
        }
        // Segments outside ST..SE are the envelope (ISA, GS, GE, IEA).
        let set = match open.as_mut() {
            Some(set) => set,
            None if segment.id() == b"SE" => {
                return Err(Failure::bad_input("an SE segment comes without its ST"))
            }
            None => continue,
        };
        set.bytes.extend_from_slice(segment.bytes);
        set.bytes.push(interchange.segment_terminator);
        if segment.id() == b"SE" {
            sets.extend(open.take());
        }
    }
    if let Some(unclosed) = open {
        return Err(Failure::bad_input(format!(
            "transaction set {} is cut short: no SE segment",
            String::from_utf8_lossy(unclosed.id)
        )));
    }
    Ok(sets)
}

/// ISA06 is fixed-width, padded with spaces to 15 characters.
fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}
