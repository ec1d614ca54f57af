//! The `rustorium-broker` binary: logging, configuration, bind, run.

// Nothing a client or a config file controls may panic the broker.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use rustorium_broker::cli::{Cli, Command, LogFormat};
use rustorium_broker::server::Standalone;

/// The broker's allocator: events are allocated on one thread and freed on others
/// (publisher, hubs, connections), a pattern glibc's malloc serves slowly (about a
/// quarter of the broker's time in scenario C of the load generator); mimalloc does not.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // actix-http logs every malformed request from a client at ERROR ("request parse
    // error"): a scanner could flood the log. They are counted in
    // rustorium_closed_without_request_total instead; RUST_LOG naming actix_http brings
    // them back.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("actix_http")) {
        logger.filter_module("actix_http::h1::dispatcher", log::LevelFilter::Off);
    }
    if cli.log_format == LogFormat::Json {
        logger.format(|out, record| {
            let line = serde_json::json!({
                "timestamp": out.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(out, "{line}")
        });
    }
    logger.init();
    if let Some(Command::CheckConfig { path }) = &cli.command {
        return match cli.check_config(path) {
            Ok(text) => {
                let _ = write!(std::io::stdout(), "{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rustorium-broker: invalid configuration: {e}");
                ExitCode::from(2)
            }
        };
    }
    let config = match cli.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rustorium-broker: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if config.engine.kind == rustorium_actors::settings::EngineKind::Redis {
        // A refused user or password is a setting to fix: said at once, not retried.
        let engine = config.engine.clone();
        let checked = actix_web::rt::System::new()
            .block_on(async move { rustorium_actors::engine::redis::link::check(&engine).await });
        if let Err(e) = checked {
            eprintln!("rustorium-broker: engine: {e}");
            return ExitCode::from(2);
        }
    }
    let files = rustorium_broker::server::raise_file_limit();
    log::info!("open-file limit {files}: at most that many connections");
    let result = actix_web::rt::System::new().block_on(async move {
        // SIGHUP reads the file and the command line again.
        let source = std::sync::Arc::new(move || cli.read());
        let standalone = Standalone::bind(config)?.reload_from(source);
        // Not println!: a closed stdout must not take the broker down.
        let _ = writeln!(std::io::stdout(), "{}", standalone.banner());
        standalone
            .run()
            .await
            .map_err(|e| rustorium_broker::server::StartError::Bind {
                addr: "listener".into(),
                error: e,
            })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustorium-broker: {e}");
            ExitCode::FAILURE
        }
    }
}
