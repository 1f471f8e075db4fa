//! `kvstore demo`: the failover demonstration, and the measurement harness
//! behind the process-level replication tests.
//!
//! It starts the cluster in a box, runs a bounded write-and-read load, kills
//! the leader with SIGKILL, and narrates what happens with timestamps: who
//! leads and why, the election, the write-unavailability window the load
//! sees, the old pod coming back on its own data dir, catching up and taking
//! leadership back. Then it checks that every acknowledged write is readable
//! and that the history of reads and writes on a few shared keys is
//! linearizable, and prints a summary.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::lincheck::{self, Op, OpKind, Verdict};
use crate::local::{LocalConfig, PodEvent, RunningSupervisor, Supervisor};
use crate::proto::kv::{Consistency, Role, StatusResponse};
use kvstore_client::{Client, RetryPolicy, WriteRetry};

/// What the demo does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the pods' data dirs and logs go (emptied first).
    pub dir: PathBuf,
    /// Pod 0's loopback address.
    pub base_ip: Ipv4Addr,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Number of pods.
    pub replicas: u32,
    /// Leader kills (SIGKILL) to do.
    pub kills: u32,
    /// Also do a rolling restart (SIGTERM, highest ordinal first).
    pub rolling_restart: bool,
    /// Concurrent writers.
    pub writers: usize,
    /// Concurrent readers.
    pub readers: usize,
    /// How long the supervisor waits before restarting a dead pod.
    pub restart_delay: Duration,
    /// The `kvstore` binary.
    pub binary: PathBuf,
    /// Extra `kvstore serve` flags.
    pub serve_args: Vec<String>,
}

/// One leader kill and what followed.
#[derive(Clone, Debug)]
pub struct Failover {
    /// The ordinal killed.
    pub killed: u32,
    /// Who took over.
    pub new_leader: u32,
    /// The new leader's term.
    pub term: u64,
    /// From the kill until a new leader was known.
    pub election: Duration,
    /// The longest gap between acknowledged writes around the kill.
    pub write_gap: Duration,
    /// From the kill until the pod was running again.
    pub restarted: Duration,
    /// From the restart until it had applied the leader's commit index.
    pub catch_up: Duration,
    /// From catching up until it led again (when it has the lowest ordinal).
    pub leadership_back: Option<Duration>,
}

/// One pod of the rolling restart.
#[derive(Clone, Debug)]
pub struct RollingStep {
    /// The pod's ordinal.
    pub ordinal: u32,
    /// The longest gap between acknowledged writes while it restarted.
    pub write_gap: Duration,
    /// How its process ended ("exit code 0" for a clean stop).
    pub exit: String,
    /// Whether it led when it was asked to stop.
    pub was_leader: bool,
    /// Whether it handed leadership over before stopping (its log says so).
    pub handed_over: bool,
}

/// The demo's outcome.
#[derive(Clone, Debug)]
pub struct Report {
    /// Each leader kill.
    pub failovers: Vec<Failover>,
    /// Each pod restarted in the rolling restart, in order.
    pub rolling: Vec<RollingStep>,
    /// Writes acknowledged.
    pub acked: usize,
    /// Writes whose outcome is unknown (the client got an error that does not
    /// say whether they applied).
    pub unknown: usize,
    /// Acknowledged writes not readable at the end.
    pub lost: Vec<String>,
    /// The verdict on the shared keys' history.
    pub linearizable: Verdict,
    /// Operations in that history.
    pub history_ops: usize,
    /// Wall time of the whole demo.
    pub elapsed: Duration,
}

