//! The command line's definition: every subcommand and flag, each with the environment
//! variable that can set it, and the values they make.

use super::*;

/// Snapshot trees of virtual machines: a GraphQL API, a robot that carries the actions
/// out on the hypervisors, and a dashboard.
#[derive(Parser)]
#[command(name = "snaptree", version, about)]
pub(crate) struct Cli {
    /// Log lines as text, or as one JSON object per line (for a log collector).
    #[arg(
        long,
        global = true,
        env = "SNAPTREE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,
    /// A TOML file of settings, each a flag's long name (`listen = "0.0.0.0:8080"`);
    /// the environment and flags override it. Default: /etc/snaptree/snaptree.toml,
    /// when it exists.
    #[arg(long, global = true, env = "SNAPTREE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve the API and the dashboard, with a robot in the same process.
    Serve(Box<ServeArgs>),
    /// Run only a robot, next to other servers sharing the database.
    Robot(Box<RobotArgs>),
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
    /// Print the shell's completions for snaptree (for bash: `snaptree completions bash >
    /// /etc/bash_completion.d/snaptree`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff: `snaptree man > snaptree.1; man ./snaptree.1`), or a
    /// command's (`snaptree man serve`: snaptree-serve(1), with all its options).
    Man {
        /// The command whose page to print; none: snaptree(1).
        command: Option<String>,
    },
    /// Print what to load into monitoring: Prometheus alerting rules, their promtool
    /// tests, or a Grafana dashboard.
    Monitoring {
        #[arg(value_enum)]
        file: MonitoringFile,
    },
    /// Snapshots through a server's API, for scripts: create, apply, revert, delete,
    /// tree, list. The token comes from SNAPTREE_TOKEN. Exit codes: 0 done, 1 the task
    /// failed (--wait), 2 bad usage, 3 refused (the code is printed), 4 unreachable.
    Snapshot(snaptree::cli::SnapshotArgs),
}

/// A file of [`snaptree::monitoring`].
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum MonitoringFile {
    /// Prometheus alerting rules (rules.yml).
    Rules,
    /// Their unit tests, for `promtool test rules` (next to rules.yml).
    RulesTests,
    /// A Grafana dashboard (JSON, to import).
    Dashboard,
}

#[derive(Args)]
pub(crate) struct DatabaseArgs {
    /// sqlite://FILE (the embedded default) or postgres://USER@HOST/DB.
    // The URL may hold a password: --help must not show the variable's value.
    #[arg(
        long,
        env = "SNAPTREE_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://snaptree.db"
    )]
    pub(crate) database_url: DatabaseUrl,
}

/// The time the service goes by.
#[derive(Args)]
pub(crate) struct ClockArgs {
    /// For tests: read the time from this file (RFC 3339) instead of the system's clock,
    /// so that schedules and ages can be moved without waiting.
    #[arg(long, env = "SNAPTREE_CLOCK_FILE", hide = true)]
    pub(crate) clock_file: Option<PathBuf>,
}

impl ClockArgs {
    pub(crate) fn clock(&self) -> Clock {
        self.clock_file.clone().map_or(Clock::System, Clock::file)
    }
}

#[derive(Args)]
pub(crate) struct RobotTuning {
    /// Tasks run at once, over all hosts (each host's own limit still holds).
    #[arg(long, env = "SNAPTREE_WORKERS", default_value_t = 64)]
    pub(crate) workers: usize,
    /// Seconds a claim holds without a heartbeat; a dead robot's tasks are taken up
    /// again after this.
    #[arg(long, env = "SNAPTREE_LEASE_SECONDS", default_value_t = 10)]
    pub(crate) lease_seconds: u64,
    /// Seconds running tasks may take to finish when stopping (SIGTERM); the rest go back
    /// to the queue at once for other robots.
    #[arg(long, env = "SNAPTREE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub(crate) shutdown_grace_seconds: u64,
    /// Seconds one host call of a create may take before it is cut off (and retried).
    #[arg(long, env = "SNAPTREE_CREATE_TIMEOUT_SECONDS", default_value_t = 300)]
    pub(crate) create_timeout_seconds: u64,
    /// Seconds one host call of an apply or revert may take (the VM restarts: the slowest).
    #[arg(long, env = "SNAPTREE_APPLY_TIMEOUT_SECONDS", default_value_t = 600)]
    pub(crate) apply_timeout_seconds: u64,
    /// Seconds one host call of a delete may take.
    #[arg(long, env = "SNAPTREE_DELETE_TIMEOUT_SECONDS", default_value_t = 300)]
    pub(crate) delete_timeout_seconds: u64,
    /// How hosts are reached, and the clock.
    #[command(flatten)]
    pub(crate) hosts: HostAccess,
}

