//! The subcommands of the `kvstore` binary.

#[cfg(feature = "box")]
pub mod demo;
#[cfg(feature = "box")]
pub mod demo_deployment;
#[cfg(feature = "box")]
mod demo_top;
#[cfg(feature = "box")]
pub mod local;
pub mod restore;
pub mod serve;

/// What a binary built without the `box` feature (the pod image) answers
/// to `kvstore local` and `kvstore demo`: they are not in this build.
pub fn not_in_this_build(subcommand: &str) -> std::process::ExitCode {
    eprintln!(
        "kvstore: `{subcommand}` is not in this build: this binary (the pod image's) is built \
         without the cluster in a box; run it from a source checkout \
         (cargo run --release -- {subcommand}) or build with --features box"
    );
    std::process::ExitCode::from(2)
}

/// A multi-threaded async runtime (`workers` threads, or one per core), or
/// the exit code after saying why there is none.
pub fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build().map_err(|e| {
        eprintln!("kvstore: cannot start the async runtime: {e}");
        std::process::ExitCode::from(1)
    })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C) and says which.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
