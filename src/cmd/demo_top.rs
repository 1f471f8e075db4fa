//! `kvstore demo --top`: the demonstration shown through the live view of
//! the cluster (the kvstore-top crate) instead of plain narrated lines.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvstore_box::demo::{run as run_demo, DemoOptions, Report};
use kvstore_client::poll::StatusPoller;
use kvstore_client::TlsOptions;
use kvstore_top::{status_timeout, Ended, TopOptions};

/// The demo's result, from a thread of its own.
type Demo = JoinHandle<Result<Report, String>>;

/// Runs the demo on a thread of its own while this one shows the view,
/// with the narration in the view's event log; gives the demo's result
/// once it ends. When the user quits the view the process exits (130), as
/// Ctrl-C ends the plain demo; the pods die with it.
pub(crate) fn run(opts: &DemoOptions) -> Result<Report, String> {
    // The demo empties its dir first; done here too, so that an earlier
    // run's certificates are not taken for this run's.
    let _ = std::fs::remove_dir_all(&opts.dir);
    let (narration, lines) = mpsc::channel();
    let demo: Demo = {
        let opts = opts.clone();
        // The sender is dropped when the demo ends, which ends the view.
        std::thread::spawn(move || {
            run_demo(&opts, &mut |line: String| {
                let _ = narration.send(line);
            })
        })
    };
    let tls = if opts.tls { box_tls(opts, &demo) } else { None };
    let view = TopOptions {
        interval: Duration::from_millis(250),
        duration: None,
        plain: false,
        pods_every: Duration::from_secs(5),
        title: "kvstore demo".into(),
    };
    let mut poller = StatusPoller::new(
        &opts.pod_endpoints(opts.replicas),
        tls,
        status_timeout(view.interval),
        true,
    );
    match kvstore_top::run(&view, &mut poller, Some(&lines)) {
        Ok(Ended::Finished) => {}
        Ok(Ended::Quit) => {
            eprintln!("kvstore demo: interrupted");
            std::process::exit(130);
        }
        Err(e) => {
            eprintln!("kvstore demo: no live view ({e}); the narration follows");
            lines.iter().for_each(|line| println!("{line}"));
        }
    }
    demo.join().map_err(|_| "the demo panicked".to_string())?
}

/// The box's client TLS, read once the box has written it (when it
/// starts); `None` if the demo ends first or it takes more than a minute.
fn box_tls(opts: &DemoOptions, demo: &Demo) -> Option<TlsOptions> {
    let files = opts.client_tls_files();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each file is written by a rename, so one that exists is whole.
    while !files.iter().all(|f| f.exists()) {
        if demo.is_finished() || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsOptions::from_files(&files[0], Some((&files[1], &files[2])), None).ok()
}
