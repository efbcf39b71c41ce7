//! Criterion benchmarks of the AS2 receive path, the sending side, MIC
//! computation and MDN building. `benches/protocol.sh` at the workspace root
//! runs them beside `openssl speed` and prints a summary table.
//!
//! Keys are generated once, and every input message is built once per
//! benchmark before measuring; only the operation itself is timed. Inputs
//! are built lazily inside the benchmark closure, so a filtered run
//! (`cargo bench -p atom-connectors --bench as2 -- 10MiB`) builds only what
//! it measures.
//!
//! Per benchmark the process's peak resident set during measurement is
//! recorded (Linux: `/proc/self/clear_refs` resets VmHWM after the inputs
//! are built, VmHWM is read when the benchmark ends) and, when
//! `ATOM_BENCH_META` names a file, written there as tab-separated lines:
//! `id  payload_bytes  wire_bytes  rss_before_kib  peak_kib`.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use atom_connectors::as2::build::{
    self, CompressionOrder, EncryptFor, MdnRequest, Outbound, SignWith,
};
use atom_connectors::as2::cms::{ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::headers::{
    ChosenMicAlg, DispositionNotificationOptions, Headers, MicAlg,
};
use atom_connectors::as2::mdn::{self, Disposition, MdnInput};
use atom_connectors::as2::mic::Mic;
use atom_connectors::as2::unwrap::{self, ReceiveSettings};
use atom_connectors::keys::{self, KeyKind};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};

const SIZES: [(&str, usize); 3] = [
    ("1KiB", 1 << 10),
    ("100KiB", 100 << 10),
    ("10MiB", 10 << 20),
];

/// EDI-X12-like text: realistic for AS2 and about as compressible as real
/// purchase orders (numbers vary, segment structure repeats).
fn payload(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    out.extend_from_slice(b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*U*00401*000000001*0*P*>~");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut line = 0u64;
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let qty = (state >> 33) % 1000;
        let price = (state >> 17) % 100_000;
        let sku = (state >> 40) % 1_000_000;
        line += 1;
        out.extend_from_slice(
            format!(
                "PO1*{line}*{qty}*EA*{}.{:02}**VP*SKU{sku:06}*UP*0{:011}~\n",
                price / 100,
                price % 100,
                state % 100_000_000_000
            )
            .as_bytes(),
        );
    }
    out.truncate(len);
    out
}

struct Keys {
    sender: KeyPair,
    receiver: KeyPair,
}

impl Keys {
    fn generate() -> Keys {
        Keys {
            sender: keys::generate("bench-sender", KeyKind::Rsa(2048), 365)
                .expect("generating the sender key"),
            receiver: keys::generate("bench-receiver", KeyKind::Rsa(2048), 365)
                .expect("generating the receiver key"),
        }
    }

    /// The receiver's view: our key decrypts, the sender's certificate verifies.
    fn settings(&self) -> ReceiveSettings {
        ReceiveSettings {
            decryption_keys: vec![self.receiver.clone()],
            partner_certs: vec![self.sender.cert.clone()],
            ..ReceiveSettings::default()
        }
    }
}

#[derive(Clone, Copy)]
enum Layers {
    SignedEncrypted,
    Signed,
    Encrypted,
    CompressedSignedEncrypted,
}

impl Layers {
    const ALL: [Layers; 4] = [
        Layers::SignedEncrypted,
        Layers::Signed,
        Layers::Encrypted,
        Layers::CompressedSignedEncrypted,
    ];

    fn group(self) -> &'static str {
        match self {
            Layers::SignedEncrypted => "unwrap_signed_encrypted",
            Layers::Signed => "unwrap_signed",
            Layers::Encrypted => "unwrap_encrypted",
            Layers::CompressedSignedEncrypted => "unwrap_compressed_signed_encrypted",
        }
    }

    fn signed(self) -> bool {
        !matches!(self, Layers::Encrypted)
    }

    fn encrypted(self) -> bool {
        !matches!(self, Layers::Signed)
    }

    fn compression(self) -> CompressionOrder {
        match self {
            Layers::CompressedSignedEncrypted => CompressionOrder::BeforeSigning,
            _ => CompressionOrder::None,
        }
    }
}

