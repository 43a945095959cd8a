//! The `snaptree` command line: serve, robot, token, migrate, schema.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use snaptree::config::{DatabaseUrl, DriverConfig, RobotConfig};
use snaptree::db::Db;
use snaptree::domain::Role;
use snaptree::robot::Robot;
use snaptree::server::{self, ServeOptions, Server};
use snaptree::{AppError, AppResult, demo, graphql};

/// Snapshot trees of virtual machines: a GraphQL API, a robot that carries the actions
/// out on the hypervisors, and a dashboard.
#[derive(Parser)]
#[command(name = "snaptree", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the dashboard, with a robot in the same process.
    Serve(ServeArgs),
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

#[derive(Args)]
struct RobotTuning {
    /// Tasks run at once.
    #[arg(long, env = "SNAPTREE_WORKERS", default_value_t = 8)]
    workers: usize,
    /// Seconds a claim holds without a heartbeat; a dead robot's tasks are taken up
    /// again after this.
    #[arg(long, env = "SNAPTREE_LEASE_SECONDS", default_value_t = 10)]
    lease_seconds: u64,
    #[command(flatten)]
    hosts: HostAccess,
}

/// How hosts are reached.
#[derive(Args)]
struct HostAccess {
    /// Where simulated (sim://) hosts keep their state.
    #[arg(long, env = "SNAPTREE_SIM_DIR", default_value = "snaptree-sim")]
    sim_dir: PathBuf,
    /// libvirt's virsh, for KVM hosts.
    #[arg(long, env = "SNAPTREE_VIRSH", default_value = "virsh")]
    virsh: PathBuf,
    /// The OpenSSH client, for Hyper-V hosts.
    #[arg(long, env = "SNAPTREE_SSH", default_value = "ssh")]
    ssh: PathBuf,
    /// Private key for Hyper-V hosts (ssh's own defaults when absent).
    #[arg(long, env = "SNAPTREE_SSH_IDENTITY")]
    ssh_identity: Option<PathBuf>,
}

impl HostAccess {
    fn config(&self) -> DriverConfig {
        DriverConfig {
            sim_dir: self.sim_dir.clone(),
            virsh: self.virsh.clone(),
            ssh: self.ssh.clone(),
            ssh_identity: self.ssh_identity.clone(),
        }
    }
}

impl RobotTuning {
    fn config(&self, hosts: Vec<String>) -> RobotConfig {
        RobotConfig {
            workers: self.workers,
            lease: Duration::from_secs(self.lease_seconds.max(1)),
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
    #[command(flatten)]
    database: DatabaseArgs,
    /// Seed a demo project, simulated host and VMs (once) and print a token for them.
    #[arg(long, env = "SNAPTREE_DEMO")]
    demo: bool,
    /// Run no robot here (separate `snaptree robot` processes run the tasks).
    #[arg(long, env = "SNAPTREE_NO_ROBOT")]
    no_robot: bool,
    #[command(flatten)]
    tuning: RobotTuning,
}

#[derive(Args)]
struct RobotArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only run tasks of these hosts (names, comma-separated); all when absent.
    #[arg(long, env = "SNAPTREE_HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SNAPTREE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = server::runtime().expect("a tokio runtime starts");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("snaptree: {}", describe(&err));
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
        Command::Serve(args) => serve(args).await,
        Command::Robot(args) => robot(args).await,
        Command::Token(TokenCommand::Create {
            project,
            role,
            name,
            database,
        }) => {
            let db = Db::connect(&database.database_url).await?;
            let service = server::service(db, DriverConfig::new("snaptree-sim".into()));
            let token = service
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
    }
}

async fn serve(args: ServeArgs) -> AppResult<()> {
    let robot = (!args.no_robot).then(|| args.tuning.config(Vec::new()));
    let server = Server::start(ServeOptions {
        listen: args.listen,
        database: args.database.database_url.clone(),
        robot,
        drivers: args.tuning.hosts.config(),
    })
    .await?;
    let url = format!("http://{}/", server.addr);
    println!(
        "snaptree is serving on {url} ({})",
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
    eprintln!("snaptree: stopping");
    server.stop().await;
    Ok(())
}

async fn robot(args: RobotArgs) -> AppResult<()> {
    let db = Db::connect(&args.database.database_url).await?;
    let service = server::service(db.clone(), args.tuning.hosts.config());
    let (stop, stopped) = watch::channel(false);
    // The pump's listener hears of tasks other processes queue.
    let pump = snaptree::events::spawn_pump(service.bus().clone(), db, stopped.clone());
    let robot = Robot::new(service, args.tuning.config(args.hosts)).spawn(stopped);
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = robot.await;
    let _ = pump.await;
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