/// How hosts are reached.
#[derive(Args)]
pub(crate) struct HostAccess {
    /// Where simulated (sim://) hosts keep their state (a file `host-<id>/DOWN` in it
    /// plays that host's outage).
    #[arg(long, env = "SNAPTREE_SIM_DIR", default_value = "snaptree-sim")]
    pub(crate) sim_dir: PathBuf,
    /// libvirt's virsh, for KVM hosts.
    #[arg(long, env = "SNAPTREE_VIRSH", default_value = "virsh")]
    pub(crate) virsh: PathBuf,
    /// The OpenSSH client, for Hyper-V hosts.
    #[arg(long, env = "SNAPTREE_SSH", default_value = "ssh")]
    pub(crate) ssh: PathBuf,
    /// Private key for SSH to hosts: Hyper-V, and KVM's qemu+ssh (ssh's own defaults
    /// when absent).
    #[arg(long, env = "SNAPTREE_SSH_IDENTITY")]
    pub(crate) ssh_identity: Option<PathBuf>,
    /// Scripts one Hyper-V PowerShell session runs before a new one replaces it.
    #[arg(long, env = "SNAPTREE_SCRIPTS_PER_SESSION", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) scripts_per_session: u32,
    /// The time the service goes by (`--clock-file`, hidden, for tests).
    #[command(flatten)]
    pub(crate) clock: ClockArgs,
    /// Most operations at once against one host (queries and the robot together).
    #[arg(long, env = "SNAPTREE_HOST_CALLS_PER_HOST", default_value_t = 4)]
    pub(crate) host_calls_per_host: usize,
}

