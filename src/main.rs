//! The `snaptree` command line: serve, robot, token, migrate, schema.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use snaptree::clock::Clock;
use snaptree::config::{DatabaseUrl, DriverConfig, Limits, RateLimits, RobotConfig, Timeouts};
use snaptree::db::Db;
use snaptree::domain::Role;
use snaptree::server::{self, ServeOptions, Server};
use snaptree::{AppError, AppResult, demo, graphql};

/// Snapshot trees of virtual machines: a GraphQL API, a robot that carries the actions
/// out on the hypervisors, and a dashboard.
#[derive(Parser)]
#[command(name = "snaptree", version, about)]
struct Cli {
    /// Log lines as text, or as one JSON object per line (for a log collector).
    #[arg(
        long,
        global = true,
        env = "SNAPTREE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// The command to run.
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the dashboard, with a robot in the same process.
    Serve(Box<ServeArgs>),
    /// Run only a robot, next to other servers sharing the database.
    Robot(RobotArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Bring the database's schema up to date (serve does this too).
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Snapshots through a server's API, for scripts: create, apply, revert, delete,
    /// tree, list. The token comes from SNAPTREE_TOKEN. Exit codes: 0 done, 1 the task
    /// failed (--wait), 2 bad usage, 3 refused (the code is printed), 4 unreachable.
    Snapshot(snaptree::cli::SnapshotArgs),
}

#[derive(Args)]
struct DatabaseArgs {
    /// sqlite://FILE (the embedded default) or postgres://USER@HOST/DB.
    // The URL may hold a password: --help must not show the variable's value.
    #[arg(
        long,
        env = "SNAPTREE_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://snaptree.db"
    )]
    database_url: DatabaseUrl,
}

/// The time the service goes by.
#[derive(Args)]
struct ClockArgs {
    /// For tests: read the time from this file (RFC 3339) instead of the system's clock,
    /// so that schedules and ages can be moved without waiting.
    #[arg(long, env = "SNAPTREE_CLOCK_FILE", hide = true)]
    clock_file: Option<PathBuf>,
}

impl ClockArgs {
    fn clock(&self) -> Clock {
        self.clock_file.clone().map_or(Clock::System, Clock::file)
    }
}

#[derive(Args)]
struct RobotTuning {
    /// Tasks run at once, over all hosts (each host's own limit still holds).
    #[arg(long, env = "SNAPTREE_WORKERS", default_value_t = 64)]
    workers: usize,
    /// Seconds a claim holds without a heartbeat; a dead robot's tasks are taken up
    /// again after this.
    #[arg(long, env = "SNAPTREE_LEASE_SECONDS", default_value_t = 10)]
    lease_seconds: u64,
    /// Seconds running tasks may take to finish when stopping (SIGTERM); the rest go back
    /// to the queue at once for other robots.
    #[arg(long, env = "SNAPTREE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    shutdown_grace_seconds: u64,
    /// Seconds one host call of a create may take before it is cut off (and retried).
    #[arg(long, env = "SNAPTREE_CREATE_TIMEOUT_SECONDS", default_value_t = 300)]
    create_timeout_seconds: u64,
    /// Seconds one host call of an apply or revert may take (the VM restarts: the slowest).
    #[arg(long, env = "SNAPTREE_APPLY_TIMEOUT_SECONDS", default_value_t = 600)]
    apply_timeout_seconds: u64,
    /// Seconds one host call of a delete may take.
    #[arg(long, env = "SNAPTREE_DELETE_TIMEOUT_SECONDS", default_value_t = 300)]
    delete_timeout_seconds: u64,
    /// How hosts are reached, and the clock.
    #[command(flatten)]
    hosts: HostAccess,
}

/// How hosts are reached.
#[derive(Args)]
struct HostAccess {
    /// Where simulated (sim://) hosts keep their state (a file `host-<id>/DOWN` in it
    /// plays that host's outage).
    #[arg(long, env = "SNAPTREE_SIM_DIR", default_value = "snaptree-sim")]
    sim_dir: PathBuf,
    /// libvirt's virsh, for KVM hosts.
    #[arg(long, env = "SNAPTREE_VIRSH", default_value = "virsh")]
    virsh: PathBuf,
    /// The OpenSSH client, for Hyper-V hosts.
    #[arg(long, env = "SNAPTREE_SSH", default_value = "ssh")]
    ssh: PathBuf,
    /// Private key for SSH to hosts: Hyper-V, and KVM's qemu+ssh (ssh's own defaults
    /// when absent).
    #[arg(long, env = "SNAPTREE_SSH_IDENTITY")]
    ssh_identity: Option<PathBuf>,
    /// Scripts one Hyper-V PowerShell session runs before a new one replaces it.
    #[arg(long, env = "SNAPTREE_SCRIPTS_PER_SESSION", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    scripts_per_session: u32,
    /// The time the service goes by (`--clock-file`, hidden, for tests).
    #[command(flatten)]
    clock: ClockArgs,
    /// Most operations at once against one host (queries and the robot together).
    #[arg(long, env = "SNAPTREE_HOST_CALLS_PER_HOST", default_value_t = 4)]
    host_calls_per_host: usize,
}

