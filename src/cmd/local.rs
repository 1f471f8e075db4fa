//! `kvstore local`: the cluster in a box (see `kvstore_box::local`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LocalAction, LocalArgs};
use kvstore_box::local::{process_alive, LocalConfig, PodEvent, StateFile, Supervisor};

/// Runs `kvstore local` (or one of its actions) and returns the exit code.
pub fn run(args: LocalArgs) -> ExitCode {
    match &args.action {
        Some(LocalAction::Kill { ordinal, signal }) => return kill(&args, *ordinal, signal),
        Some(LocalAction::Scale { replicas }) => return scale(&args, *replicas),
        Some(LocalAction::Endpoints) => {
            return match StateFile::read(&args.dir) {
                Ok(state) => {
                    println!("{}", state.endpoints());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kvstore: {e}");
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let level = crate::logging::with_quiet_dns(&args.log.log_level);
    if let Err(e) = crate::logging::init("local", args.log.log_format, &level) {
        eprintln!("kvstore: {e}");
        return ExitCode::from(2);
    }
    let runtime = match super::runtime(Some(2)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    runtime.spawn(async move {
        let signal = super::shutdown_signal().await;
        tracing::info!("received {signal}");
        flag.store(true, Ordering::SeqCst);
    });
    let cfg = match local_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(2);
        }
    };
    if args.fresh {
        for n in 0..args.replicas {
            let _ = std::fs::remove_dir_all(args.dir.join(format!("{}-{n}", args.set)));
        }
    }
    println!(
        "starting {} pods of StatefulSet {:?} in {} ...",
        args.replicas,
        args.set,
        args.dir.display()
    );
    let mut sup = match Supervisor::start(cfg, runtime.handle().clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(1);
        }
    };
    print_banner(&sup, &args);
    while !stop.load(Ordering::SeqCst) {
        for event in sup.poll() {
            match event {
                PodEvent::Exited {
                    name,
                    status,
                    restart_in,
                } => println!("{name} exited ({status}); restarting it in {:.1}s with the same name and data dir", restart_in.as_secs_f64()),
                PodEvent::Restarted { name, pid } => println!("{name} restarted (pid {pid})"),
                PodEvent::Created { name, pid } => println!("{name} created (pid {pid}): it joins as a learner and is promoted once caught up"),
                PodEvent::Deleted { name } => println!("{name} deleted by the scale-down (its data dir stays, as a PVC does)"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("stopping pods in reverse ordinal order ...");
    sup.stop(Duration::from_secs(30));
    println!("stopped");
    ExitCode::SUCCESS
}

/// `kvstore local scale N`: sets the running box's desired replica count,
/// as `kubectl scale statefulset` sets spec.replicas; the supervisor and the
/// pods follow it.
fn scale(args: &LocalArgs, replicas: u32) -> ExitCode {
    if replicas == 0 {
        eprintln!(
            "kvstore: scale to at least 1 (a cluster needs a voter; stop the box to remove it)"
        );
        return ExitCode::from(2);
    }
    match StateFile::read(&args.dir) {
        Ok(state) if process_alive(state.supervisor_pid) => {}
        _ => {
            eprintln!(
                "kvstore: no cluster in a box is running from {}",
                args.dir.display()
            );
            return ExitCode::from(1);
        }
    }
    match Supervisor::write_desired(&args.dir, replicas) {
        Ok(()) => {
            println!("desired replicas set to {replicas}; watch with `kvctl member list`");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvstore: {e}");
            ExitCode::from(1)
        }
    }
}

/// The supervisor's configuration from the flags.
pub fn local_config(args: &LocalArgs) -> Result<LocalConfig, String> {
    let binary =
        std::env::current_exe().map_err(|e| format!("cannot find the kvstore binary: {e}"))?;
    Ok(LocalConfig {
        replicas: args.replicas,
        dir: args.dir.clone(),
        base_ip: args.base_ip,
        client_port: args.client_port,
        peer_port: args.peer_port,
        set: args.set.clone(),
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        restart_delay: Duration::from_millis(args.restart_delay_ms),
        serve_args: args.serve_args.clone(),
        binary,
        tls: args.tls,
    })
}

fn print_banner(sup: &Supervisor, args: &LocalArgs) {
    let state = sup.state();
    println!();
    println!(
        "kvstore local: {} pods, headless service {:?}, namespace {:?}",
        state.replicas, args.service, args.namespace
    );
    println!(
        "  {:<12} {} (serves {}-N.{}.{}.svc.cluster.local and _peer._tcp SRV records)",
        "dns", state.dns, args.set, args.service, args.namespace
    );
    for pod in &state.pods {
        println!(
            "  {:<12} client {}  peer {}  pid {}  data {}  log {}",
            pod.name,
            pod.client,
            pod.peer,
            pod.pid.map_or("-".to_string(), |p| p.to_string()),
            pod.data_dir.display(),
            pod.log.display()
        );
    }
    println!(
        "  {:<12} {}",
        "state file",
        StateFile::path(&args.dir).display()
    );
    println!();
    println!(
        "try:     cargo run --release --bin kvctl -- --endpoints {} status",
        state.endpoints()
    );
    println!("crash a pod:  cargo run --release -- local kill 0     stop everything: Ctrl-C");
    println!();
}

fn kill(args: &LocalArgs, ordinal: u32, signal: &str) -> ExitCode {
    let state = match StateFile::read(&args.dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(1);
        }
    };
    if !process_alive(state.supervisor_pid) {
        eprintln!(
            "kvstore: the supervisor (pid {}) is not running",
            state.supervisor_pid
        );
        return ExitCode::from(1);
    }
    let sig = match signal
        .trim_start_matches("SIG")
        .to_ascii_uppercase()
        .as_str()
    {
        "KILL" | "9" => libc::SIGKILL,
        "TERM" | "15" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        other => {
            eprintln!("kvstore: unknown signal {other:?}: use KILL, TERM, STOP or CONT");
            return ExitCode::from(2);
        }
    };
    let Some(pod) = state.pods.iter().find(|p| p.ordinal == ordinal) else {
        eprintln!(
            "kvstore: no pod with ordinal {ordinal} (there are {})",
            state.replicas
        );
        return ExitCode::from(2);
    };
    let Some(pid) = pod.pid else {
        eprintln!("kvstore: {} is not running right now", pod.name);
        return ExitCode::from(1);
    };
    // SAFETY: kill(2) on a pod process started by our own supervisor, whose
    // PID the state file records.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    if rc != 0 {
        eprintln!(
            "kvstore: cannot signal {} (pid {pid}): {}",
            pod.name,
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    println!(
        "sent SIG{} to {} (pid {pid})",
        signal.trim_start_matches("SIG").to_ascii_uppercase(),
        pod.name
    );
    ExitCode::SUCCESS
}