impl Report {
    /// The median write gap over the kills.
    pub fn median_write_gap(&self) -> Option<Duration> {
        median(self.failovers.iter().map(|f| f.write_gap).collect())
    }
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// What the load records.
#[derive(Default)]
struct LoadLog {
    /// Completion times of acknowledged writes.
    acks: Vec<Instant>,
    /// Acknowledged unique writes: key -> value.
    acked: BTreeMap<String, String>,
    unknown: usize,
    /// Operations on the shared keys.
    history: Vec<Op>,
}

struct Load {
    log: Arc<Mutex<LoadLog>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const SHARED_KEYS: u64 = 4;

fn client(endpoints: &[String]) -> Result<Client, String> {
    let policy = RetryPolicy {
        budget: Duration::from_secs(15),
        writes: WriteRetry::Safe,
        ..RetryPolicy::default()
    };
    Client::new(endpoints, policy, Duration::from_secs(3)).map_err(|e| e.to_string())
}

impl Load {
    fn start(
        endpoints: &[String],
        writers: usize,
        readers: usize,
        epoch: Instant,
        prefix: String,
    ) -> Result<Load, String> {
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut c = client(endpoints)?;
            let log = log.clone();
            let stopped = stopped.clone();
            let prefix = prefix.clone();
            tasks.push(tokio::spawn(async move {
                let nanos = |t: Instant| t.duration_since(epoch).as_nanos() as u64;
                // Bounded: stops when told, or after a million writes.
                for seq in 0..1_000_000u64 {
                    if *stopped.borrow() {
                        return;
                    }
                    let key = format!("{prefix}/w{w}/{seq:08}");
                    let value = format!("{w}-{seq}");
                    match c.put(key.clone(), value.clone()).await {
                        Ok(_) => {
                            let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                            l.acks.push(Instant::now());
                            l.acked.insert(key, value);
                        }
                        Err(e) if e.outcome_unknown() => {
                            log.lock().unwrap_or_else(|p| p.into_inner()).unknown += 1
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                    // A write to a shared key, for the linearizability check.
                    let reg = format!("{prefix}/reg/{}", seq % SHARED_KEYS);
                    let v = ((w as u64) << 40) | seq;
                    let invoked = Instant::now();
                    let result = c.put(reg.clone(), v.to_string()).await;
                    let completed = Instant::now();
                    let done = match result {
                        Ok(_) => Some(Some(nanos(completed))),
                        Err(e) if e.outcome_unknown() => Some(None),
                        Err(_) => None,
                    };
                    if let Some(completed) = done {
                        let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                        if completed.is_some() {
                            l.acks.push(Instant::now());
                        } else {
                            l.unknown += 1;
                        }
                        l.history.push(Op {
                            key: reg,
                            kind: OpKind::Put(v),
                            invoked: nanos(invoked),
                            completed,
                        });
                    }
                }
            }));
        }
        for r in 0..readers {
            let mut c = client(endpoints)?;
            let log = log.clone();
            let stopped = stopped.clone();
            let prefix = prefix.clone();
            tasks.push(tokio::spawn(async move {
                let nanos = |t: Instant| t.duration_since(epoch).as_nanos() as u64;
                for i in 0..1_000_000u64 {
                    if *stopped.borrow() {
                        return;
                    }
                    let reg = format!("{prefix}/reg/{}", (i + r as u64) % SHARED_KEYS);
                    let invoked = Instant::now();
                    if let Ok(resp) = c.get(reg.clone(), Consistency::Linearizable).await {
                        let completed = Instant::now();
                        let value = resp.kv.and_then(|kv| {
                            std::str::from_utf8(&kv.value)
                                .ok()
                                .and_then(|s| s.parse().ok())
                        });
                        log.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .history
                            .push(Op {
                                key: reg,
                                kind: OpKind::Get(value),
                                invoked: nanos(invoked),
                                completed: Some(nanos(completed)),
                            });
                    }
                }
            }));
        }
        Ok(Load { log, stop, tasks })
    }

    /// The longest gap between acknowledged writes from `since` until now.
    fn longest_gap(&self, since: Instant) -> Duration {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut acks: Vec<Instant> = log.acks.iter().copied().filter(|&t| t >= since).collect();
        acks.sort();
        let mut gap = acks.first().map_or(Duration::ZERO, |&first| {
            first.saturating_duration_since(since)
        });
        for w in acks.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        gap
    }

    fn acked_count(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acked
            .len()
    }

    /// Stops the load and returns its log; a load task that panicked or
    /// did not stop in time makes the log untrustworthy, and is an error.
    async fn finish(self) -> Result<LoadLog, String> {
        let _ = self.stop.send(true);
        let mut problems = Vec::new();
        for t in self.tasks {
            let abort = t.abort_handle();
            match tokio::time::timeout(Duration::from_secs(20), t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("a load task failed: {e}")),
                Err(_) => {
                    abort.abort();
                    problems.push("a load task did not stop within 20 s".to_string());
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(std::mem::take(
            &mut *self.log.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// Reads every pod's status at once (unreachable pods are `None`).
async fn statuses(endpoints: &[String]) -> Vec<Option<StatusResponse>> {
    // One client (and connection) per endpoint for the whole demo, so that
    // polling measures the cluster, not connection set-up.
    static CLIENTS: std::sync::OnceLock<Mutex<BTreeMap<String, Client>>> =
        std::sync::OnceLock::new();
    let queries = endpoints.iter().map(|e| async move {
        let c = {
            let mut cache = CLIENTS
                .get_or_init(|| Mutex::new(BTreeMap::new()))
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match cache.get(e) {
                Some(c) => c.clone(),
                None => {
                    let c = Client::new(
                        std::slice::from_ref(e),
                        RetryPolicy::default(),
                        Duration::from_millis(500),
                    )
                    .ok()?;
                    cache.insert(e.clone(), c.clone());
                    c
                }
            }
        };
        tokio::time::timeout(Duration::from_millis(500), c.status_of(0))
            .await
            .ok()
            .and_then(Result::ok)
    });
    futures::future::join_all(queries).await
}

/// The leader as the pods report it: (ordinal, term).
async fn current_leader(endpoints: &[String]) -> Option<(u32, u64, u64)> {
    statuses(endpoints)
        .await
        .into_iter()
        .flatten()
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)
        .map(|s| (s.ordinal, s.term, s.commit_revision))
}

async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the demonstration. `say` receives each narrated line (already
/// timestamped).
pub fn run(opts: &DemoOptions, say: &mut dyn FnMut(String)) -> Result<Report, String> {
    let epoch = Instant::now();
    let stamp = move |msg: &str| format!("[{:>8.3}s] {msg}", epoch.elapsed().as_secs_f64());
    if opts.replicas < 3 {
        return Err("the demo needs at least 3 pods".into());
    }
    let _ = std::fs::remove_dir_all(&opts.dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let cfg = LocalConfig {
        replicas: opts.replicas,
        dir: opts.dir.clone(),
        base_ip: opts.base_ip,
        client_port: opts.client_port,
        peer_port: opts.peer_port,
        set: "kvstore".into(),
        service: "kvstore-headless".into(),
        namespace: "default".into(),
        restart_delay: opts.restart_delay,
        serve_args: opts.serve_args.clone(),
        binary: opts.binary.clone(),
    };
    say(stamp(&format!(
        "starting the cluster in a box: {} pods of StatefulSet \"kvstore\", an embedded DNS server as the headless service",
        opts.replicas
    )));
    let sup = Supervisor::start(cfg, runtime.handle().clone())?;
    let state = sup.state();
    say(stamp(&format!(
        "DNS at {}; pods started in ordinal order:",
        state.dns
    )));
    for p in &state.pods {
        say(stamp(&format!(
            "  {} pid {:<7} client {}  name {}  volume {}",
            p.name,
            p.pid.unwrap_or(0),
            p.client,
            p.dns_name,
            p.data_dir.display()
        )));
    }
    let endpoints: Vec<String> = state.pods.iter().map(|p| p.client.clone()).collect();
    let sup = RunningSupervisor::new(sup);
    let result = runtime.block_on(drive(opts, &sup, &endpoints, epoch, &stamp, say));
    say(stamp("stopping every pod (reverse ordinal order)"));
    sup.stop(Duration::from_secs(20));
    let mut report = result?;
    report.elapsed = epoch.elapsed();
    Ok(report)
}

/// One step of a rolling restart: SIGTERM pod `n`, wait until it is back
/// and ready, and report how it went.
async fn restart_gracefully(
    sup: &RunningSupervisor,
    endpoints: &[String],
    load: &Load,
    opts: &DemoOptions,
    n: u32,
) -> Result<RollingStep, String> {
    const HANDOVER: &str = "handed leadership over before stopping";
    let log_path = opts.dir.join(format!("kvstore-{n}.log"));
    let handovers = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches(HANDOVER)
            .count()
    };
    let handovers_before = handovers();
    let was_leader = current_leader(endpoints)
        .await
        .is_some_and(|(l, _, _)| l == n);
    sup.take_events();
    let started = Instant::now();
    sup.signal(n, libc::SIGTERM)?;
    let name = format!("kvstore-{n}");
    let mut exit = None;
    wait_for("the pod to restart", Duration::from_secs(60), || {
        let events = sup.take_events();
        for (_, e) in &events {
            if let PodEvent::Exited {
                name: who, status, ..
            } = e
            {
                if *who == name {
                    exit = Some(status.clone());
                }
            }
        }
        let restarted = events
            .iter()
            .any(|(_, e)| matches!(e, PodEvent::Restarted { name: who, .. } if *who == name));
        async move { restarted.then_some(()) }
    })
    .await?;
    let own = endpoints[n as usize].clone();
    wait_for("the pod to be ready", Duration::from_secs(30), || async {
        statuses(std::slice::from_ref(&own))
            .await
            .into_iter()
            .flatten()
            .next()
            .filter(|s| s.ready)
            .map(|_| ())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(RollingStep {
        ordinal: n,
        write_gap: load.longest_gap(started),
        exit: exit.unwrap_or_else(|| "unknown".into()),
        was_leader,
        handed_over: handovers() > handovers_before,
    })
}

async fn drive(
    opts: &DemoOptions,
    sup: &RunningSupervisor,
    endpoints: &[String],
    epoch: Instant,
    stamp: &dyn Fn(&str) -> String,
    say: &mut dyn FnMut(String),
) -> Result<Report, String> {
    let (leader, term, _) = wait_for("a leader", Duration::from_secs(30), || {
        current_leader(endpoints)
    })
    .await?;
    say(stamp(&format!(
        "kvstore-{leader} leads term {term}: ordinal {leader} has the shortest election timeout (base + ordinal x stagger), so it campaigned first"
    )));
    let load = Load::start(endpoints, opts.writers, opts.readers, epoch, "demo".into())?;
    say(stamp(&format!(
        "load running: {} writers (puts of unique keys, and of {SHARED_KEYS} shared keys), {} linearizable readers",
        opts.writers, opts.readers
    )));
    tokio::time::sleep(Duration::from_secs(2)).await;
    say(stamp(&format!(
        "{} writes acknowledged so far",
        load.acked_count()
    )));
    let mut failovers = Vec::new();
    for k in 0..opts.kills {
        let (old, old_term, _) = wait_for("a leader", Duration::from_secs(20), || {
            current_leader(endpoints)
        })
        .await?;
        if opts.kills > 1 {
            say(stamp(&format!(
                "--- leader kill {} of {}",
                k + 1,
                opts.kills
            )));
        }
        sup.take_events();
        let pid = sup.signal(old, libc::SIGKILL)?;
        let killed_at = Instant::now();
        say(stamp(&format!(
            "kill -9 kvstore-{old} (pid {pid}), the leader of term {old_term}"
        )));
        let survivors: Vec<String> = endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 != old)
            .map(|(_, e)| e.clone())
            .collect();
        let (new, new_term, _) = wait_for("a new leader", Duration::from_secs(20), || async {
            current_leader(&survivors)
                .await
                .filter(|&(_, t, _)| t > old_term)
        })
        .await?;
        let election = killed_at.elapsed();
        say(stamp(&format!(
            "kvstore-{new} won the election for term {new_term} {} after the kill: the followers saw the leader's connections reset and the lowest live ordinal campaigned first",
            ms(election)
        )));
        // Let the load run on, then read the gap it saw.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let write_gap = load.longest_gap(killed_at - Duration::from_millis(500));
        say(stamp(&format!(
            "the load saw writes pause for {} (the write-unavailability window)",
            ms(write_gap)
        )));
        let restarted_at = wait_for("the pod to restart", Duration::from_secs(30), || async {
            sup.take_events().into_iter().find_map(|(t, e)| match e {
                PodEvent::Restarted { name, .. } if name == format!("kvstore-{old}") => Some(t),
                _ => None,
            })
        })
        .await?;
        let restarted = restarted_at.duration_since(killed_at);
        say(stamp(&format!(
            "kvstore-{old} restarted by the supervisor {} after the kill, on its own data dir (its volume)",
            ms(restarted)
        )));
        let own = endpoints[old as usize].clone();
        let caught_at = wait_for("the pod to catch up", Duration::from_secs(30), || async {
            let (_, _, leader_commit) = current_leader(endpoints).await?;
            let mine = statuses(std::slice::from_ref(&own))
                .await
                .into_iter()
                .flatten()
                .next()?;
            (mine.applied_revision >= leader_commit && mine.ready).then(Instant::now)
        })
        .await?;
        let catch_up = caught_at.saturating_duration_since(restarted_at);
        say(stamp(&format!(
            "kvstore-{old} caught up with the leader {} after its restart (health SERVING)",
            ms(catch_up)
        )));
        let leadership_back = if old == 0 {
            let back_at = wait_for("leadership to return", Duration::from_secs(30), || async {
                current_leader(endpoints)
                    .await
                    .filter(|&(l, _, _)| l == 0)
                    .map(|_| Instant::now())
            })
            .await?;
            let (_, t, _) = current_leader(endpoints).await.unwrap_or((0, 0, 0));
            let d = back_at.saturating_duration_since(caught_at);
            say(stamp(&format!(
                "kvstore-0 leads again (term {t}), {} after catching up: kvstore-{new} handed leadership back to the lower ordinal",
                ms(d)
            )));
            Some(d)
        } else {
            None
        };
        failovers.push(Failover {
            killed: old,
            new_leader: new,
            term: new_term,
            election,
            write_gap,
            restarted,
            catch_up,
            leadership_back,
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut rolling = Vec::new();
    if opts.rolling_restart {
        say(stamp(
            "rolling restart, highest ordinal first, SIGTERM each pod as Kubernetes does",
        ));
        for n in (0..opts.replicas).rev() {
            rolling.push(restart_gracefully(sup, endpoints, &load, opts, n).await?);
            say(stamp(&format!(
                "kvstore-{n} restarted and ready; longest write gap meanwhile {}",
                ms(rolling.last().map(|r| r.write_gap).unwrap_or_default())
            )));
        }
        wait_for("kvstore-0 to lead", Duration::from_secs(30), || async {
            current_leader(endpoints)
                .await
                .filter(|&(l, _, _)| l == 0)
                .map(|_| ())
        })
        .await?;
        say(stamp("rolling restart done; kvstore-0 leads"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = load.finish().await?;
    say(stamp(&format!(
        "load stopped: {} writes acknowledged, {} of unknown outcome; reading every acknowledged key back",
        log.acked.len(),
        log.unknown
    )));
    let lost = verify(endpoints, &log.acked).await?;
    say(stamp(&format!(
        "{} acknowledged writes readable, lost = {}",
        log.acked.len() - lost.len(),
        lost.len()
    )));
    let history_ops = log.history.len();
    let history = log.history;
    let linearizable = tokio::task::spawn_blocking(move || lincheck::check(&history, 50_000_000))
        .await
        .map_err(|e| e.to_string())?;
    say(stamp(&format!(
        "history of {history_ops} reads and writes on the shared keys: {}",
        match &linearizable {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::Violation { key } => format!("NOT linearizable (key {key})"),
            Verdict::Undecided { key } => format!("undecided (key {key}: search budget exceeded)"),
        }
    )));
    Ok(Report {
        failovers,
        rolling,
        acked: log.acked.len(),
        unknown: log.unknown,
        lost,
        linearizable,
        history_ops,
        elapsed: Duration::ZERO,
    })
}

/// Reads every acknowledged key back (linearizably, by range pages) and
/// returns those that are missing or different.
async fn verify(
    endpoints: &[String],
    acked: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let mut c = client(endpoints)?;
    let kvs = c
        .scan(
            Bytes::from("demo/w"),
            Bytes::from("demo/w\u{7f}"),
            u64::MAX,
            Consistency::Linearizable,
            false,
        )
        .await
        .map_err(|e| format!("reading back: {e}"))?;
    let found: BTreeMap<String, String> = kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    Ok(acked
        .iter()
        .filter(|(k, v)| found.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect())
}

/// The summary table.
pub fn summary(report: &Report) -> String {
    let mut lines = vec!["summary".to_string()];
    let row = |name: &str, value: String| format!("  {name:<38} {value}");
    let stat = |v: Vec<Duration>| -> String {
        let Some(m) = median(v.clone()) else {
            return "-".into();
        };
        let (min, max) = (
            v.iter().min().copied().unwrap_or_default(),
            v.iter().max().copied().unwrap_or_default(),
        );
        if v.len() == 1 {
            ms(m)
        } else {
            format!(
                "median {} (min {}, max {}, n = {})",
                ms(m),
                ms(min),
                ms(max),
                v.len()
            )
        }
    };
    lines.push(row(
        "leader kills (SIGKILL)",
        report.failovers.len().to_string(),
    ));
    if !report.failovers.is_empty() {
        lines.push(row(
            "failover window (longest write gap)",
            stat(report.failovers.iter().map(|f| f.write_gap).collect()),
        ));
        lines.push(row(
            "kill -> new leader elected",
            stat(report.failovers.iter().map(|f| f.election).collect()),
        ));
        lines.push(row(
            "kill -> pod running again",
            stat(report.failovers.iter().map(|f| f.restarted).collect()),
        ));
        lines.push(row(
            "restart -> caught up",
            stat(report.failovers.iter().map(|f| f.catch_up).collect()),
        ));
        lines.push(row(
            "caught up -> kvstore-0 leads again",
            stat(
                report
                    .failovers
                    .iter()
                    .filter_map(|f| f.leadership_back)
                    .collect(),
            ),
        ));
    }
    if !report.rolling.is_empty() {
        let worst = report
            .rolling
            .iter()
            .map(|r| r.write_gap)
            .max()
            .unwrap_or_default();
        lines.push(row("rolling restart: longest write gap", ms(worst)));
    }
    lines.push(row("writes acknowledged", report.acked.to_string()));
    lines.push(row("writes of unknown outcome", report.unknown.to_string()));
    lines.push(row(
        "acknowledged writes lost",
        report.lost.len().to_string(),
    ));
    lines.push(row(
        "linearizable history",
        format!(
            "{} ({} operations on {SHARED_KEYS} keys)",
            match report.linearizable {
                Verdict::Linearizable => "yes",
                Verdict::Violation { .. } => "NO",
                Verdict::Undecided { .. } => "undecided",
            },
            report.history_ops
        ),
    ));
    lines.push(row(
        "demo took",
        format!("{:.1} s", report.elapsed.as_secs_f64()),
    ));
    lines.join("\n")
}