/// What one request, connection and token may cost (see the README's "Limits").
#[derive(Args)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Highest computed cost of one operation (fields it may resolve).
    #[arg(long, env = "SNAPTREE_MAX_QUERY_COST", default_value_t = 50_000)]
    max_query_cost: u64,
    /// Most objects one operation may return.
    #[arg(long, env = "SNAPTREE_MAX_QUERY_NODES", default_value_t = 20_000)]
    max_query_nodes: u64,
    /// Deepest nesting of fields in one operation.
    #[arg(long, env = "SNAPTREE_MAX_QUERY_DEPTH", default_value_t = 100)]
    max_query_depth: usize,
    /// Longest operation text, in bytes.
    #[arg(long, env = "SNAPTREE_MAX_QUERY_BYTES", default_value_t = 32 * 1024)]
    max_query_bytes: usize,
    /// Most non-closed snapshots per VM, whatever its host allows.
    #[arg(long, env = "SNAPTREE_MAX_SNAPSHOTS_PER_VM", default_value_t = 100)]
    max_snapshots_per_vm: u32,
    /// Hours after which a snapshot is flagged stale (VMware's guidance: 72).
    #[arg(long, env = "SNAPTREE_STALE_AFTER_HOURS", default_value_t = 72.0)]
    stale_after_hours: f64,
    /// Seconds an operation may run before it is cancelled (TIMEOUT).
    #[arg(long, env = "SNAPTREE_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// Seconds a client may take to send a request's headers or body.
    #[arg(long, env = "SNAPTREE_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a connection may stay idle between requests (longer than clients keep
    /// pooled connections: reqwest and Go 90, Firefox 115).
    #[arg(long, env = "SNAPTREE_KEEP_ALIVE", default_value_t = 120)]
    keep_alive: u64,
    /// Most connections open at once, WebSockets included (503 past it).
    #[arg(long, env = "SNAPTREE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most connections open at once from one address (behind a reverse proxy, every
    /// client has the proxy's: raise it, and limit at the proxy).
    #[arg(long, env = "SNAPTREE_MAX_CONNECTIONS_PER_PEER", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_peer: u32,
    /// Failed authentications per second one address may make (bursts of three times
    /// that); past them it is refused before any token is looked up.
    #[arg(long, env = "SNAPTREE_FAILED_LOGINS_PER_PEER", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    failed_logins_per_peer: u32,
    /// Seconds a WebSocket may wait before its connection_init.
    #[arg(long, env = "SNAPTREE_WS_INIT_TIMEOUT", default_value_t = 10)]
    ws_init_timeout: u64,
    /// Seconds between WebSocket pings (a client silent for three is dropped).
    #[arg(long, env = "SNAPTREE_WS_KEEPALIVE", default_value_t = 30)]
    ws_keepalive: u64,
    /// Most operations running at once on one WebSocket.
    #[arg(long, env = "SNAPTREE_SUBSCRIPTIONS_PER_SOCKET", default_value_t = 100)]
    subscriptions_per_socket: usize,
    /// Most WebSockets one OPERATOR or VIEWER token may hold open.
    #[arg(long, env = "SNAPTREE_SOCKETS_PER_TOKEN", default_value_t = 20)]
    sockets_per_token: usize,
    /// Seconds createHost waits for a new host to answer.
    #[arg(long, env = "SNAPTREE_HOST_CHECK_TIMEOUT", default_value_t = 10)]
    host_check_timeout: u64,
    /// Days a new OPERATOR or VIEWER token is accepted when createToken names no end
    /// (expiresAt); 0: until revoked.
    #[arg(long, env = "SNAPTREE_TOKEN_LIFETIME_DAYS", default_value_t = 90)]
    token_lifetime_days: u32,
    /// A role's budget, ROLE=REQUESTS:COST per second, or ROLE=none; repeatable.
    /// Defaults: OPERATOR=20:25000, VIEWER=20:25000, ADMIN=none.
    #[arg(
        long = "rate-limit",
        env = "SNAPTREE_RATE_LIMITS",
        value_delimiter = ','
    )]
    rate_limits: Vec<String>,
}

