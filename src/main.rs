//! The `zundamon` binary: parses the command line, loads the configuration and hands over to the
//! library. With no subcommand it runs the bot (what the container runs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zundamon::config::{Config, ConfigError, Purpose};
use zundamon::ops::telemetry;
use zundamon::Application;

#[derive(Parser)]
#[command(
    name = "zundamon",
    version,
    about = "Zundamon, a Discord bot that answers /zunda questions in Zundamon's voice"
)]
struct Cli {
    /// A TOML file overriding the built-in defaults (see config/default.toml); environment
    /// variables override it in turn.
    #[arg(long, short, global = true, env = "ZUNDA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bot (the default): Discord gateway, health and metrics server.
    Run,
    /// Validate the configuration and print the effective one, secrets redacted.
    CheckConfig,
    /// Check the configured chat model server: reachable, key accepted, model found, tools,
    /// streaming, reasoning, latency. Exits 0 only when the bot can answer with it.
    CheckModel,
    /// Probe the running bot's /healthz on this host (PORT, ZUNDA_BIND_ADDR): exit 0 when it
    /// answers 200, 1 otherwise. For container health checks in images without curl.
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Ask Zundamon a question from the console, without Discord. Without QUESTION, reads
    /// questions line by line from stdin, remembering the conversation like one channel.
    Ask {
        /// The question; omit it to read questions from stdin.
        question: Option<String>,
        /// Channel id the conversation is kept under.
        #[arg(long, default_value_t = 1)]
        channel: u64,
        /// The name Zundamon addresses you by.
        #[arg(long, default_value = "console")]
        name: String,
    },
    /// Manage the conversation store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy every channel's window and the pending questions from a SQLite file into PostgreSQL.
    /// Running it again copies nothing twice.
    Copy {
        /// The SQLite database: sqlite:PATH (the file of ZUNDA_DB_PATH).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: postgres://USER:PASSWORD@HOST:5432/DATABASE.
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    telemetry::install_crypto();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Store(StoreCommand::Copy { from, to }) = &command {
        // Needs no bot configuration: both stores are named on the command line.
        let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
        let to = zundamon::config::Secret::new(to.clone());
        return match runtime.block_on(zundamon::store::copy::run(from, &to)) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("zundamon: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let purpose = match command {
        Command::Run => Purpose::Bot,
        Command::CheckConfig => Purpose::Check,
        Command::Ask { .. } | Command::CheckModel => Purpose::Ask,
        Command::Store(_) => unreachable!("handled above"),
        Command::Healthcheck { .. } => Purpose::Probe,
    };
    let config = match Config::load(cli.config.as_deref(), purpose) {
        Ok(config) => config,
        // Docker reads 1 as unhealthy and reserves 2.
        Err(err) if purpose == Purpose::Probe => {
            eprintln!("zundamon: {err}");
            return ExitCode::FAILURE;
        }
        Err(err) => return config_failure(&err),
    };
    if let Command::Healthcheck { timeout } = command {
        return healthcheck(&config, timeout);
    }
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    let result = match command {
        Command::CheckConfig => {
            println!(
                "# configuration is valid\n{}",
                zundamon::ops::reload::annotate(&config.to_redacted_toml())
            );
            Ok(())
        }
        Command::CheckModel => runtime.block_on(zundamon::agent::check::run(&config)),
        Command::Ask {
            question,
            channel,
            name,
        } => runtime.block_on(zundamon::app::ask::run(config, question, channel, name)),
        Command::Healthcheck { .. } => unreachable!("answered before the runtime starts"),
        Command::Run => {
            runtime.block_on(async { Application::build(config).await?.run_until_stopped().await })
        }
        Command::Store(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("zundamon: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("zundamon: {err}");
    ExitCode::from(2)
}

fn healthcheck(config: &Config, timeout_secs: u64) -> ExitCode {
    let timeout = std::time::Duration::from_secs(timeout_secs.max(1));
    let result = zundamon::ops::probe::target(&config.http.bind_addr, config.http.port)
        .and_then(|addr| zundamon::ops::probe::probe(addr, timeout));
    match result {
        Ok(status) => {
            println!("healthy: {status}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("zundamon: unhealthy: {problem}");
            ExitCode::FAILURE
        }
    }
}
