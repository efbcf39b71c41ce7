//! x12-997: an Atom process guest that answers an X12 interchange with a
//! 997 functional acknowledgement, one AK1 group per functional group and
//! one AK2/AK5 per transaction set, each accepted (`A`) or, when its SE
//! segment count is wrong, rejected (`R`, AK5-02 code 4).
//!
//! Guest ABI (WASI preview 1 command): the received interchange is stdin,
//! the 997 on stdout becomes the output document (an `as2` step then sends
//! it back to the partner), stderr is the process log, and a non-zero exit
//! code fails the execution.
//!
//! The 997's envelope swaps sender and receiver of the interchange it
//! answers. Its own control numbers come from the environment when set
//! (`ACK_CONTROL_NUMBER`, a process setting or dynamic property), else from
//! the received interchange's.
//!
//! Standard library only (Debian's rustc 1.63 and its wasm32-wasi std).

use std::io::{self, Read, Write};
use std::process;

// The X12 reader of the x12-to-csv example.
#[path = "../../rust-guest/src/x12.rs"]
mod x12;
use x12::{Interchange, Segment};

const EXIT_BAD_INPUT: i32 = 2;
const EXIT_IO: i32 = 1;

fn main() {
    let mut input = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut input) {
        eprintln!("x12-997: reading the interchange from stdin: {e}");
        process::exit(EXIT_IO);
    }
    let ack = match acknowledge(&input) {
        Ok(ack) => ack,
        Err(message) => {
            eprintln!("x12-997: {message}");
            process::exit(EXIT_BAD_INPUT);
        }
    };
    // Written in one go: a partial 997 must never look like a complete one.
    if let Err(e) = io::stdout()
        .write_all(&ack.text)
        .and_then(|()| io::stdout().flush())
    {
        eprintln!("x12-997: writing the 997 to stdout: {e}");
        process::exit(EXIT_IO);
    }
    if ack.rejected > 0 {
        eprintln!(
            "warn x12-997: {} of {} transaction set(s) rejected",
            ack.rejected, ack.sets
        );
    } else {
        eprintln!(
            "x12-997: {} transaction set(s) in {} group(s) accepted",
            ack.sets, ack.groups
        );
    }
}

/// A 997 and what it says.
struct Acknowledgement {
    text: Vec<u8>,
    groups: usize,
    sets: usize,
    rejected: usize,
}

/// One functional group as received.
struct Group {
    functional_id: Vec<u8>,
    control: Vec<u8>,
    /// (ST01, ST02, accepted)
    sets: Vec<(Vec<u8>, Vec<u8>, bool)>,
}

fn acknowledge(input: &[u8]) -> Result<Acknowledgement, String> {
    let interchange = Interchange::parse(input)?;
    let mut isa: Option<Segment> = None;
    let mut gs: Option<Segment> = None;
    let mut groups: Vec<Group> = Vec::new();
    // (ST01, ST02, segments counted so far)
    let mut open_set: Option<(Vec<u8>, Vec<u8>, usize)> = None;
    for segment in interchange.segments() {
        if let Some(set) = open_set.as_mut() {
            set.2 += 1;
        }
        match segment.id() {
            b"ISA" => isa = Some(segment),
            b"GS" => {
                groups.push(Group {
                    functional_id: segment.element(1).to_vec(),
                    control: segment.element(6).to_vec(),
                    sets: Vec::new(),
                });
                if gs.is_none() {
                    gs = Some(segment);
                }
            }
            b"ST" => {
                open_set = Some((segment.element(1).to_vec(), segment.element(2).to_vec(), 1));
            }
            b"SE" => {
                let (id, control, counted) = open_set
                    .take()
                    .ok_or_else(|| "an SE segment without its ST".to_string())?;
                let declared = std::str::from_utf8(segment.element(1))
                    .ok()
                    .and_then(|n| n.trim().parse::<usize>().ok());
                let group = groups
                    .last_mut()
                    .ok_or_else(|| "a transaction set outside a GS group".to_string())?;
                group.sets.push((id, control, declared == Some(counted)));
            }
            _ => {}
        }
    }
    let isa = isa.ok_or_else(|| "no ISA segment".to_string())?;
    let gs = gs.ok_or_else(|| "no GS segment: nothing to acknowledge".to_string())?;
    let e = interchange.element_separator;
    let t = interchange.segment_terminator;
    let control = std::env::var("ACK_CONTROL_NUMBER")
        .ok()
        .filter(|c| !c.is_empty() && c.len() <= 9 && c.bytes().all(|b| b.is_ascii_digit()))
        .map(|c| format!("{:0>9}", c).into_bytes())
        .unwrap_or_else(|| isa.element(13).to_vec());
    let group_control: Vec<u8> = {
        let trimmed: Vec<u8> = control
            .iter()
            .copied()
            .skip_while(|&b| b == b'0')
            .collect();
        if trimmed.is_empty() {
            b"1".to_vec()
        } else {
            trimmed
        }
    };
    let mut out = Vec::new();
    let mut segment = |elements: &[&[u8]]| {
        for (i, element) in elements.iter().enumerate() {
            if i > 0 {
                out.push(e);
            }
            out.extend_from_slice(element);
        }
        out.push(t);
        out.push(b'\n');
    };
    // ISA: the received one with sender and receiver swapped, our control number.
    let isa_out: Vec<&[u8]> = (0..=16)
        .map(|i| match i {
            5 => isa.element(7),
            6 => isa.element(8),
            7 => isa.element(5),
            8 => isa.element(6),
            13 => &control[..],
            14 => b"0",
            _ => isa.element(i),
        })
        .collect();
    segment(&isa_out);
    segment(&[
        b"GS",
        b"FA",
        gs.element(3),
        gs.element(2),
        gs.element(4),
        gs.element(5),
        &group_control,
        b"X",
        gs.element(8),
    ]);
    let mut sets_total = 0;
    let mut rejected = 0;
    for (n, group) in groups.iter().enumerate() {
        let st_control = format!("{:04}", n + 1).into_bytes();
        // ST, AK1, (AK2, AK5) per set, AK9, SE
        let count = (4 + 2 * group.sets.len()).to_string().into_bytes();
        segment(&[b"ST", b"997", &st_control]);
        segment(&[b"AK1", &group.functional_id, &group.control]);
        let mut accepted = 0;
        for (id, set_control, ok) in &group.sets {
            segment(&[b"AK2", id, set_control]);
            if *ok {
                accepted += 1;
                segment(&[b"AK5", b"A"]);
            } else {
                segment(&[b"AK5", b"R", b"4"]);
            }
        }
        sets_total += group.sets.len();
        rejected += group.sets.len() - accepted;
        let status: &[u8] = if accepted == group.sets.len() {
            b"A"
        } else if accepted == 0 {
            b"R"
        } else {
            b"P"
        };
        let n_sets = group.sets.len().to_string().into_bytes();
        let n_accepted = accepted.to_string().into_bytes();
        segment(&[b"AK9", status, &n_sets, &n_sets, &n_accepted]);
        segment(&[b"SE", &count, &st_control]);
    }
    let n_groups = groups.len().to_string().into_bytes();
    segment(&[b"GE", &n_groups, &group_control]);
    segment(&[b"IEA", b"1", &control]);
    Ok(Acknowledgement {
        text: out,
        groups: groups.len(),
        sets: sets_total,
        rejected,
    })
}
