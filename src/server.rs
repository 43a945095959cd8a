//! `snaptree serve`: the database, the service, the robot and the HTTP server, started
//! together and stopped together through one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{DatabaseUrl, DriverConfig, Limits, Retention, RobotConfig};
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::hypervisor::Drivers;
use crate::robot::Robot;
use crate::service::Service;

/// Stack of each runtime thread. Resolving a query nested as deep as the limits allow
/// recurses through every level; the default 2 MiB is too little for that (in debug
/// builds even at 50 levels), and running out would abort the whole process. Only the
/// pages a thread touches cost memory.
const THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;

/// The runtime snaptree runs on (multi-threaded: the migration harness blocks).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
}

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address the HTTP server binds (port 0: any free port, reported in `Server::addr`).
    pub listen: SocketAddr,
    /// The database to migrate and open.
    pub database: DatabaseUrl,
    /// Run a robot in this process (`None`: another process runs tasks).
    pub robot: Option<RobotConfig>,
    /// How hosts are reached.
    pub drivers: DriverConfig,
    /// What requests, connections and tokens may cost.
    pub limits: Limits,
    /// How long finished work is kept.
    pub retention: Retention,
    /// Origins besides the server's own whose pages may use it.
    pub origins: crate::http::Origins,
    /// Who may read `/metrics`, and where.
    pub metrics: crate::http::MetricsAccess,
    /// The time that ages snapshots and makes policies due.
    pub clock: Clock,
}

/// A started server.
pub struct Server {
    /// Where it listens (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Where `/metrics` is served on an address of its own, if it is.
    pub metrics_addr: Option<SocketAddr>,
    /// The service its requests and its robot go through.
    pub service: Service,
    /// Serves HTTP; stopped first, so that no request starts while the rest stops.
    http: JoinHandle<()>,
    /// The `/metrics` listener of its own.
    metrics_http: Option<JoinHandle<()>>,
    /// Everything else the process runs, and the signal that stops it all.
    workers: Workers,
}

/// Builds the service on an opened database.
pub fn service(db: Db, drivers: DriverConfig, limits: Limits, clock: Clock) -> Service {
    let limits = Arc::new(limits);
    let drivers = Arc::new(Drivers::new(drivers, &limits));
    Service::new(db, EventBus::default(), drivers, limits, clock)
}

/// The parts a process runs in the background, started on one service and stopped by
/// one signal: the event pump in every process, a robot and the policy runner where
/// tasks run (`serve` without `--no-robot`, and `snaptree robot`), and what serves
/// clients where HTTP does. `serve` and `robot` both start theirs here.
pub struct Workers {
    /// Sent `true` to stop every part (and the HTTP server that listens to it).
    shutdown: watch::Sender<bool>,
    /// The parts, in the order they are waited for when stopping: the robot first (it
    /// finishes its step), the pump, which publishes what the others stored, last.
    parts: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts the event pump, retention and, with `robot`, a robot and the policy
    /// runner: policies run where a robot does, and a server with no robot leaves them to
    /// those. Every process retires (`service::retention` keeps them from doubling work).
    pub fn start(
        service: &Service,
        db: Db,
        robot: Option<RobotConfig>,
        retention: Retention,
    ) -> Self {
        let (shutdown, stop) = watch::channel(false);
        let mut parts = vec![crate::service::retention::spawn(
            service.clone(),
            retention,
            stop.clone(),
        )];
        if let Some(config) = robot {
            let policies = crate::service::policies::spawn_runner(
                service.clone(),
                config.policy_tick,
                stop.clone(),
            );
            parts.push(Robot::new(service.ledger().clone(), config).spawn(stop.clone()));
            parts.push(policies);
            parts.push(crate::service::expiry::spawn(service.clone(), stop.clone()));
        }
        // The pump's listener also hears of tasks other processes queue.
        let pump =
            crate::events::spawn_pump(service.bus().clone(), db, service.metrics().clone(), stop);
        parts.push(pump);
        Self { shutdown, parts }
    }

    /// Adds what a process that serves clients runs: the watch that closes the
    /// WebSockets of tokens other processes revoke, and the housekeeping.
    fn serving_clients(mut self, service: &Service) -> Self {
        let stop = self.stopping();
        self.parts.push(crate::service::sessions::watch_revocations(
            service.clone(),
            stop.clone(),
        ));
        self.parts.push(spawn_housekeeping(service.clone(), stop));
        self
    }

    /// The signal the parts stop on, for others that stop with them.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every part to stop, and waits until each has.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for part in self.parts {
            let _ = part.await;
        }
    }
}

impl Server {
    /// Migrates the database, binds, and starts serving (and the robot).
    pub async fn start(options: ServeOptions) -> AppResult<Self> {
        let db = Db::connect(&options.database).await?;
        let deadlines = crate::http::listener::Deadlines::of(&options.limits);
        let service = service(db.clone(), options.drivers, options.limits, options.clock);
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| AppError::internal(format!("cannot listen on {}: {e}", options.listen)))?;
        let addr = listener.local_addr().map_err(AppError::internal)?;
        let metrics_listener = match options.metrics.listen {
            Some(at) => Some(TcpListener::bind(at).await.map_err(|e| {
                AppError::internal(format!("cannot listen on {at} for /metrics: {e}"))
            })?),
            None => None,
        };
        let workers = Workers::start(&service, db, options.robot, options.retention)
            .serving_clients(&service);
        let stop = workers.stopping();
        let metrics = match metrics_listener {
            Some(listener) => {
                let metrics_addr = listener.local_addr().map_err(AppError::internal)?;
                let app = crate::http::metrics::routes(service.clone(), &options.metrics, true);
                let serving = crate::http::listener::serve(listener, app, deadlines, stop.clone());
                Some((metrics_addr, tokio::spawn(serving)))
            }
            None => None,
        };
        let app = crate::http::router(
            service.clone(),
            stop.clone(),
            options.origins,
            &options.metrics,
        );
        let http = tokio::spawn(crate::http::listener::serve(listener, app, deadlines, stop));
        let (metrics_addr, metrics_http) = metrics.unzip();
        Ok(Self {
            addr,
            metrics_addr,
            metrics_http,
            service,
            http,
            workers,
        })
    }

    /// Stops accepting requests, lets the robot reach a safe point, and waits for all.
    pub async fn stop(self) {
        let _ = self.workers.shutdown.send(true);
        let _ = self.http.await;
        if let Some(metrics) = self.metrics_http {
            let _ = metrics.await;
        }
        self.workers.stop().await;
    }
}

/// How often the housekeeping runs.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Every few seconds: forgets the budgets of tokens quiet long enough to have a full one
/// again, and hands memory freed since the last time back to the system. glibc keeps
/// what a burst of connections freed in its arenas, so without the trim a server stays
/// at its peak for good after an attack it refused; a trim takes well under a
/// millisecond at snaptree's size.
fn spawn_housekeeping(service: Service, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    service.throttle().forget_idle();
                    trim();
                }
                _ = stop.changed() => return,
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
