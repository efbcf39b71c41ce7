//! `atom send`: the AS2 client. Builds the message once (compress, sign,
//! encrypt), POSTs it, and checks the receipt: the signature of a signed
//! MDN against the partner's pinned certificate, the Original-Message-ID,
//! the disposition and the Received-Content-MIC. Synchronous MDNs come back
//! in the HTTP response; asynchronous ones are received on `--listen`.
//!
//! With `--count`/`--concurrency` it is a load generator: the built message
//! is reused and only its Message-ID (outside signature and encryption)
//! changes per send; a summary reports throughput, latency percentiles and
//! the client's own CPU time.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use atom_connectors::as2::build::{
    self, Built, CompressionOrder, EncryptFor, MdnRequest, Outbound, SignWith,
};
use atom_connectors::as2::cms::{ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::headers::{parse_as2_id, quote_as2_id, MicAlg};
use atom_connectors::as2::mdn::id_domain;
use atom_connectors::keys;
use openssl::x509::X509;
use tokio::sync::Semaphore;

use super::CliError;
use crate::client::{As2Client, Failure, HttpOptions, MdnExpectation, MdnListener, Receipt};
use crate::keystore::{Keystore, KeystoreError};
use crate::partners::PartnerProfile;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The file to send (sent byte for byte, binary transfer encoding).
    pub file: PathBuf,
    /// Send with this partner profile (partners_dir/NAME.yaml): its URL, IDs,
    /// keys, algorithms, receipt and HTTP settings; the flags for those are then refused.
    #[arg(long, value_name = "NAME")]
    pub partner: Option<String>,
    /// The partner's AS2 URL (http:// or https://).
    #[arg(long, required_unless_present = "partner", conflicts_with = "partner")]
    pub url: Option<String>,
    /// Our AS2 ID (AS2-From).
    #[arg(
        long,
        value_name = "OURID",
        required_unless_present = "partner",
        conflicts_with = "partner"
    )]
    pub from: Option<String>,
    /// The partner's AS2 ID (AS2-To).
    #[arg(
        long,
        value_name = "PARTNERID",
        required_unless_present = "partner",
        conflicts_with = "partner"
    )]
    pub to: Option<String>,
    #[command(flatten)]
    pub security: Box<SecurityArgs>,
    #[command(flatten)]
    pub receipt: Box<ReceiptArgs>,
    #[command(flatten)]
    pub message: Box<MessageArgs>,
    #[command(flatten)]
    pub http: Box<HttpArgs>,
    #[command(flatten)]
    pub load: Box<LoadArgs>,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Signing, encryption, compression")]
