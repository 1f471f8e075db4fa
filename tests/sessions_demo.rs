//! `kvstore demo --sessions`, run in-process on its own loopback subnet:
//! the figures of its summary, not its wording.

use kvstore_box::demo::{run_sessions, sessions_summary, DemoOptions, Way, SESSION_REQUEST_BUDGET};
use kvstore_testkit::box_cluster::demo_options;

fn options(dir: &std::path::Path) -> DemoOptions {
    DemoOptions {
        kills: 0,
        readers: 0,
        // The killed pod stays down longer than a session waits for one
        // request, so every pinned session gets an error however fast the
        // machine: the test does not hang on timing.
        restart_delay: 2 * SESSION_REQUEST_BUDGET,
        ..demo_options(dir)
    }
}

/// Killing the pod the pinned sessions stick to stalls them and gives them
/// errors, while
/// the sessions reading with their last write's revision read every one of
/// their writes back, from more than one pod, with fewer errors; no way
/// loses an acknowledged write.
#[test]
fn the_token_reads_every_own_write_from_any_pod_through_a_pod_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path());
    let report = run_sessions(&opts, &mut |l| println!("{l}")).expect("demo");
    println!("{}", sessions_summary(&report));
    let (pinned, token) = (&report.pinned, &report.token);
    for way in Way::ALL {
        let f = report.way(way);
        assert_eq!(f.sessions, 4, "{way:?}: sessions");
        assert!(f.writes_acked > 50, "{way:?} made progress: {f:?}");
        assert_eq!(f.lost, 0, "{way:?} lost acknowledged writes: {f:?}");
    }
    assert_eq!(token.missed, 0, "a read with the token missed: {token:?}");
    assert!(
        token.pods_serving() >= 2,
        "the token's reads came from one pod only: {token:?}"
    );
    assert!(pinned.errors() > 0, "the pinned pod died: {pinned:?}");
    // Nothing answers a pinned session from the kill until the restart.
    assert!(
        pinned.longest_stall >= opts.restart_delay,
        "the pinned sessions waited out the restart: {pinned:?}"
    );
    assert!(
        token.errors() < pinned.errors(),
        "the token's sessions did not depend on the killed pod: {token:?} vs {pinned:?}"
    );
    assert_eq!(
        pinned.pods_serving(),
        1,
        "pinned reads from one pod: {pinned:?}"
    );
    assert!(report.passed());
}
