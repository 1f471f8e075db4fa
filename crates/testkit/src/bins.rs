//! The binaries under test, found in the target directory of the test
//! executable that asks for them.
//!
//! Cargo builds the `kvstore` binary before it runs the root package's
//! integration tests, which are the only tests that start it. `kvctl`
//! belongs to another package of the workspace, which cargo does not build
//! for those tests: [`kvctl_bin`] builds it once per test process (a no-op
//! when it is fresh), with the same profile and target directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `kvstore` binary under test.
pub fn kvstore_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = profile_dir().join("kvstore");
        assert!(
            bin.exists(),
            "{} is missing: the tests that start kvstore belong to the root package \
             (cargo test at the top builds it first)",
            bin.display()
        );
        bin.display().to_string()
    })
}

/// The `kvctl` binary under test, built first if needed.
pub fn kvctl_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().unwrap_or(&profile_dir);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/Cargo.toml");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--bin", "kvctl", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo to build kvctl");
        assert!(status.success(), "building kvctl failed: {status}");
        profile_dir.join("kvctl").display().to_string()
    })
}

/// `target/<profile>`: the test executable lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    dir.to_path_buf()
}
