//! A fixed amount of receive-path work for instruction counting: opens one
//! captured partner message (`shared/interop`) `UNWRAP_COUNT` times (default
//! 200). Run under `valgrind --tool=callgrind` for a count that does not
//! depend on the machine's load (`benches/unwrap-count.sh` does), or plainly
//! for a rough time per message.
//!
//! `UNWRAP_VECTOR` picks the capture (default `mecas2_signed_encrypted.as2`:
//! a Mendelson message signed with the partner's certificate embedded, then
//! encrypted).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use atom_connectors::as2::headers::DispositionNotificationOptions;
use atom_connectors::as2::unwrap::{self, ReceiveSettings};

fn main() {
    let vector =
        std::env::var("UNWRAP_VECTOR").unwrap_or_else(|_| "mecas2_signed_encrypted.as2".into());
    let count: usize = std::env::var("UNWRAP_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (headers, body) = common::split_capture(&common::read_vector(&vector));
    let settings = ReceiveSettings {
        decryption_keys: vec![common::receiver_key()],
        partner_certs: vec![common::cert("cert_mecas2_public.pem")],
        ..ReceiveSettings::default()
    };
    let mic_alg = DispositionNotificationOptions::parse(
        "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha256",
    )
    .choose_mic_alg();
    // Once outside the count: it must open.
    unwrap::unwrap(&headers, &body, &settings, mic_alg.as_ref()).expect("the vector opens");
    let started = Instant::now();
    for _ in 0..count {
        let opened = unwrap::unwrap(&headers, &body, &settings, mic_alg.as_ref());
        black_box(opened.expect("opens"));
    }
    let per = started.elapsed() / count as u32;
    println!("{vector}: {count} unwraps, {per:?} each");
}
