//! `kvstore demo --as-deployment` run in-process on its own loopback
//! subnet: the figures of its summary, StatefulSet against Deployment.

use kvstore_box::demo::{deployment_summary, run_as_deployment, DemoOptions, DeploymentReport};
use kvstore_testkit::box_cluster::demo_options;

fn options(dir: &std::path::Path) -> DemoOptions {
    demo_options(dir)
}

/// The same kill of kvstore-0 under both controllers: the StatefulSet's
/// pod comes back as the old member, restores full redundancy, needs less
/// copied than everything, and its name answers again; the Deployment's
/// replacement is refused, redundancy is not restored within the window,
/// it would need everything the leader stores, and the old name never
/// answers again (it no longer resolves). No acknowledged write is lost in
/// either run.
#[test]
fn statefulset_against_deployment_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let picture = dir.path().join("t.svg");
    let report = check_figures(&DemoOptions {
        timeline: Some(picture.clone()),
        ..options(dir.path())
    });
    // One picture per run, each labelled with its measured outcome.
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join(name)).expect("the run's picture was written")
    };
    let restored = report.statefulset.restored_after.expect("restored");
    assert!(read("t-statefulset.svg").contains(&format!(
        "kvstore-0 accepted; full redundancy again +{} ms",
        restored.as_millis()
    )));
    assert!(read("t-deployment.svg").contains(&format!(
        "{} not accepted; not restored after {} s",
        report.deployment.pod,
        report.window.as_secs()
    )));
}

/// The same with TLS on both ports (`--as-deployment --tls`): the second
/// box, on the same addresses, has a CA of its own, and the demo's clients
/// follow it.
#[test]
fn statefulset_against_deployment_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = DemoOptions {
        tls: true,
        ..options(dir.path())
    };
    check_figures(&opts);
}

fn check_figures(opts: &DemoOptions) -> DeploymentReport {
    let report = run_as_deployment(opts, &mut |l| println!("{l}")).expect("demo");
    println!("{}", deployment_summary(&report));
    let (s, d) = (&report.statefulset, &report.deployment);

    assert!(s.acceptance.accepted, "{}", s.acceptance.evidence);
    assert!(!d.acceptance.accepted, "{}", d.acceptance.evidence);
    assert_eq!(s.pod, "kvstore-0");
    assert_ne!(d.pod, "kvstore-0", "the Deployment's pod has a new name");

    assert!(
        s.restored_after.is_some(),
        "the StatefulSet restored redundancy"
    );
    assert_eq!(d.restored_after, None, "the Deployment did not restore it");

    assert_eq!(d.held_bytes, 0, "the replacement's volume is empty");
    assert!(d.bytes_to_copy >= d.leader_stored_bytes && d.leader_stored_bytes > 0);
    assert!(
        d.bytes_to_copy > s.bytes_to_copy,
        "{} > {}",
        d.bytes_to_copy,
        s.bytes_to_copy
    );
    assert!(s.held_bytes > 0, "kvstore-0 kept its volume");
    assert!(s.bytes_to_copy < s.leader_stored_bytes);

    for run in [s, d] {
        assert!(run.old_name.ok_before_kill > 0, "the old-name client read");
        assert!(run.acked > 100, "the load made progress: {}", run.acked);
        assert!(run.lost.is_empty(), "lost: {:?}", run.lost);
    }
    assert!(s.old_name.ok_after_kill > 0 && s.old_name.first_ok_after_kill.is_some());
    assert_eq!(s.old_name.nxdomain_after_kill, 0, "the name stayed");
    assert_eq!(d.old_name.ok_after_kill, 0);
    assert!(d.old_name.nxdomain_after_kill > 0, "the name was gone");
    assert_eq!(report.lost(), 0);
    report
}