/// What one request, connection and token may cost (see the README's "Limits").
#[derive(Args)]
#[command(next_help_heading = "Limits")]
pub(crate) struct LimitArgs {
    /// Highest computed cost of one operation (fields it may resolve).
    #[arg(long, env = "SNAPTREE_MAX_QUERY_COST", default_value_t = 50_000)]
    pub(crate) max_query_cost: u64,
    /// Most objects one operation may return.
    #[arg(long, env = "SNAPTREE_MAX_QUERY_NODES", default_value_t = 20_000)]
    pub(crate) max_query_nodes: u64,
    /// Deepest nesting of fields in one operation.
    #[arg(long, env = "SNAPTREE_MAX_QUERY_DEPTH", default_value_t = 100)]
    pub(crate) max_query_depth: usize,
    /// Longest operation text, in bytes.
    #[arg(long, env = "SNAPTREE_MAX_QUERY_BYTES", default_value_t = 32 * 1024)]
    pub(crate) max_query_bytes: usize,
    /// Most non-closed snapshots per VM, whatever its host allows.
    #[arg(long, env = "SNAPTREE_MAX_SNAPSHOTS_PER_VM", default_value_t = 100)]
    pub(crate) max_snapshots_per_vm: u32,
    /// Hours after which a snapshot is flagged stale (VMware's guidance: 72).
    #[arg(long, env = "SNAPTREE_STALE_AFTER_HOURS", default_value_t = 72.0)]
    pub(crate) stale_after_hours: f64,
    /// Seconds an operation may run before it is cancelled (TIMEOUT).
    #[arg(long, env = "SNAPTREE_REQUEST_TIMEOUT", default_value_t = 30)]
    pub(crate) request_timeout: u64,
    /// Seconds a client may take to send a request's headers or body.
    #[arg(long, env = "SNAPTREE_HEADER_TIMEOUT", default_value_t = 10)]
    pub(crate) header_timeout: u64,
    /// Seconds a connection may stay idle between requests (longer than clients keep
    /// pooled connections: reqwest and Go 90, Firefox 115).
    #[arg(long, env = "SNAPTREE_KEEP_ALIVE", default_value_t = 120)]
    pub(crate) keep_alive: u64,
    /// Most connections open at once, WebSockets included (503 past it).
    #[arg(long, env = "SNAPTREE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// Most connections open at once from one address (behind a reverse proxy, every
    /// client has the proxy's: raise it, and limit at the proxy).
    #[arg(long, env = "SNAPTREE_MAX_CONNECTIONS_PER_PEER", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections_per_peer: u32,
    /// Failed authentications per second one address may make (bursts of three times
    /// that); past them it is refused for three seconds before any token is looked up.
    #[arg(long, env = "SNAPTREE_FAILED_LOGINS_PER_PEER", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) failed_logins_per_peer: u32,
    /// Operations refused as too complex per second one token may send (bursts of three
    /// times that); past them it is refused for three seconds before its documents are
    /// parsed, whatever its role.
    #[arg(long, env = "SNAPTREE_REFUSED_PER_TOKEN", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) refused_per_token: u32,
    /// Run only the operations of this Apollo persisted query manifest (JSON: {"format":
    /// "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "body"}]});
    /// every other document is refused.
    #[arg(long, env = "SNAPTREE_TRUSTED_DOCUMENTS")]
    pub(crate) trusted_documents: Option<PathBuf>,
    /// Seconds a WebSocket may wait before its connection_init.
    #[arg(long, env = "SNAPTREE_WS_INIT_TIMEOUT", default_value_t = 10)]
    pub(crate) ws_init_timeout: u64,
    /// Seconds between WebSocket pings (a client silent for three is dropped).
    #[arg(long, env = "SNAPTREE_WS_KEEPALIVE", default_value_t = 30)]
    pub(crate) ws_keepalive: u64,
    /// Most operations running at once on one WebSocket.
    #[arg(long, env = "SNAPTREE_SUBSCRIPTIONS_PER_SOCKET", default_value_t = 100)]
    pub(crate) subscriptions_per_socket: usize,
    /// Most WebSockets one OPERATOR or VIEWER token may hold open.
    #[arg(long, env = "SNAPTREE_SOCKETS_PER_TOKEN", default_value_t = 20)]
    pub(crate) sockets_per_token: usize,
    /// Seconds createHost waits for a new host to answer.
    #[arg(long, env = "SNAPTREE_HOST_CHECK_TIMEOUT", default_value_t = 10)]
    pub(crate) host_check_timeout: u64,
    /// Days a new OPERATOR or VIEWER token is accepted when createToken names no end
    /// (expiresAt); 0: until revoked.
    #[arg(long, env = "SNAPTREE_TOKEN_LIFETIME_DAYS", default_value_t = 90)]
    pub(crate) token_lifetime_days: u32,
    /// A role's budget, ROLE=REQUESTS:COST per second, or ROLE=none; repeatable.
    /// Defaults: OPERATOR=20:25000, VIEWER=20:25000, ADMIN=none.
    #[arg(
        long = "rate-limit",
        env = "SNAPTREE_RATE_LIMITS",
        value_delimiter = ','
    )]
    pub(crate) rate_limits: Vec<String>,
}

impl LimitArgs {
    pub(crate) fn limits(&self, host_calls_per_host: usize) -> Result<Limits, String> {
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
            refused_per_token: self.refused_per_token,
            ws_init_timeout: secs(self.ws_init_timeout),
            ws_keepalive: secs(self.ws_keepalive),
            subscriptions_per_socket: self.subscriptions_per_socket,
            sockets_per_token: self.sockets_per_token,
            host_calls_per_host,
            host_check_timeout: secs(self.host_check_timeout),
            rates,
            token_lifetime: (self.token_lifetime_days > 0)
                .then(|| Duration::from_secs(u64::from(self.token_lifetime_days) * 24 * 3600)),
            trusted_documents: match &self.trusted_documents {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let documents = snaptree::config::trusted_documents(&text)
                        .map_err(|e| format!("--trusted-documents {}: {e}", path.display()))?;
                    Some(std::sync::Arc::new(documents))
                }
            },
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
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            host_calls_per_host: self.host_calls_per_host,
            ..Limits::default()
        }
    }

    pub(crate) fn config(&self) -> DriverConfig {
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
    pub(crate) fn config(&self, hosts: Vec<String>) -> RobotConfig {
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
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SNAPTREE_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// The database to serve (`--database-url`).
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    /// Seed a demo project, simulated host and VMs (once) and print a token for them.
    #[arg(long, env = "SNAPTREE_DEMO")]
    pub(crate) demo: bool,
    /// Run no robot here (separate `snaptree robot` processes run the tasks).
    #[arg(long, env = "SNAPTREE_NO_ROBOT")]
    pub(crate) no_robot: bool,
    /// Origins (https://host[:port], comma-separated) whose pages may call this server
    /// from a browser and open its WebSocket, besides its own; none by default.
    #[arg(long, env = "SNAPTREE_CORS_ORIGINS", value_delimiter = ',')]
    pub(crate) cors_origins: Vec<String>,
    /// A token a Prometheus scraper sends for /metrics (ADMIN tokens work too). Set it in
    /// the environment: a command line is visible to every user of the machine.
    #[arg(
        long = "metrics-token",
        env = "SNAPTREE_METRICS_TOKEN",
        hide_env_values = true
    )]
    pub(crate) metrics_token: Option<String>,
    /// Serve /metrics on this address instead of the API's (without a token unless
    /// --metrics-token is set too): an address only the monitoring network reaches.
    #[arg(long, env = "SNAPTREE_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The robot's tuning (unused with `--no-robot`), and how hosts are reached.
    #[command(flatten)]
    pub(crate) tuning: RobotTuning,
    /// What one request, connection and token may cost.
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
    /// How long finished work is kept.
    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
}