fn outbound<'a>(payload: &'a [u8], keys: &'a Keys, layers: Layers) -> Outbound<'a> {
    Outbound {
        payload,
        content_type: "application/edi-x12",
        file_name: Some("po.x12"),
        from: "bench-sender",
        to: "bench-receiver",
        subject: "benchmark",
        message_id: None,
        compression: layers.compression(),
        sign: layers.signed().then_some(SignWith {
            key: &keys.sender,
            digest: MicAlg::Sha256,
            scheme: SignatureScheme::Pkcs1v15,
        }),
        encrypt: layers.encrypted().then_some(EncryptFor {
            cert: &keys.receiver.cert,
            cipher: ContentCipher::Aes256Cbc,
            transport: KeyTransport::RsaPkcs1v15,
        }),
        mdn: MdnRequest::Sync {
            signed: Some(MicAlg::Sha256),
        },
        notification_to: "bench@example.invalid",
        unsigned_compressed_mic: Default::default(),
    }
}

/// A received message: what the HTTP layer hands to `unwrap`.
struct Inbound {
    headers: Headers,
    body: Vec<u8>,
    mic_alg: Option<ChosenMicAlg>,
    payload_len: usize,
}

fn inbound(keys: &Keys, layers: Layers, len: usize) -> Inbound {
    let payload = payload(len);
    let built =
        build::build(&outbound(&payload, keys, layers)).expect("building the benchmark message");
    let mic_alg = built
        .headers
        .get("disposition-notification-options")
        .and_then(|v| DispositionNotificationOptions::parse(v).choose_mic_alg());
    // Check once, outside the measurement, that the message opens and the MIC matches.
    let opened = unwrap::unwrap(
        &built.headers,
        &built.body,
        &keys.settings(),
        mic_alg.as_ref(),
    )
    .expect("benchmark message opens");
    assert_eq!(opened.payload, payload, "payload round-trips");
    assert!(
        opened.mic.matches(&built.expected_mic),
        "MIC matches the sender's"
    );
    Inbound {
        headers: built.headers,
        body: built.body,
        mic_alg,
        payload_len: len,
    }
}

/// Peak-memory bookkeeping for one benchmark (Linux only; zeros elsewhere).
struct Memory {
    rss_before_kib: u64,
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix(field).map(|rest| {
                        rest.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .ok()
                    })
                })
                .flatten()
        })
        .unwrap_or(0)
}

impl Memory {
    /// Resets the peak (VmHWM) to the current resident set.
    fn start() -> Memory {
        // "5" resets the peak RSS (proc(5), clear_refs); ignore failure.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Memory {
            rss_before_kib: status_kib("VmRSS:"),
        }
    }

    fn record(&self, id: &str, payload_bytes: usize, wire_bytes: usize) {
        let peak = status_kib("VmHWM:");
        let line = format!(
            "{id}\t{payload_bytes}\t{wire_bytes}\t{}\t{peak}\n",
            self.rss_before_kib
        );
        match std::env::var_os("ATOM_BENCH_META") {
            Some(path) => {
                let written = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                if let Err(e) = written {
                    eprintln!(
                        "cannot append to {}: {e}",
                        std::path::Path::new(&path).display()
                    );
                }
            }
            None => eprint!("memory: {line}"),
        }
    }
}

/// Criterion settings per size: enough samples for small inputs, few flat
/// samples for 10 MiB so the whole suite stays within a few minutes.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, len: usize) {
    group.throughput(Throughput::Bytes(len as u64));
    if len >= 1 << 20 {
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
    } else {
        group
            .sampling_mode(SamplingMode::Auto)
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    }
}

/// Runs one benchmark whose input is made lazily (only if the filter selects
/// it) and records its peak memory. `make` returns the input, its payload
/// size and its wire size.
fn bench_lazy<I>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    full_id: &str,
    make: impl Fn() -> (I, usize, usize),
    routine: impl Fn(&I),
) {
    let mut state: Option<(I, usize, usize, Memory)> = None;
    group.bench_function(id, |b| {
        let (input, _, _, _) = state.get_or_insert_with(|| {
            let (input, payload_bytes, wire_bytes) = make();
            (input, payload_bytes, wire_bytes, Memory::start())
        });
        b.iter(|| routine(input));
    });
    if let Some((input, payload_bytes, wire_bytes, memory)) = state {
        memory.record(full_id, payload_bytes, wire_bytes);
        drop(input);
    }
}

