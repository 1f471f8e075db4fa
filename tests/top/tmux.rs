//! A tmux server of the test's own (`tmux -S <socket in a temp dir>`, no
//! user configuration), running one command in a detached pane of a fixed
//! size; the server is killed and its socket removed when this is
//! dropped, also when the test fails.

use std::process::Command;

/// The server, and the one session on it.
pub struct Tmux {
    /// Holds the server's socket (tmux leaves it behind when it exits).
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a detached session of
    /// `width` x `height` cells.
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        let installed = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            installed,
            "tmux is not installed: this test runs the terminal view in a tmux pane; \
             install it (apt-get install tmux; .ci/run does)"
        );
        let tmux = Tmux {
            dir: tempfile::tempdir().expect("a temp dir for tmux's socket"),
        };
        let status = tmux
            .command()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "top"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed: {status}");
        tmux
    }

    /// The pane's text as it is on the screen now.
    pub fn capture(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux command for this server.
    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(self.dir.path().join("socket"));
        cmd
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the session; the pane's processes get SIGHUP.
        let _ = self.command().arg("kill-server").status();
    }
}