#[derive(Args)]
pub(crate) struct RobotArgs {
    /// The database whose tasks it runs (`--database-url`).
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    /// Only run tasks of these hosts (names, comma-separated); all when absent.
    #[arg(long, env = "SNAPTREE_HOSTS", value_delimiter = ',')]
    pub(crate) hosts: Vec<String>,
    /// Most non-closed snapshots per VM, whatever its host allows: the policies this
    /// robot runs create within it (give the servers' value).
    #[arg(long, env = "SNAPTREE_MAX_SNAPSHOTS_PER_VM", default_value_t = 100)]
    pub(crate) max_snapshots_per_vm: u32,
    /// The robot's tuning, and how hosts are reached.
    #[command(flatten)]
    pub(crate) tuning: RobotTuning,
    /// How long finished work is kept (give the servers' values).
    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
}

/// How long finished work is kept before it is retired, as durations (`12h`, `30d`,
/// `1y`); `0` keeps it for ever. Every process sharing the database retires.
#[derive(Args)]
pub(crate) struct RetentionArgs {
    /// Ended tasks, with what is left of their events and their policy runs, counted
    /// from their end.
    #[arg(long, env = "SNAPTREE_KEEP_TASKS", default_value = "90d")]
    pub(crate) keep_tasks: Age,
    /// Events of ended tasks (their progress steps), counted from the event.
    #[arg(long, env = "SNAPTREE_KEEP_EVENTS", default_value = "14d")]
    pub(crate) keep_events: Age,
    /// Closed snapshots and their history (who did what, when), counted from the close;
    /// at least --keep-tasks.
    #[arg(long, env = "SNAPTREE_KEEP_HISTORY", default_value = "400d")]
    pub(crate) keep_history: Age,
    /// Write retired rows here first, as gzipped JSON lines, one file per kind, day and
    /// process (`events-2026-12-07-4242.jsonl.gz`); without it they are dropped.
    #[arg(long, env = "SNAPTREE_ARCHIVE_DIR")]
    pub(crate) archive_dir: Option<PathBuf>,
    /// For tests: milliseconds between passes that find nothing more to retire.
    #[arg(
        long,
        env = "SNAPTREE_RETENTION_EVERY_MS",
        default_value_t = 10_000,
        hide = true
    )]
    pub(crate) retention_every_ms: u64,
    /// For tests: rows per statement.
    #[arg(long, env = "SNAPTREE_RETENTION_BATCH", default_value_t = 500, hide = true,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) retention_batch: i64,
}

impl RetentionArgs {
    pub(crate) fn retention(&self) -> Result<Retention, String> {
        let retention = Retention {
            tasks: self.keep_tasks.0,
            events: self.keep_events.0,
            history: self.keep_history.0,
            archive: self.archive_dir.clone(),
            every: Duration::from_millis(self.retention_every_ms.max(1)),
            batch: self.retention_batch,
        };
        snaptree::service::retention::check(&retention)?;
        Ok(retention)
    }
}

/// A keep age: a duration, or none for `0` (for ever).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Age(Option<Duration>);

impl FromStr for Age {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let age = humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration such as 12h or 30d ({e})"))?;
        Ok(Self((!age.is_zero()).then_some(age)))
    }
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
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
pub(crate) enum RoleArg {
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
