//! The `atom` command line: one module per command group.

pub mod admin_client;
pub mod certs;
pub mod executions;
pub mod listeners;
pub mod messages;
pub mod molecule;
pub mod outbox;
pub mod processes;
pub mod send;
pub mod users;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The `atom` command line.
#[derive(Debug, Parser)]
#[command(
    name = "atom",
    version,
    about = "Atom: a self-hosted B2B integration runtime for AS2 trading partners",
    long_about = None
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Configuration file; used when it exists (an explicit -c must exist).
    #[arg(short, long, global = true, env = "ATOM_CONFIG")]
    pub config: Option<PathBuf>,

    /// Data directory (keystore, store, admin token); overrides the configuration's data_dir.
    #[arg(long, global = true, env = "ATOM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the runtime in the foreground (shared web server, listeners, admin API, console).
    Run,
    /// Listeners: list them, or pause|resume|restart ID...|--all.
    Listeners {
        #[command(subcommand)]
        action: Option<listeners::ListenersCommand>,
    },
    /// AS2 messages received (in, with MDN status) and sent by `as2` steps (out, with outbox status), newest first; `show ID` and `download ID raw|payload|mdn` for a received one.
    Messages {
        #[command(subcommand)]
        action: Option<messages::MessagesCommand>,
        /// How many messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Received (in), sent by `as2` steps (out) or both (all; the default, except with --json or a filter: in).
        #[arg(long, value_enum)]
        direction: Option<messages::Direction>,
        #[command(flatten)]
        search: messages::SearchArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The nodes sharing this Atom's store: address, version, last heartbeat, work, status (lost when silent longer than the lease).
    Molecule {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deployed process bundles: versions, modes, steps, errors.
    Processes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a bundle folder and deploy it into the processes folder (hot-reloaded).
    Deploy {
        /// The bundle folder (process.yaml and its modules); its name is the process name.
        dir: PathBuf,
        /// Seconds to wait for the running Atom to serve the new version.
        #[arg(long, default_value_t = 15)]
        wait: u64,
    },
    /// Remove a bundle from the processes folder; its listener is undeployed.
    Undeploy {
        name: String,
        /// Seconds to wait for the running Atom to undeploy it.
        #[arg(long, default_value_t = 15)]
        wait: u64,
    },
    /// Execution history, newest first; `show ID` for one execution's log and documents, `rerun ID` to run a finished one again.
    Executions {
        #[command(subcommand)]
        action: Option<executions::ExecutionsCommand>,
        /// Only this process.
        #[arg(long)]
        process: Option<String>,
        /// Only this status (STARTED, INPROCESS, COMPLETE, COMPLETE_WARN, ERROR, ABORTED).
        #[arg(long)]
        status: Option<String>,
        /// Only this worker mode (general, low_latency_debug).
        #[arg(long)]
        mode: Option<String>,
        /// Queued at or after (YYYY-MM-DD, YYYY-MM-DDTHH:MM UTC, or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Queued before (same forms).
        #[arg(long)]
        until: Option<String>,
        /// How many executions.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Documents `as2` steps send to partners, newest first; `show ID`, `retry ID`, `cancel ID`, `download ID payload|mdn`.
    Outbox {
        #[command(subcommand)]
        action: Option<outbox::OutboxCommand>,
        /// Only this partner profile.
        #[arg(long)]
        partner: Option<String>,
        /// Only this status (queued, sending, retrying, acknowledged, sent, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keys and certificates: generate, import, export, list.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Console users: list, add NAME --role operator|viewer, passwd NAME, remove NAME.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// AS2 client: sign, encrypt, compress and send a file; verify the MDN; --count/--concurrency for load.
    Send(send::SendArgs),
}

/// A command failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user asked for something impossible (bad name, missing file).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    #[error(transparent)]
    Key(#[from] atom_connectors::As2Error),
    /// The running Atom refused or could not be reached.
    #[error("{0}")]
    Remote(String),
    #[error("{0}")]
    Start(#[from] crate::app::StartError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The command ran, but what it did failed (e.g. `send`: a negative MDN).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Structured logs to stderr; RUST_LOG wins over -v.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},actix_server=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Err(e) = atom_connectors::crypto_init::init() {
        tracing::warn!(error = %e, "legacy OpenSSL algorithms unavailable");
    }
    let config = load_config(cli.config.as_deref())?;
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.clone());
    match cli.command {
        Command::Run => {
            let config = crate::config::Config { data_dir, ..config };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Usage(format!("starting the async runtime: {e}")))?;
            Ok(runtime.block_on(crate::app::run(config))?)
        }
        Command::Listeners { action } => listeners::run(
            &admin_client::AdminClient::connect(config.admin_address, &data_dir)?,
            action,
        ),
        Command::Messages {
            action,
            limit,
            direction,
            search,
            json,
        } => {
            let client = admin_client::AdminClient::connect(config.admin_address, &data_dir)?;
            match action {
                Some(messages::MessagesCommand::Show { id, json }) => {
                    messages::show(&client, id, json)
                }
                Some(messages::MessagesCommand::Download { id, part, out }) => {
                    messages::download(&client, id, part, out.as_deref())
                }
                None => messages::run(&client, limit, json, direction, &search),
            }
        }
        Command::Molecule { json } => molecule::run(
            &admin_client::AdminClient::connect(config.admin_address, &data_dir)?,
            json,
        ),
        Command::Processes { json } => processes::list(
            &admin_client::AdminClient::connect(config.admin_address, &data_dir)?,
            json,
        ),
        Command::Deploy { dir, wait } => processes::deploy(&config, &data_dir, &dir, wait),
        Command::Undeploy { name, wait } => processes::undeploy(&config, &data_dir, &name, wait),
        Command::Executions {
            action,
            process,
            status,
            mode,
            since,
            until,
            limit,
            json,
        } => {
            let client = admin_client::AdminClient::connect(config.admin_address, &data_dir)?;
            match action {
                Some(executions::ExecutionsCommand::Show { id, json }) => {
                    executions::show(&client, &id, json)
                }
                Some(executions::ExecutionsCommand::Rerun { id }) => {
                    executions::rerun(&client, &id)
                }
                Some(executions::ExecutionsCommand::Download { id, n, out }) => {
                    executions::download(&client, &id, n, out.as_deref())
                }
                None => {
                    let search = crate::store::execution_query::ExecutionQuery {
                        process,
                        status,
                        mode,
                        since,
                        until,
                        before: None,
                    };
                    executions::list(&client, &search, limit, json)
                }
            }
        }
        Command::Outbox {
            action,
            partner,
            status,
            limit,
            json,
        } => {
            let client = admin_client::AdminClient::connect(config.admin_address, &data_dir)?;
            match action {
                Some(outbox::OutboxCommand::Show { id, json }) => outbox::show(&client, id, json),
                Some(outbox::OutboxCommand::Retry { id, new_id }) => {
                    outbox::retry(&client, id, new_id)
                }
                Some(outbox::OutboxCommand::Cancel { id }) => outbox::cancel(&client, id),
                Some(outbox::OutboxCommand::Download { id, part, out }) => {
                    outbox::download(&client, id, &part, out.as_deref())
                }
                None => outbox::list(&client, partner.as_deref(), status.as_deref(), limit, json),
            }
        }
        Command::Certs(cmd) => certs::run(&data_dir, cmd),
        Command::Users(cmd) => users::run(&data_dir, cmd),
        Command::Send(args) => send::run(&data_dir, &config.partners_dir, args),
    }
}

/// The configuration: the named file, else ./atom.yaml if present, else defaults.
fn load_config(explicit: Option<&std::path::Path>) -> Result<crate::config::Config, CliError> {
    use crate::config::Config;
    match explicit {
        Some(path) => Ok(Config::load(path)?),
        None => {
            let default = std::path::Path::new("atom.yaml");
            if default.is_file() {
                Ok(Config::load(default)?)
            } else {
                Ok(Config::default())
            }
        }
    }
}