fn unwrap_benches(c: &mut Criterion, keys: &Keys) {
    let settings = keys.settings();
    for layers in Layers::ALL {
        let mut group = c.benchmark_group(layers.group());
        for (label, len) in SIZES {
            configure(&mut group, len);
            bench_lazy(
                &mut group,
                BenchmarkId::from_parameter(label),
                &format!("{}/{label}", layers.group()),
                || {
                    let message = inbound(keys, layers, len);
                    let (payload_len, wire) = (message.payload_len, message.body.len());
                    (message, payload_len, wire)
                },
                |m: &Inbound| {
                    let opened = unwrap::unwrap(
                        black_box(&m.headers),
                        black_box(&m.body),
                        &settings,
                        m.mic_alg.as_ref(),
                    )
                    .expect("benchmark message opens");
                    black_box(opened);
                },
            );
        }
        group.finish();
    }
}

fn build_benches(c: &mut Criterion, keys: &Keys) {
    let mut group = c.benchmark_group("build_signed_encrypted");
    for (label, len) in SIZES {
        configure(&mut group, len);
        bench_lazy(
            &mut group,
            BenchmarkId::from_parameter(label),
            &format!("build_signed_encrypted/{label}"),
            || {
                let data = payload(len);
                let wire = build::build(&outbound(&data, keys, Layers::SignedEncrypted))
                    .expect("building")
                    .body
                    .len();
                (data, len, wire)
            },
            |data: &Vec<u8>| {
                let built = build::build(black_box(&outbound(data, keys, Layers::SignedEncrypted)))
                    .expect("building");
                black_box(built);
            },
        );
    }
    group.finish();
}

fn mic_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("mic_sha256");
    for (label, len) in SIZES {
        configure(&mut group, len);
        bench_lazy(
            &mut group,
            BenchmarkId::from_parameter(label),
            &format!("mic_sha256/{label}"),
            || (payload(len), len, len),
            |data: &Vec<u8>| {
                black_box(
                    Mic::compute(MicAlg::Sha256, "sha-256", black_box(data)).expect("digest"),
                );
            },
        );
    }
    group.finish();
}

fn mdn_benches(c: &mut Criterion, keys: &Keys) {
    let mic = Mic::compute(MicAlg::Sha256, "sha-256", &payload(1 << 10)).expect("digest");
    let mut group = c.benchmark_group("mdn_build");
    configure(&mut group, 1 << 10);
    // An MDN does not grow with the payload: count one receipt per iteration.
    group.throughput(Throughput::Elements(1));
    for (name, sign) in [("signed", true), ("unsigned", false)] {
        bench_lazy(
            &mut group,
            BenchmarkId::from_parameter(name),
            &format!("mdn_build/{name}"),
            || {
                let input = MdnInput {
                    reporting_ua: "Atom AS2 (bench)",
                    our_id: "bench-receiver",
                    partner_id: "bench-sender",
                    original_message_id: "<0f8fad5b-d9cb-469f-a165-70867728950e@bench-sender>",
                    disposition: Disposition::Processed,
                    mic: Some(&mic),
                    text: "The AS2 message has been received and verified.",
                    sign: sign.then_some((&keys.receiver, MicAlg::Sha256)),
                    micalg_spelling: Some("sha-256"),
                };
                let wire = mdn::build(&input).expect("building the MDN").body.len();
                (input, 0, wire)
            },
            |input: &MdnInput<'_>| {
                black_box(mdn::build(black_box(input)).expect("building the MDN"));
            },
        );
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    // Key generation is not measured.
    let keys = Keys::generate();
    unwrap_benches(c, &keys);
    build_benches(c, &keys);
    mic_benches(c);
    mdn_benches(c, &keys);
}

criterion_group!(as2, benches);
criterion_main!(as2);