pub struct SecurityArgs {
    /// Sign with this key: a keystore name, or a file (.p12/.pfx, or PEM with key and certificate).
    #[arg(long, value_name = "KEY", conflicts_with = "partner")]
    pub sign: Option<String>,
    /// Signature digest: md5, sha1, sha224, sha256, sha384, sha512.
    #[arg(long, value_name = "ALG", default_value = "sha256", value_parser = parse_mic_alg, conflicts_with = "partner")]
    pub digest: MicAlg,
    /// Sign with RSASSA-PSS instead of PKCS#1 v1.5.
    #[arg(long, requires = "sign", conflicts_with = "partner")]
    pub pss: bool,
    /// Password of a .p12/.pfx or encrypted PEM key given to --sign.
    #[arg(long, env = "ATOM_KEY_PASSWORD", hide_env_values = true)]
    pub key_password: Option<String>,
    /// Encrypt for this certificate: a keystore name, or a PEM/DER certificate file.
    #[arg(long, value_name = "CERT", conflicts_with = "partner")]
    pub encrypt: Option<String>,
    /// Content cipher: 3des, rc2-40, rc2-128, aes128-cbc, aes192-cbc, aes256-cbc, aes128-gcm, aes256-gcm.
    #[arg(long, value_name = "CIPHER", default_value = "aes256-cbc", value_parser = parse_cipher, conflicts_with = "partner")]
    pub cipher: ContentCipher,
    /// Wrap the content key with RSAES-OAEP instead of PKCS#1 v1.5.
    #[arg(long, requires = "encrypt", conflicts_with = "partner")]
    pub oaep: bool,
    /// Compression, and whether it happens before or after signing.
    #[arg(long, value_enum, default_value_t = Compress::None, conflicts_with = "partner")]
    pub compress: Compress,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Receipt (MDN)")]
pub struct ReceiptArgs {
    /// Receipt: none, sync (in the HTTP response) or async (POSTed back later).
    /// Default: sync, or async when --listen/--receipt-url is given.
    #[arg(long, value_enum, conflicts_with = "partner")]
    pub mdn: Option<MdnMode>,
    /// Ask for a signed receipt, with this MIC algorithm (default: the --digest algorithm).
    /// Asked by default when --sign is used.
    #[arg(long, value_name = "ALG", num_args = 0..=1, default_missing_value = "", conflicts_with = "unsigned_mdn", conflicts_with = "partner")]
    pub signed_mdn: Option<String>,
    /// Ask for an unsigned receipt even when signing.
    #[arg(long, conflicts_with = "partner")]
    pub unsigned_mdn: bool,
    /// The partner's certificate to verify a signed receipt (keystore name or file; repeat during a
    /// certificate change). Default: the --encrypt certificate.
    #[arg(long, value_name = "CERT", conflicts_with = "partner")]
    pub partner_cert: Vec<String>,
    /// Disposition-Notification-To value (default: our AS2 ID).
    #[arg(long, value_name = "ADDR")]
    pub notification_to: Option<String>,
    /// Receive asynchronous MDNs on this address (e.g. 127.0.0.1:0 or 0.0.0.0:8090).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Receipt-Delivery-Option URL. With --listen: the URL the partner reaches the listener at;
    /// without: the MDN goes to that URL and is not awaited here.
    #[arg(long, value_name = "URL")]
    pub receipt_url: Option<String>,
    /// Seconds to wait for each asynchronous MDN.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub async_timeout: u64,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Message headers")]
pub struct MessageArgs {
    /// MIME type of the payload (default: the profile's, else application/edi-consent).
    #[arg(long)]
    pub content_type: Option<String>,
    /// Subject header (default: the profile's, else "AS2 message").
    #[arg(long)]
    pub subject: Option<String>,
    /// File name in Content-Disposition (default: the file's base name).
    #[arg(long)]
    pub file_name: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
    /// HTTP Basic authentication user (with --password).
    #[arg(long, conflicts_with = "partner")]
    pub user: Option<String>,
    /// HTTP Basic authentication password.
    #[arg(long, env = "ATOM_AS2_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Accept any HTTPS certificate and host name (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Also trust the CA certificates in this PEM file for HTTPS.
    #[arg(long, value_name = "FILE", conflicts_with = "partner")]
    pub cacert: Option<PathBuf>,
    /// HTTP request timeout in seconds (connect, send, synchronous MDN).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Load test and output")]
pub struct LoadArgs {
    /// Send the message this many times (load test: the message is built once,
    /// each send gets a fresh Message-ID).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Print the result summary as one JSON object on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    None,
    BeforeSigning,
    AfterSigning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MdnMode {
    None,
    Sync,
    Async,
}

fn parse_mic_alg(name: &str) -> Result<MicAlg, String> {
    MicAlg::from_name(name).ok_or_else(|| {
        format!("unknown digest {name:?}: use md5, sha1, sha224, sha256, sha384 or sha512")
    })
}

fn parse_cipher(name: &str) -> Result<ContentCipher, String> {
    ContentCipher::from_name(name).ok_or_else(|| {
        format!("unknown cipher {name:?}: use 3des, rc2-40, rc2-128, aes128-cbc, aes192-cbc, aes256-cbc, aes128-gcm or aes256-gcm")
    })
}

/// A key or certificate argument is a file when it exists as one or has a
/// path separator; otherwise it is a keystore name.
fn is_path(arg: &str) -> bool {
    arg.contains('/') || arg.contains(std::path::MAIN_SEPARATOR) || Path::new(arg).is_file()
}

fn keystore_error(flag: &str, arg: &str, store: &Keystore, e: KeystoreError) -> CliError {
    match e {
        KeystoreError::NotFound(_) | KeystoreError::BadName(_) => CliError::Usage(format!(
            "{flag} {arg}: {e} (keystore {}); give a keystore name (see `atom certs list`) or a file path",
            store.dir().display()
        )),
        other => CliError::Usage(format!("{flag} {arg}: {other}")),
    }
}

fn load_key_pair(
    store: &Keystore,
    flag: &str,
    arg: &str,
    password: Option<&str>,
) -> Result<KeyPair, CliError> {
    if is_path(arg) {
        keys::load_key_pair(Path::new(arg), None, password)
            .map_err(|e| CliError::Usage(format!("{flag} {arg}: {e}")))
    } else {
        store
            .key_pair(arg)
            .map_err(|e| keystore_error(flag, arg, store, e))
    }
}

fn load_certificate(store: &Keystore, flag: &str, arg: &str) -> Result<X509, CliError> {
    if is_path(arg) {
        let mut certs = keys::load_certificates(Path::new(arg))
            .map_err(|e| CliError::Usage(format!("{flag} {arg}: {e}")))?;
        Ok(certs.remove(0))
    } else {
        store
            .certificate(arg)
            .map_err(|e| keystore_error(flag, arg, store, e))
    }
}

fn check_as2_id(flag: &str, id: &str) -> Result<(), CliError> {
    parse_as2_id(&quote_as2_id(id))
        .map(|_| ())
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

/// Everything each send shares.
struct Job {
    client: As2Client,
    headers: atom_connectors::as2::headers::Headers,
    body: Bytes,
    built: Built,
    mode: Mode,
    signed_requested: bool,
    message_signed: bool,
    partner_certs: Vec<X509>,
    listener: Option<MdnListener>,
    async_timeout: Duration,
    id_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    NoMdn,
    Sync,
    /// Awaited on our listener.
    AsyncHere,
    /// Sent to a URL we do not listen on.
    AsyncElsewhere(String),
}

/// How one send ended well.
#[derive(Debug)]
enum Success {
    Receipt {
        receipt: Receipt,
        asynchronous: bool,
    },
    NoMdn {
        status: u16,
    },
    MdnElsewhere {
        status: u16,
        url: String,
    },
}

struct Outcome {
    message_id: String,
    latency: Duration,
    result: Result<Success, Failure>,
}

/// Puts a partner profile's settings where the flags would have put them;
/// the keys it names come back loaded.
fn apply_profile(args: &mut SendArgs, profile: &PartnerProfile) {
    args.url = Some(profile.url.clone());
    args.from = Some(profile.as2_from.clone());
    args.to = Some(profile.as2_to.clone());
    if args.message.content_type.is_none() {
        args.message.content_type = Some(profile.content_type.clone());
    }
    if args.message.subject.is_none() {
        args.message.subject = Some(profile.subject.clone());
    }
    let security = &mut args.security;
    if let Some(sign) = &profile.sign {
        security.digest = sign.digest;
        security.pss = sign.scheme == SignatureScheme::Pss;
    }
    if let Some(encrypt) = &profile.encrypt {
        security.cipher = encrypt.cipher;
        security.oaep = encrypt.transport == KeyTransport::RsaOaep;
    }
    security.compress = match profile.compression {
        CompressionOrder::None => Compress::None,
        CompressionOrder::BeforeSigning => Compress::BeforeSigning,
        CompressionOrder::AfterSigning => Compress::AfterSigning,
    };
    args.receipt.mdn = Some(match profile.mdn.mode {
        crate::partners::MdnMode::None => MdnMode::None,
        crate::partners::MdnMode::Sync => MdnMode::Sync,
        crate::partners::MdnMode::Async => MdnMode::Async,
    });
    if profile.mdn.mode == crate::partners::MdnMode::Async && args.receipt.listen.is_none() {
        // Unless awaited here (--listen), the receipt goes to the profile's URL.
        args.receipt.receipt_url = profile.mdn.async_url.clone();
    }
    args.receipt.signed_mdn = profile.mdn.signed.map(|alg| alg.compact_name().to_string());
    args.receipt.unsigned_mdn = profile.mdn.signed.is_none();
    args.http.timeout = profile.http.timeout.as_secs();
    if let Some((user, password)) = &profile.http.basic_auth {
        args.http.user = Some(user.clone());
        args.http.password = Some(password.clone());
    }
}

pub fn run(data_dir: &Path, partners_dir: &Path, mut args: SendArgs) -> Result<(), CliError> {
    let store = Keystore::open(data_dir);
    let profile = match &args.partner {
        Some(name) => {
            let profile = crate::partners::load(partners_dir, name, &store)
                .map_err(|e| CliError::Usage(format!("--partner {name}: {e}")))?;
            apply_profile(&mut args, &profile);
            Some(profile)
        }
        None => None,
    };
    let (url, from, to) = match (&args.url, &args.from, &args.to) {
        (Some(url), Some(from), Some(to)) => (url.clone(), from.clone(), to.clone()),
        _ => {
            return Err(CliError::Usage(
                "give --partner NAME, or --url, --from and --to".into(),
            ))
        }
    };
    let content_type = args
        .message
        .content_type
        .clone()
        .unwrap_or_else(|| "application/edi-consent".into());
    let subject = args
        .message
        .subject
        .clone()
        .unwrap_or_else(|| "AS2 message".into());
    if args.load.count == 0 {
        return Err(CliError::Usage("--count must be at least 1".into()));
    }
    if args.load.concurrency == 0 {
        return Err(CliError::Usage("--concurrency must be at least 1".into()));
    }
    check_as2_id("--from", &from)?;
    check_as2_id("--to", &to)?;
    let mode_arg = args.receipt.mdn.unwrap_or(
        if args.receipt.listen.is_some() || args.receipt.receipt_url.is_some() {
            MdnMode::Async
        } else {
            MdnMode::Sync
        },
    );
    if mode_arg != MdnMode::Async
        && (args.receipt.listen.is_some() || args.receipt.receipt_url.is_some())
    {
        return Err(CliError::Usage(
            "--listen and --receipt-url are for --mdn async".into(),
        ));
    }
    if mode_arg == MdnMode::None && args.receipt.signed_mdn.is_some() {
        return Err(CliError::Usage(
            "--signed-mdn needs a receipt: use --mdn sync or async".into(),
        ));
    }
    if args.http.user.is_some() != args.http.password.is_some() {
        return Err(CliError::Usage(
            "HTTP Basic authentication needs both --user and --password (or ATOM_AS2_PASSWORD)"
                .into(),
        ));
    }

    let sign_key = match &args.security.sign {
        _ if profile.is_some() => profile
            .as_ref()
            .and_then(|p| p.sign.as_ref())
            .map(|s| s.key.clone()),
        Some(arg) => Some(load_key_pair(
            &store,
            "--sign",
            arg,
            args.security.key_password.as_deref(),
        )?),
        None => None,
    };
    let encrypt_cert = match &args.security.encrypt {
        _ if profile.is_some() => profile
            .as_ref()
            .and_then(|p| p.encrypt.as_ref())
            .map(|e| e.certificate.clone()),
        Some(arg) => Some(load_certificate(&store, "--encrypt", arg)?),
        None => None,
    };
    let mut partner_certs = Vec::new();
    for arg in &args.receipt.partner_cert {
        partner_certs.push(load_certificate(&store, "--partner-cert", arg)?);
    }
    if let Some(profile) = &profile {
        partner_certs.extend(profile.mdn.partner_certificates.iter().cloned());
    }
    if partner_certs.is_empty() {
        partner_certs.extend(encrypt_cert.clone());
    }
    let signed_alg = match (&args.receipt.signed_mdn, mode_arg) {
        (_, MdnMode::None) => None,
        (Some(name), _) if !name.is_empty() => {
            Some(parse_mic_alg(name).map_err(|e| CliError::Usage(format!("--signed-mdn: {e}")))?)
        }
        (Some(_), _) => Some(args.security.digest),
        (None, _) if sign_key.is_some() && !args.receipt.unsigned_mdn => Some(args.security.digest),
        (None, _) => None,
    };
    if signed_alg.is_some() && partner_certs.is_empty() {
        tracing::warn!("a signed receipt is asked for but no partner certificate is known: its signature will not be verified (give --partner-cert)");
    }

    let payload = std::fs::read(&args.file).map_err(|source| CliError::Io {
        path: args.file.clone(),
        source,
    })?;
    let file_name = match &args.message.file_name {
        Some(name) => Some(name.clone()),
        None => args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    };
    let ca_pem = match &args.http.cacert {
        _ if profile.is_some() => profile.as_ref().and_then(|p| p.http.ca_pem.clone()),
        Some(path) => Some(std::fs::read(path).map_err(|source| CliError::Io {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let http_options = HttpOptions {
        timeout: Some(Duration::from_secs(args.http.timeout.max(1))),
        insecure: args.http.insecure,
        ca_pem,
        basic_auth: args.http.user.clone().zip(args.http.password.clone()),
        max_idle: args.load.concurrency,
        identity: profile
            .as_ref()
            .and_then(|p| p.http.client_identity.clone()),
    };
    let client = As2Client::new(&url, &http_options).map_err(|e| CliError::Usage(e.to_string()))?;
    if args.http.insecure {
        tracing::warn!("--insecure: the server's TLS certificate is not checked");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(args.load.concurrency.clamp(1, 4))
        .build()
        .map_err(|source| CliError::Io {
            path: "<tokio runtime>".into(),
            source,
        })?;
    runtime.block_on(async move {
        let (mode, listener) = match (mode_arg, args.receipt.listen, &args.receipt.receipt_url) {
            (MdnMode::None, ..) => (Mode::NoMdn, None),
            (MdnMode::Sync, ..) => (Mode::Sync, None),
            (MdnMode::Async, Some(addr), advertised) => {
                let listener = MdnListener::start(addr, advertised.clone()).map_err(|e| CliError::Usage(e.to_string()))?;
                (Mode::AsyncHere, Some(listener))
            }
            (MdnMode::Async, None, Some(url)) => (Mode::AsyncElsewhere(url.clone()), None),
            (MdnMode::Async, None, None) => {
                return Err(CliError::Usage(
                    "--mdn async needs --listen ADDR (receive the MDN here) or --receipt-url URL (it goes elsewhere)".into(),
                ))
            }
        };
        let mdn_request = match (&mode, &listener) {
            (Mode::NoMdn, _) => MdnRequest::None,
            (Mode::Sync, _) => MdnRequest::Sync { signed: signed_alg },
            (Mode::AsyncHere, Some(l)) => MdnRequest::Async { url: l.url().to_string(), signed: signed_alg },
            (Mode::AsyncElsewhere(url), _) => MdnRequest::Async { url: url.clone(), signed: signed_alg },
            (Mode::AsyncHere, None) => MdnRequest::None,
        };
        let notification_to = args.receipt.notification_to.clone().unwrap_or_else(|| from.clone());
        let outbound = Outbound {
            payload: &payload,
            content_type: &content_type,
            file_name: file_name.as_deref(),
            from: &from,
            to: &to,
            subject: &subject,
            message_id: None,
            compression: match args.security.compress {
                Compress::None => CompressionOrder::None,
                Compress::BeforeSigning => CompressionOrder::BeforeSigning,
                Compress::AfterSigning => CompressionOrder::AfterSigning,
            },
            sign: sign_key.as_ref().map(|key| SignWith {
                key,
                digest: args.security.digest,
                scheme: if args.security.pss { SignatureScheme::Pss } else { SignatureScheme::Pkcs1v15 },
            }),
            encrypt: encrypt_cert.as_ref().map(|cert| EncryptFor {
                cert,
                cipher: args.security.cipher,
                transport: if args.security.oaep { KeyTransport::RsaOaep } else { KeyTransport::RsaPkcs1v15 },
            }),
            mdn: mdn_request,
            notification_to: &notification_to,
            unsigned_compressed_mic: Default::default(),
        };
        let build_started = Instant::now();
        let mut built = build::build(&outbound).map_err(|e| CliError::Usage(format!("cannot build the message: {e}")))?;
        for (name, value) in profile.iter().flat_map(|p| p.http.headers.iter()) {
            built.headers.push(name, value.clone());
        }
        let build_time = build_started.elapsed();
        tracing::debug!(bytes = built.body.len(), ms = build_time.as_millis() as u64, "message built");
        let job = Arc::new(Job {
            client,
            headers: built.headers.clone(),
            body: Bytes::from(built.body.clone()),
            built,
            mode,
            signed_requested: signed_alg.is_some(),
            message_signed: sign_key.is_some(),
            partner_certs,
            listener,
            async_timeout: Duration::from_secs(args.receipt.async_timeout.max(1)),
            id_domain: id_domain(&from),
        });
        let report = drive(job.clone(), &args, payload.len(), build_time).await;
        if let Some(listener) = &job.listener {
            listener.stop().await;
        }
        report
    })
}

/// Sends `count` messages, `concurrency` at a time, and reports.
async fn drive(
    job: Arc<Job>,
    args: &SendArgs,
    payload_len: usize,
    build_time: Duration,
) -> Result<(), CliError> {
    let load = args.load.count > 1;
    let progress = if load && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::with_draw_target(
            Some(args.load.count),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec} {msg}",
    ) {
        progress.set_style(style.progress_chars("=> "));
    }
    let mut stats = Stats::new(args.load.concurrency);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(args.load.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.load.count {
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let job = job.clone();
        tasks.spawn(async move {
            let message_id = if index == 0 {
                job.built.message_id.clone()
            } else {
                format!("<{}@{}>", uuid::Uuid::new_v4(), job.id_domain)
            };
            let outcome = send_one(&job, message_id).await;
            drop(permit);
            outcome
        });
        while let Some(done) = tasks.try_join_next() {
            stats.record(done, &progress, load);
        }
    }
    while let Some(done) = tasks.join_next().await {
        stats.record(done, &progress, load);
    }
    let wall = started.elapsed();
    let cpu_after = cpu_time();
    progress.finish_and_clear();

    let summary = Summary {
        url: job.client.url().to_string(),
        payload_len,
        wire_len: job.body.len(),
        build_time,
        wall,
        cpu: (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1),
    };
    if args.load.json {
        println!("{}", stats.json(&summary));
    } else if load {
        stats.print(&summary);
    } else if let Some(single) = &stats.single {
        print_single(single, &summary);
    }
    if stats.failed > 0 {
        let reason = stats
            .failures
            .first()
            .map(|(r, _)| r.clone())
            .unwrap_or_default();
        return Err(CliError::Failed(if load {
            format!(
                "{} of {} messages failed; first reason: {reason}",
                stats.failed, stats.sent
            )
        } else {
            format!("the message failed: {reason}")
        }));
    }
    Ok(())
}

/// One message: POST, then the synchronous MDN or the wait for the asynchronous one.
async fn send_one(job: &Job, message_id: String) -> Outcome {
    let started = Instant::now();
    let result = exchange(job, &message_id).await;
    if let Err(failure) = &result {
        tracing::debug!(message_id = %message_id, reason = %failure.reason, "message failed");
    }
    Outcome {
        latency: started.elapsed(),
        message_id,
        result,
    }
}

async fn exchange(job: &Job, message_id: &str) -> Result<Success, Failure> {
    let mut headers = job.headers.clone();
    if message_id != job.built.message_id {
        headers.set("Message-ID", message_id);
    }
    let waiter = match (&job.mode, &job.listener) {
        (Mode::AsyncHere, Some(listener)) => Some(listener.expect(message_id)),
        _ => None,
    };
    let forget = || {
        if let Some(listener) = &job.listener {
            listener.forget(message_id);
        }
    };
    let response = match job.client.post(&headers, job.body.clone()).await {
        Ok(response) => response,
        Err(reason) => {
            forget();
            return Err(Failure::new(reason));
        }
    };
    if !response.is_success() {
        forget();
        return Err(Failure::new(response.describe_error()));
    }
    let expectation = MdnExpectation {
        message_id,
        mic: &job.built.expected_mic,
        signed_requested: job.signed_requested,
        message_signed: job.message_signed,
        partner_certs: &job.partner_certs,
    };
    match &job.mode {
        Mode::NoMdn => Ok(Success::NoMdn {
            status: response.status,
        }),
        Mode::AsyncElsewhere(url) => Ok(Success::MdnElsewhere {
            status: response.status,
            url: url.clone(),
        }),
        Mode::Sync => {
            if response.body.is_empty() {
                return Err(Failure::new(format!(
                    "HTTP {} without an MDN in the response (a synchronous MDN was asked for)",
                    response.status
                )));
            }
            let receipt = crate::client::verify_mdn(
                response.headers.get("content-type"),
                &response.body,
                &expectation,
            )?;
            Ok(Success::Receipt {
                receipt,
                asynchronous: false,
            })
        }
        Mode::AsyncHere => {
            let Some(waiter) = waiter else {
                return Err(Failure::new("internal: no MDN listener"));
            };
            let mut early_warning = None;
            if !response.body.is_empty() {
                let content_type = response.headers.get("content-type").unwrap_or("");
                if content_type.to_ascii_lowercase().contains("multipart/") {
                    // The partner answered synchronously although we asked for an asynchronous MDN.
                    forget();
                    let mut receipt = crate::client::verify_mdn(
                        Some(content_type),
                        &response.body,
                        &expectation,
                    )?;
                    receipt.warnings.push("the partner returned a synchronous MDN although an asynchronous one was asked for".into());
                    return Ok(Success::Receipt {
                        receipt,
                        asynchronous: false,
                    });
                }
                early_warning = Some(format!(
                    "HTTP {} carried a {}-byte body; an empty one is expected with an asynchronous MDN",
                    response.status,
                    response.body.len()
                ));
            }
            match tokio::time::timeout(job.async_timeout, waiter).await {
                Ok(Ok(raw)) => {
                    let mut receipt = crate::client::verify_mdn(
                        raw.headers.get("content-type"),
                        &raw.body,
                        &expectation,
                    )?;
                    receipt.warnings.extend(early_warning);
                    Ok(Success::Receipt {
                        receipt,
                        asynchronous: true,
                    })
                }
                Ok(Err(_)) => Err(Failure::new(
                    "the MDN listener stopped before the MDN arrived",
                )),
                Err(_) => {
                    forget();
                    Err(Failure::new(format!(
                        "HTTP {} but no asynchronous MDN within {} s",
                        response.status,
                        job.async_timeout.as_secs()
                    )))
                }
            }
        }
    }
}

struct Summary {
    url: String,
    payload_len: usize,
    wire_len: usize,
    build_time: Duration,
    wall: Duration,
    /// User and system CPU seconds used while sending.
    cpu: (f64, f64),
}

/// The single message of a non-load run, for its one line.
struct Single {
    message_id: String,
    latency: Duration,
    result: Result<Success, Failure>,
}

struct Stats {
    concurrency: usize,
    sent: u64,
    ok: u64,
    failed: u64,
    mic_verified: u64,
    signed_verified: u64,
    /// Distinct failure reasons in order of first appearance, with counts.
    failures: Vec<(String, u64)>,
    warnings: Vec<(String, u64)>,
    latency_us: hdrhistogram::Histogram<u64>,
    single: Option<Single>,
}

const MAX_DISTINCT: usize = 20;

fn count_distinct(list: &mut Vec<(String, u64)>, text: &str) {
    if let Some(entry) = list.iter_mut().find(|(t, _)| t == text) {
        entry.1 += 1;
    } else if list.len() < MAX_DISTINCT {
        list.push((text.to_string(), 1));
    }
}

impl Stats {
    fn new(concurrency: usize) -> Stats {
        Stats {
            concurrency,
            sent: 0,
            ok: 0,
            failed: 0,
            mic_verified: 0,
            signed_verified: 0,
            failures: Vec::new(),
            warnings: Vec::new(),
            // 1 µs to 1 hour, 3 significant digits: cannot fail.
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| {
                    hdrhistogram::Histogram::new(3).expect("3 significant digits is valid")
                }),
            single: None,
        }
    }

    fn record(
        &mut self,
        joined: Result<Outcome, tokio::task::JoinError>,
        progress: &indicatif::ProgressBar,
        load: bool,
    ) {
        self.sent += 1;
        progress.inc(1);
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(e) => {
                self.failed += 1;
                count_distinct(
                    &mut self.failures,
                    &format!("internal: send task failed: {e}"),
                );
                return;
            }
        };
        self.latency_us
            .saturating_record(outcome.latency.as_micros().max(1) as u64);
        match &outcome.result {
            Ok(success) => {
                self.ok += 1;
                if let Success::Receipt { receipt, .. } = success {
                    self.mic_verified += u64::from(receipt.mic_verified);
                    self.signed_verified += u64::from(receipt.verified_by.is_some());
                    for w in &receipt.warnings {
                        count_distinct(&mut self.warnings, w);
                    }
                }
            }
            Err(failure) => {
                self.failed += 1;
                count_distinct(&mut self.failures, &failure.reason);
                if self.failed == 1 && load {
                    progress.suspend(|| tracing::warn!(message_id = %outcome.message_id, reason = %failure.reason, "first failure"));
                }
                progress.set_message(format!("failed {}", self.failed));
            }
        }
        if !load {
            self.single = Some(Single {
                message_id: outcome.message_id,
                latency: outcome.latency,
                result: outcome.result,
            });
        }
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            0.0
        } else {
            round2(self.latency_us.value_at_quantile(q) as f64 / 1000.0)
        }
    }

    fn print(&self, s: &Summary) {
        let secs = s.wall.as_secs_f64().max(1e-9);
        println!(
            "sent {} messages ({} bytes payload, {} bytes on the wire each) to {} in {:.2} s, concurrency {}",
            self.sent, s.payload_len, s.wire_len, s.url, secs, self.concurrency
        );
        println!(
            "  ok {}, failed {}; MIC verified {}, signed receipts verified {}",
            self.ok, self.failed, self.mic_verified, self.signed_verified
        );
        println!(
            "  throughput {:.1} msg/s ({:.1} ok/s), {:.3} MB/s payload delivered ({:.3} MB/s on the wire)",
            self.sent as f64 / secs,
            self.ok as f64 / secs,
            self.ok as f64 * s.payload_len as f64 / secs / 1e6,
            self.sent as f64 * s.wire_len as f64 / secs / 1e6
        );
        println!(
            "  latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        );
        let cpu = s.cpu.0 + s.cpu.1;
        println!(
            "  client CPU {:.2} s ({:.2} user + {:.2} sys, {:.0}% of one core); message built once in {} ms",
            cpu,
            s.cpu.0,
            s.cpu.1,
            cpu / secs * 100.0,
            s.build_time.as_millis()
        );
        for (reason, n) in self.failures.iter().take(5) {
            println!("  failed {n}x: {reason}");
        }
        for (warning, n) in self.warnings.iter().take(5) {
            println!("  warning {n}x: {warning}");
        }
    }

    fn json(&self, s: &Summary) -> serde_json::Value {
        let secs = s.wall.as_secs_f64().max(1e-9);
        let mut value = serde_json::json!({
            "url": s.url,
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "mic_verified": self.mic_verified,
            "signed_receipts_verified": self.signed_verified,
            "concurrency": self.concurrency,
            "payload_bytes": s.payload_len,
            "wire_bytes": s.wire_len,
            "wall_s": round2(secs),
            "messages_per_s": round2(self.sent as f64 / secs),
            "ok_per_s": round2(self.ok as f64 / secs),
            "payload_mb_per_s": round4(self.ok as f64 * s.payload_len as f64 / secs / 1e6),
            "wire_mb_per_s": round4(self.sent as f64 * s.wire_len as f64 / secs / 1e6),
            "latency_ms": {
                "p50": self.percentile_ms(0.5),
                "p90": self.percentile_ms(0.9),
                "p99": self.percentile_ms(0.99),
                "max": round2(self.latency_us.max() as f64 / 1000.0),
                "mean": round2(self.latency_us.mean() / 1000.0),
            },
            "cpu_user_s": round2(s.cpu.0),
            "cpu_sys_s": round2(s.cpu.1),
            "cpu_percent": round2((s.cpu.0 + s.cpu.1) / secs * 100.0),
            "build_ms": round2(s.build_time.as_secs_f64() * 1000.0),
            "failures": self.failures.iter().map(|(r, n)| serde_json::json!({"reason": r, "count": n})).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|(w, n)| serde_json::json!({"warning": w, "count": n})).collect::<Vec<_>>(),
        });
        if let (Some(single), Some(map)) = (&self.single, value.as_object_mut()) {
            let mut message =
                serde_json::json!({ "message_id": single.message_id, "ok": single.result.is_ok() });
            if let Some(m) = message.as_object_mut() {
                match &single.result {
                    Ok(Success::Receipt {
                        receipt,
                        asynchronous,
                    }) => {
                        m.insert(
                            "mdn".into(),
                            if *asynchronous { "async" } else { "sync" }.into(),
                        );
                        m.insert("disposition".into(), receipt.disposition.render().into());
                        m.insert("mdn_signed".into(), receipt.signed.into());
                        m.insert("mdn_verified_by".into(), receipt.verified_by.clone().into());
                        m.insert("mic_verified".into(), receipt.mic_verified.into());
                        m.insert(
                            "mic".into(),
                            receipt.mic.as_ref().map(|mic| mic.render()).into(),
                        );
                    }
                    Ok(Success::NoMdn { status }) => {
                        m.insert("http_status".into(), (*status).into());
                    }
                    Ok(Success::MdnElsewhere { status, url }) => {
                        m.insert("http_status".into(), (*status).into());
                        m.insert("mdn_url".into(), url.clone().into());
                    }
                    Err(failure) => {
                        m.insert("reason".into(), failure.reason.clone().into());
                        m.insert("disposition".into(), failure.disposition.clone().into());
                    }
                }
            }
            map.insert("message".into(), message);
        }
        value
    }
}

fn print_single(single: &Single, s: &Summary) {
    let ms = single.latency.as_secs_f64() * 1000.0;
    match &single.result {
        Ok(Success::Receipt {
            receipt,
            asynchronous,
        }) => {
            let signature = match (&receipt.verified_by, receipt.signed) {
                (Some(subject), _) => format!("signed receipt verified ({subject})"),
                (None, true) => "signed receipt NOT verified".to_string(),
                (None, false) => "unsigned receipt".to_string(),
            };
            let mic = match (&receipt.mic, receipt.mic_verified) {
                (Some(mic), true) => format!("MIC verified ({})", mic.render()),
                _ => "no MIC returned".to_string(),
            };
            println!(
                "OK {} -> {}: {} MDN {}; {signature}; {mic}; {ms:.0} ms",
                single.message_id,
                s.url,
                if *asynchronous { "async" } else { "sync" },
                receipt.disposition.render()
            );
            for w in &receipt.warnings {
                println!("  warning: {w}");
            }
        }
        Ok(Success::NoMdn { status }) => {
            println!(
                "OK {} -> {}: HTTP {status}, no MDN asked for; {ms:.0} ms",
                single.message_id, s.url
            );
        }
        Ok(Success::MdnElsewhere { status, url }) => {
            println!(
                "OK {} -> {}: HTTP {status}; the MDN goes to {url} (not awaited); {ms:.0} ms",
                single.message_id, s.url
            );
        }
        Err(failure) => {
            println!(
                "FAILED {} -> {}: {}; {ms:.0} ms",
                single.message_id, s.url, failure.reason
            );
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// User and system CPU seconds this process has used so far.
fn cpu_time() -> (f64, f64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is
    // given; the buffer is zero-initialised and sized for it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    // SAFETY: rc == 0, so the kernel filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}
