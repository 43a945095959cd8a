//! The `snaptree` command line: serve, robot, token, migrate, schema.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use snaptree::clock::Clock;
use snaptree::config::{
    DatabaseUrl, DriverConfig, Limits, RateLimits, Retention, RobotConfig, Timeouts,
};
use snaptree::db::Db;
use snaptree::domain::Role;
use snaptree::server::{self, ServeOptions, Server};
use snaptree::{AppError, AppResult, demo, graphql};

mod args;
mod config_file;

use args::*;

fn main() -> ExitCode {
    if let Err(err) = read_config_file() {
        eprintln!("snaptree: {err}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SNAPTREE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The request's or task's span goes in each line, as `span` and `spans`.
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    // Made from the command line's own definition, so they never disagree with it.
    let mut definition = <Cli as clap::CommandFactory>::command();
    let mut made = Vec::new();
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut definition, "snaptree", &mut made);
            return emit(&made);
        }
        Command::Man { command } => {
            let page = match command {
                None => definition,
                Some(name) => match definition.find_subcommand(&name) {
                    // Leaked: clap names commands with static text, and the
                    // process ends once the page is printed.
                    Some(sub) => sub
                        .clone()
                        .name(&*Box::leak(format!("snaptree-{name}").into_boxed_str())),
                    None => {
                        eprintln!("snaptree: no command {name:?} (see snaptree --help)");
                        return ExitCode::from(2);
                    }
                },
            };
            let rendered = clap_mangen::Man::new(page).render(&mut made);
            return match rendered {
                Ok(()) => emit(&made),
                Err(err) => {
                    eprintln!("snaptree: cannot make the manual page: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let runtime = server::runtime().expect("a tokio runtime starts");
    let log_format = cli.log_format;
    if let Command::Snapshot(args) = cli.command {
        return runtime.block_on(snaptree::cli::run(args));
    }
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match log_format {
                LogFormat::Text => eprintln!("snaptree: {}", describe(&err)),
                // A log collector reads every line as JSON.
                LogFormat::Json => tracing::error!(error = %describe(&err), "snaptree stopped"),
            }
            ExitCode::FAILURE
        }
    }
}

/// On the command line the operator sees the cause, internal or not.
fn describe(err: &AppError) -> String {
    match err {
        AppError::Internal(cause) => cause.clone(),
        other => other.to_string(),
    }
}

async fn run(command: Command) -> AppResult<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Robot(args) => robot(*args).await,
        Command::Token(TokenCommand::Create {
            project,
            role,
            name,
            database,
        }) => {
            let db = Db::connect(&database.database_url).await?;
            let drivers = DriverConfig::new("snaptree-sim".into());
            let service = server::service(db, drivers, Limits::default(), Clock::System);
            let token = service
                .admin()
                .bootstrap_token(&project, role.into(), &name)
                .await?;
            println!("{token}");
            Ok(())
        }
        Command::Migrate { database } => {
            let ran = snaptree::db::migrate(&database.database_url).await?;
            eprintln!("{}: {ran} migration(s) applied", database.database_url);
            Ok(())
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Monitoring { file } => {
            use snaptree::monitoring;
            print!(
                "{}",
                match file {
                    MonitoringFile::Rules => monitoring::RULES,
                    MonitoringFile::RulesTests => monitoring::RULES_TESTS,
                    MonitoringFile::Dashboard => monitoring::DASHBOARD,
                }
            );
            Ok(())
        }
        Command::Snapshot(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("run by main")
        }
    }
}

async fn serve(args: ServeArgs) -> AppResult<()> {
    let robot = (!args.no_robot).then(|| args.tuning.config(Vec::new()));
    let limits = args
        .limits
        .limits(args.tuning.hosts.host_calls_per_host)
        .map_err(|e| AppError::validation(format!("bad limits: {e}")))?;
    let origins = snaptree::http::Origins::parse(&args.cors_origins)
        .map_err(|e| AppError::validation(format!("bad --cors-origins: {e}")))?;
    let retention = args
        .retention
        .retention()
        .map_err(|e| AppError::validation(format!("bad retention: {e}")))?;
    let server = Server::start(ServeOptions {
        listen: args.listen,
        database: args.database.database_url.clone(),
        robot,
        drivers: args.tuning.hosts.config(),
        limits,
        retention,
        origins,
        metrics: snaptree::http::MetricsAccess {
            token: args.metrics_token.clone(),
            listen: args.metrics_listen,
        },
        clock: args.tuning.hosts.clock.clock(),
    })
    .await?;
    let url = format!("http://{}/", server.addr);
    // One line: scripts (and the tests) read the addresses from it.
    let metrics = server
        .metrics_addr
        .map(|at| format!("; metrics on http://{at}/metrics"))
        .unwrap_or_default();
    println!(
        "snaptree is serving on {url} ({}){metrics}",
        args.database.database_url
    );
    if args.demo {
        let token = demo::seed(&server.service).await?;
        println!(
            "Open {url} - demo token (OPERATOR of project \"{}\"):",
            demo::PROJECT
        );
        println!("{token}");
        println!(
            "Try: curl -s {url}graphql -H \"Authorization: Bearer {token}\" -H 'Content-Type: application/json' -d '{{\"query\":\"{{ vms {{ edges {{ node {{ id name }} }} }} }}\"}}'"
        );
    }
    shutdown_signal().await;
    tracing::info!("stopping");
    server.stop().await;
    Ok(())
}

async fn robot(args: RobotArgs) -> AppResult<()> {
    let db = Db::connect(&args.database.database_url).await?;
    let hosts = &args.tuning.hosts;
    let limits = Limits {
        snapshots_per_vm: args.max_snapshots_per_vm.max(1),
        ..hosts.limits()
    };
    let retention = args
        .retention
        .retention()
        .map_err(|e| AppError::validation(format!("bad retention: {e}")))?;
    let service = server::service(db.clone(), hosts.config(), limits, hosts.clock.clock());
    let robot = Some(args.tuning.config(args.hosts));
    let workers = server::Workers::start(&service, db, robot, retention);
    shutdown_signal().await;
    workers.stop().await;
    Ok(())
}

/// Sets the environment variables of the configuration file's settings that the
/// environment does not set (see [`config_file`]). Runs first, while the process has one
/// thread.
fn read_config_file() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = config_file::locate(&args) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    let known = config_file::known(&<Cli as clap::CommandFactory>::command());
    for (variable, value) in config_file::settings(&path, &text, &known)? {
        if std::env::var_os(&variable).is_none() {
            // SAFETY: no other thread exists yet (the runtime starts after this).
            unsafe { std::env::set_var(&variable, value) };
        }
    }
    Ok(())
}

/// Writes `bytes` to stdout; a reader that has gone (`| head`) is no error of ours.
fn emit(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("snaptree: cannot write to stdout: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM can be watched");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
