#![forbid(unsafe_code)]

use clap::Parser;
use convoy::config::{Cli, Command};
use convoy::{App, store, telemetry};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if cli.config.worker_threads > 0 {
        runtime.worker_threads(cli.config.worker_threads.into());
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    telemetry::init(&config.log_level, config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let store = store::connect(
                &config.database_url,
                config.database_max_connections,
                config.database_statement_timeout(),
            )
            .await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!("migrations applied");
        }
        Command::Serve => {
            let app = App::build(config).await?;
            app.run(shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