impl LimitArgs {
    fn limits(&self, host_calls_per_host: usize) -> Result<Limits, String> {
        let mut rates = RateLimits::default();
        for spec in &self.rate_limits {
            rates.set(spec)?;
        }
        let secs = |s: u64| Duration::from_secs(s.max(1));
        let limits = Limits {
            max_query_bytes: self.max_query_bytes,
            max_depth: self.max_query_depth,
            max_cost: self.max_query_cost,
            max_nodes: self.max_query_nodes,
            snapshots_per_vm: self.max_snapshots_per_vm.max(1),
            stale_after: Duration::try_from_secs_f64(self.stale_after_hours * 3600.0)
                .map_err(|_| "--stale-after-hours must be 0 or more".to_owned())?,
            request_timeout: secs(self.request_timeout),
            header_timeout: secs(self.header_timeout),
            keep_alive: secs(self.keep_alive),
            max_connections: self.max_connections as usize,
            connections_per_peer: self.max_connections_per_peer as usize,
            failed_logins_per_peer: self.failed_logins_per_peer,
            ws_init_timeout: secs(self.ws_init_timeout),
            ws_keepalive: secs(self.ws_keepalive),
            subscriptions_per_socket: self.subscriptions_per_socket,
            sockets_per_token: self.sockets_per_token,
            host_calls_per_host,
            host_check_timeout: secs(self.host_check_timeout),
            rates,
            token_lifetime: (self.token_lifetime_days > 0)
                .then(|| Duration::from_secs(u64::from(self.token_lifetime_days) * 24 * 3600)),
        };
        for (role, rate) in [
            ("OPERATOR", limits.rates.operator),
            ("VIEWER", limits.rates.viewer),
            ("ADMIN", limits.rates.admin),
        ] {
            if let Some(rate) = rate
                && u64::from(rate.cost) * 4 < limits.max_cost
            {
                return Err(format!(
                    "{role}'s cost budget ({} a second, bursts of four times that) cannot pay for an operation of --max-query-cost {}",
                    rate.cost, limits.max_cost
                ));
            }
        }
        Ok(limits)
    }
}

impl HostAccess {
    /// The default limits, with this process's host concurrency (for the robot).
    fn limits(&self) -> Limits {
        Limits {
            host_calls_per_host: self.host_calls_per_host,
            ..Limits::default()
        }
    }

    fn config(&self) -> DriverConfig {
        DriverConfig {
            sim_dir: self.sim_dir.clone(),
            virsh: self.virsh.clone(),
            ssh: self.ssh.clone(),
            ssh_identity: self.ssh_identity.clone(),
            scripts_per_session: self.scripts_per_session,
        }
    }
}

impl RobotTuning {
    fn config(&self, hosts: Vec<String>) -> RobotConfig {
        RobotConfig {
            workers: self.workers,
            lease: Duration::from_secs(self.lease_seconds.max(1)),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            timeouts: Timeouts {
                build: Duration::from_secs(self.create_timeout_seconds.max(1)),
                update: Duration::from_secs(self.apply_timeout_seconds.max(1)),
                scrub: Duration::from_secs(self.delete_timeout_seconds.max(1)),
            },
            hosts,
            ..RobotConfig::default()
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SNAPTREE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The database to serve (`--database-url`).
    #[command(flatten)]
    database: DatabaseArgs,
    /// Seed a demo project, simulated host and VMs (once) and print a token for them.
    #[arg(long, env = "SNAPTREE_DEMO")]
    demo: bool,
    /// Run no robot here (separate `snaptree robot` processes run the tasks).
    #[arg(long, env = "SNAPTREE_NO_ROBOT")]
    no_robot: bool,
    /// Origins (https://host[:port], comma-separated) whose pages may call this server
    /// from a browser and open its WebSocket, besides its own; none by default.
    #[arg(long, env = "SNAPTREE_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// A token a Prometheus scraper sends for /metrics (ADMIN tokens work too). Set it in
    /// the environment: a command line is visible to every user of the machine.
    #[arg(
        long = "metrics-token",
        env = "SNAPTREE_METRICS_TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    /// Serve /metrics on this address instead of the API's (without a token unless
    /// --metrics-token is set too): an address only the monitoring network reaches.
    #[arg(long, env = "SNAPTREE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The robot's tuning (unused with `--no-robot`), and how hosts are reached.
    #[command(flatten)]
    tuning: RobotTuning,
    /// What one request, connection and token may cost.
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct RobotArgs {
    /// The database whose tasks it runs (`--database-url`).
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only run tasks of these hosts (names, comma-separated); all when absent.
    #[arg(long, env = "SNAPTREE_HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
    /// The robot's tuning, and how hosts are reached.
    #[command(flatten)]
    tuning: RobotTuning,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token (and its project, if new); prints only the token.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The token's name, recorded as the actor of what it does.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
enum RoleArg {
    Admin,
    Operator,
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

fn main() -> ExitCode {
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
        Command::Robot(args) => robot(args).await,
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
        Command::Snapshot(_) => unreachable!("run by main"),
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
    let server = Server::start(ServeOptions {
        listen: args.listen,
        database: args.database.database_url.clone(),
        robot,
        drivers: args.tuning.hosts.config(),
        limits,
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
    let service = server::service(
        db.clone(),
        hosts.config(),
        hosts.limits(),
        hosts.clock.clock(),
    );
    let workers = server::Workers::start(&service, db, Some(args.tuning.config(args.hosts)));
    shutdown_signal().await;
    workers.stop().await;
    Ok(())
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
