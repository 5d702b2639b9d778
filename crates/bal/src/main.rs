//! `bal`: the Platone Blockchain Access Layer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bal::app::{Application, shutdown_signal};
use bal::settings::{BrokerKind, DEFAULT_TOML, LogFormat, Overrides, Settings};
use bal_api::accounts::FirstAdmin;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: ingest allocates and frees per reading (packets,
/// payloads, batches), and glibc's allocator took ~18 000 of ~141 000 instructions per reading
/// (callgrind, `scripts/profile-ingest`; README, "Benchmark").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "bal", version, about = "The Platone Blockchain Access Layer")]
struct Cli {
    /// Settings file (default: ./bal.toml when it exists).
    #[arg(short, long, global = true, env = "BAL_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides data_dir.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the BAL: the HTTPS API.
    Serve {
        /// Overrides http.listen.
        #[arg(long)]
        http_listen: Option<SocketAddr>,
    },
    /// Runs the BAL with demo users, grants and simulated devices publishing.
    Demo,
    /// Measures MQTT ingest (QoS 1 and 0) against a raw pass-through broker, in one run.
    Bench(bal::bench::BenchArgs),
    /// The benchmarks' load generator (simulated devices in a process of their own); `bal
    /// bench` runs it.
    #[command(hide = true)]
    BenchLoad(bal::load::LoadArgs),
    /// Measures certification: end-to-end rate and latency, transactions and gas against one
    /// transaction per measurement, proofs verified per second.
    BenchCertify(bal::bench_certify::CertifyBenchArgs),
    /// Measures set points end to end: issue to applied over the API, the embedded broker and
    /// simulated devices, and applied to certified.
    BenchSetpoints(bal::bench_setpoints::SetpointBenchArgs),
    /// Verifies a proof bundle offline, and its anchor with --rpc. Exit 0 valid, 1 invalid,
    /// 2 usage or I/O error.
    Verify(bal::verify::VerifyArgs),
    /// Settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Users, on the same database `bal serve` uses.
    #[command(subcommand)]
    User(UserCommand),
    /// The database: schema migrations and moving to PostgreSQL.
    #[command(subcommand)]
    Db(DbCommand),
    /// Several replicas on one database: who is live, who anchors, retiring one for good.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Asks this machine's `bal serve` (at http.listen) whether it is ready: exit 0 when
    /// /readyz answers 200, 1 otherwise. For a container's HEALTHCHECK.
    Health,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Lists the live replicas and the holder of the certification lease.
    Status,
    /// Retires a replica stopped for good: removes it from the registry and, with Mosquitto,
    /// ends its persistent ingest session (which would keep taking a share of the readings).
    Leave {
        /// The replica's cluster.replica_id.
        id: String,
        /// Its ingest session's client id, when broker.ingest_client_id was set (default:
        /// bal-ingest-<ID>).
        #[arg(long)]
        ingest_client_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Brings the schema of database.url up to date, alone (a Kubernetes pre-upgrade job).
    Migrate,
    /// Prints the schema version of database.url and whether this binary may use it.
    Status,
    /// Copies a SQLite installation into an empty PostgreSQL database, in one transaction.
    Copy {
        /// The SQLite database, e.g. sqlite://bal-data/bal.db.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database; better from BAL_DB_COPY_TO, so that no password shows in
        /// the process list.
        #[arg(long, env = "BAL_DB_COPY_TO", hide_env_values = true)]
        to: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Prints the default bal.toml, every setting with its environment variable.
    Default,
    /// Prints the OpenAPI document of the REST API.
    Openapi,
    /// Checks the settings (file, environment, flags) as `bal serve` would read them, without
    /// starting anything or printing a secret: exit 0 when valid.
    Check,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates a user; prints a generated password unless --password-stdin.
    Add {
        username: String,
        /// admin, producer or consumer.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists active users.
    List,
    /// Sets a user's password; prints a generated one unless --password-stdin.
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints a line of the start-up banner; a closed standard output must not stop the server
/// (`println!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mosquitto =
        (settings.broker.kind == BrokerKind::Mosquitto).then(|| settings.broker.url.clone());
    let app = Application::build(settings).await?;
    match app.first_admin() {
        FirstAdmin::Generated(password) => {
            // Printed, not logged: it must not end up in a log store.
            say!("first start: created user 'admin' with password {password}");
            say!("  (shown once; change it with PUT /api/users/admin/password)");
        }
        FirstAdmin::Created => say!("first start: created user 'admin' (BAL_ADMIN_PASSWORD)"),
        FirstAdmin::Exists => {}
    }
    say!("Dashboard:    {}/", app.base_url());
    say!("BAL API:      {}/api", app.base_url());
    say!("API docs:     {}/api/docs", app.base_url());
    if let Some(a) = app.mqtt_addr() {
        say!("MQTT:         mqtt://{a}");
    }
    if let Some(a) = app.mqtts_addr() {
        say!("MQTT (TLS):   mqtts://{a}");
    }
    if let Some(url) = mosquitto {
        say!("MQTT:         Mosquitto at {url}, kept in line with the SCD");
    }
    if let Some(ca) = app.ca_path() {
        say!("CA to trust:  {}", ca.display());
    }
    say!("Chain:        {}", app.chain_summary());
    tracing::info!(address = %app.local_addr(), "listening");
    app.run_until(shutdown_signal()).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        http_listen: match &cli.command {
            Command::Serve { http_listen } => *http_listen,
            _ => None,
        },
    };
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Bench(args) => {
            init_logging(LogFormat::Text);
            bal::bench::run(args).await
        }
        Command::BenchLoad(args) => {
            init_logging(LogFormat::Text);
            bal::load::run(args).await
        }
        Command::BenchCertify(args) => {
            init_logging(LogFormat::Text);
            bal::bench_certify::run(args).await
        }
        Command::BenchSetpoints(args) => {
            init_logging(LogFormat::Text);
            bal::bench_setpoints::run(args).await
        }
        Command::Config(ConfigCommand::Openapi) => {
            println!("{}", bal_api::openapi().to_pretty_json()?);
            Ok(())
        }
        command => {
            let settings = Settings::load(cli.config.as_deref(), &overrides)?;
            init_logging(settings.log.format);
            match command {
                Command::Serve { .. } => serve(settings).await,
                Command::Config(ConfigCommand::Check) => bal::check::run(&settings),
                Command::Demo => bal::demo::run(settings).await,
                Command::User(UserCommand::Add {
                    username,
                    role,
                    password_stdin,
                }) => bal::cli::add(&settings, &username, &role, password_stdin).await,
                Command::User(UserCommand::List) => bal::cli::list(&settings).await,
                Command::Db(DbCommand::Migrate) => bal::db::migrate(&settings).await,
                Command::Db(DbCommand::Status) => bal::db::status(&settings).await,
                Command::Cluster(ClusterCommand::Status) => bal::cluster::status(&settings).await,
                Command::Cluster(ClusterCommand::Leave {
                    id,
                    ingest_client_id,
                }) => bal::cluster::leave(&settings, &id, ingest_client_id.as_deref()).await,
                Command::Db(DbCommand::Copy { from, to }) => {
                    bal::db::copy(&settings, &from, &to).await
                }
                Command::User(UserCommand::Passwd {
                    username,
                    password_stdin,
                }) => bal::cli::passwd(&settings, &username, password_stdin).await,
                Command::Config(_)
                | Command::Health
                | Command::Bench(_)
                | Command::BenchLoad(_)
                | Command::BenchCertify(_)
                | Command::BenchSetpoints(_)
                | Command::Verify(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 2, as `bal verify` documents; help and version exit 0.
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Command::Verify(args) = cli.command {
        return bal::verify::run(args).await;
    }
    if let Command::Health = cli.command {
        let overrides = Overrides {
            data_dir: cli.data_dir.clone(),
            http_listen: None,
        };
        return match Settings::load(cli.config.as_deref(), &overrides) {
            Ok(settings) => bal::health::run(&settings).await,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
