//! Small volumes, as a PersistentVolume of a few MiB would be: a tmpfs of a
//! fixed size mounted on a directory, unmounted when dropped. Mounting needs
//! CAP_SYS_ADMIN (root, as CI runs); without it the test fails and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallVolume {
    path: PathBuf,
}

impl SmallVolume {
    /// Mounts a tmpfs of `mib` MiB on `path` (created).
    pub fn mount(path: &Path, mib: u64) -> SmallVolume {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs on {} needs root (CAP_SYS_ADMIN): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallVolume {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallVolume {
    /// Unmounts (lazily: a process that still holds a file cannot stop it).
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
