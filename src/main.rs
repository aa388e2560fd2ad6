//! The `quic-chat` binary: parse the command line, set up logging, wire
//! signals to one shutdown token, run, and report errors as one line.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use time::UtcOffset;
use tokio_util::sync::CancellationToken;

use quic_chat::chat::Outcome;
use quic_chat::chat::{self, TerminalEnv};
use quic_chat::cli::{BenchArgs, Cli, CliCommand, ConnectArgs, ServerArgs, WhoamiArgs};
use quic_chat::server::{console, Server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        CliCommand::Server(_) => "info",
        CliCommand::Connect(_) | CliCommand::Bench(_) | CliCommand::Whoami(_) => "warn",
    };
    init_tracing(default_log);
    // The local time zone can only be read safely while this is the only thread.
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    // The server uses every core by default; a client serves one user (or, in
    // the bench, loads a server that usually shares the machine), and one
    // thread does that with less latency and CPU than two handing wake-ups to
    // each other (docs/BENCHMARKS.md, "Window 1").
    let threads = match &cli.command {
        CliCommand::Server(args) => args.threads,
        CliCommand::Bench(args) => Some(args.threads.unwrap_or(1)),
        CliCommand::Connect(_) | CliCommand::Whoami(_) => Some(1),
    };
    // Woken tasks run in order, not last-woken-first: a quinn connection's
    // driver then runs after the session tasks that woke it and sends their
    // packets together, instead of one send per message (docs/BENCHMARKS.md).
    // The current-thread scheduler always works that way; the multi-threaded
    // one needs its LIFO slot turned off (an unstable tokio API, enabled for
    // builds from this repository by .cargo/config.toml).
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            #[allow(unused_mut)]
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            #[cfg(tokio_unstable)]
            builder.disable_lifo_slot();
            builder
        }
    };
    if let Some(threads) = threads.filter(|&t| t > 1) {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            CliCommand::Server(args) => run_server(*args).await.map(|()| ExitCode::SUCCESS),
            CliCommand::Connect(args) => run_client(args, offset).await,
            CliCommand::Bench(args) => run_bench(args).await.map(|()| ExitCode::SUCCESS),
            CliCommand::Whoami(args) => whoami(args).map(|()| ExitCode::SUCCESS),
        }
    });
    // Do not wait for the stdin reader threads: they may be blocked on a read.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let cluster_config = args.cluster_config().map_err(anyhow::Error::msg)?;
    let server = match &cluster_config {
        Some(cluster) => {
            let server = Server::bind_clustered(args.into_config(), cluster).await?;
            if let Some(cluster) = server.cluster() {
                println!(
                    "joined the cluster as node {} (NATS {})",
                    cluster.node_id(),
                    cluster.server_version()
                );
            }
            server
        }
        None => Server::bind(args.into_config())?,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.local_addr())?;
        if let Some(ca) = server.ca_path() {
            writeln!(out, "CA certificate for clients: {}", ca.display())?;
        }
        if let Some(addr) = server.metrics_addr() {
            writeln!(out, "metrics on http://{addr}/metrics")?;
        }
        out.flush()?;
    }
    console::spawn(
        shutdown.clone(),
        server.operator(),
        tokio::runtime::Handle::current(),
    );
    server.run(shutdown).await;
    Ok(())
}

/// Chat; a session that was replaced (signed in elsewhere) has already said
/// so in its output and exits with a failure status, without another line.
async fn run_client(args: ConnectArgs, offset: UtcOffset) -> anyhow::Result<ExitCode> {
    let env = TerminalEnv::from_process(args.json, offset);
    let config = args.into_config()?;
    // Ctrl-C and SIGTERM leave the way EXIT does.
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    Ok(match chat::run(&config, env, shutdown).await? {
        Outcome::Left | Outcome::ServerShutdown => ExitCode::SUCCESS,
        Outcome::Replaced => ExitCode::FAILURE,
    })
}

/// Print this device's fingerprint on stdout, and where its identity is on stderr.
fn whoami(args: WhoamiArgs) -> anyhow::Result<()> {
    let dir = args.dir()?;
    let key = dir.join(quic_chat::tls::IDENTITY_KEY_FILE);
    let existed = key.exists();
    let identity = quic_chat::tls::ClientIdentity::load_or_create(&dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", identity.fingerprint)?;
    out.flush()?;
    if existed {
        eprintln!("this device's identity: {}", key.display());
    } else {
        eprintln!("created this device's identity: {}", key.display());
    }
    Ok(())
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = quic_chat::bench::run(&args.into_config()).await?;
    let mut out = std::io::stdout();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(out, "{}", report.table())?;
    }
    out.flush()?;
    Ok(())
}

/// Cancel `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) -> impl std::future::Future<Output = ()> {
    // The handlers are installed here, before the caller announces itself, so a
    // signal that comes right after startup is still a graceful shutdown.
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    async move {
        #[cfg(unix)]
        match signals {
            Ok((mut interrupt, mut terminate)) => tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            },
            Err(e) => {
                tracing::warn!("cannot listen for signals: {e}");
                return;
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        token.cancel();
    }
}
