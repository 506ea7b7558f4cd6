//! The `flywheel` command line: `flywheel sql` (shell and scripts) and `flywheel serve`.

mod print;
mod shell;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Overrides};
use crate::engine::{FileAccess, RefreshScope};
use crate::{Engine, EngineOptions, Result, server};

/// Flywheel: a SQL-native feature platform over Delta Lake and Arrow Flight.
#[derive(Debug, Parser)]
#[command(name = "flywheel", version, about)]
pub struct Cli {
    /// TOML config file (keys: listen, pg_listen, warehouse, log, auth_token, auth_user, auth_password,
    /// tls_cert, tls_key, online_store, memory_limit, parquet_data_pages, allowed_paths,
    /// statement_timeout, max_statement_size,
    /// scheduler, on_change_poll_interval, schedule_lease_timeout,
    /// max_expression_depth, max_lookup_keys; see the README's Configuration).
    /// Also FLYWHEEL_CONFIG.
    #[arg(long, global = true)]
    config: Option<String>,
    /// Warehouse root: a folder or an object-store URL [default: ./warehouse]. Also FLYWHEEL_WAREHOUSE.
    #[arg(long, global = true)]
    warehouse: Option<String>,
    /// Online store: `embedded` (in the warehouse, the default) or a redis:// URL. Also
    /// FLYWHEEL_ONLINE_STORE.
    #[arg(long, global = true)]
    online_store: Option<String>,
    /// The most memory queries may hold, e.g. 4GiB [default: half of the machine's memory]. Also
    /// FLYWHEEL_MEMORY_LIMIT.
    #[arg(long, global = true)]
    memory_limit: Option<String>,
    /// How long one statement may run, e.g. 30s, 15m, 2h, 0 for no limit [default: 1h for serve,
    /// none for sql]. Also FLYWHEEL_STATEMENT_TIMEOUT.
    #[arg(long, global = true)]
    statement_timeout: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL: an interactive shell, or statements from -e / -f.
    Sql {
        /// Run these statements and exit.
        #[arg(short = 'e', long = "execute", conflicts_with = "file")]
        execute: Option<String>,
        /// Run the statements of this file and exit.
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
    },
    /// Refresh feature views, labels and training sets, inputs first (for cron, Airflow, dbt
    /// hooks): one line per object built; exits non-zero naming the one that failed.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["names", "stale", "all"]))]
    Refresh {
        /// The objects to refresh, each after its stale upstream objects.
        names: Vec<String>,
        /// Refresh the named objects alone, not their stale upstream objects.
        #[arg(long, requires = "names")]
        only: bool,
        /// Refresh every stale object.
        #[arg(long)]
        stale: bool,
        /// Refresh every object, stale or not.
        #[arg(long)]
        all: bool,
        /// Recompute each object whole, even where appending what its inputs gained would do.
        #[arg(long)]
        full: bool,
    },
    /// Serve Arrow Flight SQL (and the Postgres wire protocol with --pg-listen).
    Serve {
        /// Address to listen on [default: 127.0.0.1:50051]. Also FLYWHEEL_LISTEN.
        #[arg(long)]
        listen: Option<String>,
        /// Also serve the PostgreSQL wire protocol (psql, JDBC, psycopg, BI tools, dbt) on this
        /// address, e.g. 127.0.0.1:5433 [default: off]. Also FLYWHEEL_PG_LISTEN.
        #[arg(long)]
        pg_listen: Option<String>,
        /// Require this bearer token on every call. Also FLYWHEEL_AUTH_TOKEN.
        #[arg(long)]
        auth_token: Option<String>,
        /// Accept Basic credentials of this user (with --auth-password). Also FLYWHEEL_AUTH_USER.
        #[arg(long)]
        auth_user: Option<String>,
        /// The password of --auth-user. Also FLYWHEEL_AUTH_PASSWORD.
        #[arg(long)]
        auth_password: Option<String>,
        /// Serve TLS with this PEM certificate chain (with --tls-key). Also FLYWHEEL_TLS_CERT.
        #[arg(long)]
        tls_cert: Option<String>,
        /// The PEM private key of --tls-cert. Also FLYWHEEL_TLS_KEY.
        #[arg(long)]
        tls_key: Option<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut overrides = Overrides {
        config_file: cli.config.clone(),
        warehouse: cli.warehouse.clone(),
        online_store: cli.online_store.clone(),
        memory_limit: cli.memory_limit.clone(),
        statement_timeout: cli.statement_timeout.clone(),
        ..Overrides::default()
    };
    if let Command::Serve {
        listen,
        pg_listen,
        auth_token,
        auth_user,
        auth_password,
        tls_cert,
        tls_key,
    } = &cli.command
    {
        overrides.listen = listen.clone();
        overrides.pg_listen = pg_listen.clone();
        overrides.auth_token = auth_token.clone();
        overrides.auth_user = auth_user.clone();
        overrides.auth_password = auth_password.clone();
        overrides.tls_cert = tls_cert.clone();
        overrides.tls_key = tls_key.clone();
    }
    let config = match Config::resolve(&overrides, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config, matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::engine::THREAD_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker thread, whose stack is THREAD_STACK_BYTES (the main thread's is smaller).
    let result = runtime.block_on(async {
        tokio::spawn(run(cli.command, config))
            .await
            .unwrap_or_else(|e| Err(crate::Error::Transport(format!("the command stopped: {e}"))))
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", e.user_message());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config, serving: bool) {
    // The shell logs warnings only, so its output stays clean; the server logs at `config.log`.
    let level = if serving { config.log.as_str() } else { "warn" };
    // delta-kernel logs an ERROR whenever it probes a folder that holds no table yet, which is how
    // every CREATE TABLE starts; that is not an error of ours.
    // Below WARN, delta-kernel and delta-rs narrate every snapshot and scan at INFO: keep them to
    // warnings unless RUST_LOG asks for more.
    let default = format!(
        "{level},buoyant_kernel=warn,deltalake_core=warn,buoyant_kernel::snapshot::builder=off"
    );
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// How long a statement of `flywheel serve` may run when `statement_timeout` is not set.
pub const SERVE_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

async fn run(command: Command, config: Config) -> Result<ExitCode> {
    // The shell runs as its user; a server's clients may use only the folders the
    // configuration allows.
    let file_access = match &command {
        Command::Sql { .. } | Command::Refresh { .. } => FileAccess::Unrestricted,
        Command::Serve { .. } => FileAccess::restricted_to(&config.allowed_paths)?,
    };
    // A server's statements stop after an hour unless the configuration says otherwise; the
    // shell's run as long as their user waits.
    let default_timeout = match &command {
        Command::Sql { .. } | Command::Refresh { .. } => None,
        Command::Serve { .. } => Some(SERVE_STATEMENT_TIMEOUT),
    };
    let options = EngineOptions {
        online_store: config.online_store.clone(),
        memory_limit: config.memory_limit_bytes()?,
        data_pages: config.data_pages()?,
        file_access,
        limits: config.limits(default_timeout)?,
    };
    let engine = Engine::open_with(&config.warehouse, &options).await?;
    match command {
        Command::Sql { execute, file } => {
            let script = match (execute, file) {
                (Some(sql), _) => Some(sql),
                (None, Some(path)) => Some(std::fs::read_to_string(&path).map_err(|e| {
                    crate::Error::Config(format!("cannot read SQL file `{path}`: {e}"))
                })?),
                (None, None) => None,
            };
            match script {
                Some(sql) => Ok(shell::run_script(&engine, &sql).await),
                None => shell::interactive(&engine, &config).await,
            }
        }
        Command::Refresh {
            names,
            only,
            stale,
            all,
            full,
        } => {
            let scope = if all {
                RefreshScope::All
            } else if stale {
                RefreshScope::Stale
            } else {
                RefreshScope::Objects { names, only }
            };
            refresh(&engine, scope, full).await
        }
        Command::Serve { .. } => {
            let listener = server::bind(config.listen_addr()?).await?;
            let options = config.serve_options()?;
            for name in config.retired_settings() {
                tracing::warn!(
                    setting = name,
                    "ignored: the download cache was removed in 0.2 (training-set reads stream \
                     from the Delta files); delete this setting from the configuration"
                );
            }
            println!(
                "Flywheel serving Flight SQL on {}://{} (warehouse {}{})",
                options.scheme(),
                listener.local_addr()?,
                engine.registry().warehouse().root(),
                if options.credentials.enabled() {
                    "; authentication required"
                } else {
                    ""
                }
            );
            let pg = match config.pg_options(&options)? {
                Some((addr, pg_options)) => {
                    let listener = flywheel_pg::bind(addr).await?;
                    flywheel_pg::open_catalog(&engine)?;
                    println!(
                        "Flywheel serving the Postgres protocol on {}{}",
                        listener.local_addr()?,
                        if pg_options.tls.is_some() {
                            " (TLS offered)"
                        } else {
                            ""
                        }
                    );
                    Some((listener, pg_options))
                }
                None => None,
            };
            // Scheduled refreshes run beside the server, for as long as it serves.
            let scheduler = config.scheduler_options()?.map(|o| {
                let scheduler = crate::engine::Scheduler::new(engine.clone(), o);
                AbortOnDrop(tokio::spawn(scheduler.run(std::future::pending())))
            });
            let stop = std::sync::Arc::new(tokio::sync::Notify::new());
            let pg = pg.map(|(listener, pg_options)| {
                let engine = engine.clone();
                let stop = std::sync::Arc::clone(&stop);
                tokio::spawn(async move {
                    flywheel_pg::serve(engine, listener, pg_options, async move {
                        stop.notified().await
                    })
                    .await
                })
            });
            let served =
                server::serve_with(engine, listener, options, server::shutdown_signal()).await;
            stop.notify_one();
            if let Some(pg) = pg {
                match pg.await {
                    Ok(result) => result?,
                    Err(e) => {
                        return Err(crate::Error::Internal(format!(
                            "the Postgres front door stopped: {e}"
                        )));
                    }
                }
            }
            served?;
            drop(scheduler);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `flywheel refresh`: a line per object as it starts (on a terminal) and as it is built.
async fn refresh(engine: &Engine, scope: RefreshScope, full: bool) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let built = engine
        .refresh(scope, crate::engine::Trigger::Cli, full, |step| {
            if terminal {
                eprintln!(
                    "[{}/{}] refreshing {} {} ...",
                    step.position, step.of, step.kind, step.name
                );
            }
        })
        .await?;
    for r in &built {
        let rows = r
            .rows_written
            .map_or_else(|| "? rows".to_string(), |n| format!("{n} rows"));
        println!(
            "refreshed {} {}: version {}, {} ({rows}, {:.2}s)",
            r.kind,
            r.name,
            r.version,
            r.mode.as_str(),
            r.elapsed.as_secs_f64()
        );
    }
    println!(
        "{} object{} refreshed ({:.2}s)",
        built.len(),
        if built.len() == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_config_flags_help_names_every_key_a_config_file_takes() {
        // serde lists the accepted keys when it refuses an unknown one.
        let refused = Config::from_toml("not_a_key = 1")
            .expect_err("unknown key")
            .to_string();
        let (_, expected) = refused
            .split_once("expected one of")
            .expect("serde lists the keys");
        let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(keys.contains(&"listen"), "{refused}");
        let help = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .and_then(|a| a.get_help())
            .expect("--config has help")
            .to_string();
        let retired = Config::retired_settings_names();
        for key in keys.into_iter().filter(|k| !retired.contains(k)) {
            assert!(help.contains(key), "`--config` help lacks `{key}`: {help}");
        }
    }
}
