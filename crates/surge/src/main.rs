//! `surge`: one binary, every role. `surge up` runs them all in one process on an
//! embedded store; `surge serve --roles …` runs a subset against shared servers.

mod checkout;
mod config;
mod seed;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use toml::Value;

use config::Overrides;

#[derive(Parser)]
#[command(
    name = "surge",
    version,
    about = "A commerce backend built for the worst day of the year"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process (embedded SQLite by default).
    Up(ServeArgs),
    /// Run some roles (scale-out).
    Serve {
        /// Comma-separated roles: edge (the public door), catalog (read + command API), projector, checkout (orders, with inventory and payments unless checkout.remote places them elsewhere), inventory, payments.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<serve::Role>,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Fill the catalog with synthetic products and offers.
    Seed(seed::SeedArgs),
    /// Configuration tools.
    Config {
        /// Print the effective configuration (TOML, secrets redacted).
        #[arg(long)]
        dump: bool,
        #[command(flatten)]
        args: ServeArgs,
    },
}

/// Flags shared by the commands that load the configuration.
#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, env = "SURGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the embedded stores.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Store URL (sqlite://PATH or postgres://…).
    #[arg(long)]
    store: Option<String>,
    /// Log format: pretty or json.
    #[arg(long)]
    log_format: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        let mut o: Overrides = Vec::new();
        if let Some(v) = &self.listen {
            o.push(("listen", Value::String(v.clone())));
        }
        if let Some(v) = &self.data_dir {
            o.push(("data_dir", Value::String(v.display().to_string())));
        }
        if let Some(v) = &self.store {
            o.push(("store", Value::String(v.clone())));
        }
        if let Some(v) = &self.log_format {
            o.push(("log.format", Value::String(v.clone())));
        }
        o
    }

    fn load(&self) -> Result<config::Loaded, String> {
        config::load(self.config.as_deref(), std::env::vars(), self.overrides())
    }
}

fn init_logging(log: &config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("surge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => start(args, serve::Role::ALL.to_vec()).await,
            Command::Serve { roles, args } => start(args, roles).await,
            Command::Seed(args) => seed::run(args).await,
            Command::Config { dump, args } => {
                let loaded = args.load().map_err(anyhow::Error::msg)?;
                if dump {
                    print!("{}", loaded.config.dump());
                } else {
                    println!("configuration is valid (use --dump to print it)");
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: ServeArgs, roles: Vec<serve::Role>) -> anyhow::Result<()> {
    let loaded = args.load().map_err(anyhow::Error::msg)?;
    init_logging(&loaded.config.log);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    serve::run(loaded.config, &roles).await
}
