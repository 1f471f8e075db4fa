//! A memory limit per pod, as a Kubernetes pod has one: a memory cgroup per
//! pod (v1 or v2) and a wrapper script that starts `kvstore` inside its
//! pod's cgroup (the pod is found from $HOSTNAME, as the supervisor sets it).
//! Where no cgroup can be made (not root), the wrapper caps the address
//! space instead (RLIMIT_AS), which is cruder but still fails an allocation
//! that blows the budget.

use std::path::{Path, PathBuf};

use crate::process::kvstore_bin;

pub enum Mode {
    CgroupV1,
    CgroupV2,
    AddressSpace,
}

pub struct MemoryCap {
    pub mode: Mode,
    groups: Vec<PathBuf>,
    wrapper: PathBuf,
}

fn try_cgroup(
    root: &Path,
    name: &str,
    pods: u32,
    limit_file: &str,
    bytes: u64,
) -> Option<Vec<PathBuf>> {
    let parent = root.join(name);
    std::fs::create_dir(&parent).ok()?;
    let mut groups = Vec::new();
    for n in 0..pods {
        let g = parent.join(format!("kvstore-{n}"));
        if std::fs::create_dir(&g).is_err()
            || std::fs::write(g.join(limit_file), bytes.to_string()).is_err()
        {
            let _ = std::fs::remove_dir(&g);
            for g in &groups {
                let _ = std::fs::remove_dir(g);
            }
            let _ = std::fs::remove_dir(&parent);
            return None;
        }
        groups.push(g);
    }
    Some(groups)
}

impl MemoryCap {
    /// Caps each of `pods` pods at `bytes`; the wrapper goes in `dir`.
    pub fn new(dir: &Path, pods: u32, bytes: u64) -> MemoryCap {
        let name = format!("kvstore-test-{:x}", rand::random::<u32>());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers")
            .exists()
            .then(|| {
                let root = Path::new("/sys/fs/cgroup");
                let enabled = std::fs::read_to_string(root.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                if !enabled.contains("memory") {
                    return None;
                }
                try_cgroup(root, &name, pods, "memory.max", bytes)
            })
            .flatten();
        let (mode, groups) = match v2 {
            Some(g) => (Mode::CgroupV2, g),
            None => match try_cgroup(
                Path::new("/sys/fs/cgroup/memory"),
                &name,
                pods,
                "memory.limit_in_bytes",
                bytes,
            ) {
                Some(g) => (Mode::CgroupV1, g),
                None => (Mode::AddressSpace, Vec::new()),
            },
        };
        let wrapper = dir.join("kvstore-capped");
        let enter = match mode {
            Mode::CgroupV1 | Mode::CgroupV2 => {
                let parent = groups[0].parent().expect("parent").display().to_string();
                format!("echo $$ > {parent}/$HOSTNAME/cgroup.procs || exit 97\n")
            }
            Mode::AddressSpace => format!(
                "export MALLOC_ARENA_MAX=2\nulimit -v {} || exit 97\n",
                (bytes * 3) >> 10
            ),
        };
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\n{enter}exec {} \"$@\"\n", kvstore_bin()),
        )
        .expect("write the wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        MemoryCap {
            mode,
            groups,
            wrapper,
        }
    }

    /// The binary to run pods with.
    pub fn binary(&self) -> &Path {
        &self.wrapper
    }

    /// The most memory pod `n` has used, where the cgroup tells.
    pub fn peak(&self, n: u32) -> Option<u64> {
        let g = self.groups.get(n as usize)?;
        let file = match self.mode {
            Mode::CgroupV1 => "memory.max_usage_in_bytes",
            Mode::CgroupV2 => "memory.peak",
            Mode::AddressSpace => return None,
        };
        std::fs::read_to_string(g.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// How often the kernel killed a process of pod `n` for memory.
    pub fn oom_kills(&self, n: u32) -> u64 {
        let Some(g) = self.groups.get(n as usize) else {
            return 0;
        };
        let (file, key) = match self.mode {
            Mode::CgroupV1 => ("memory.oom_control", "oom_kill "),
            Mode::CgroupV2 => ("memory.events", "oom_kill "),
            Mode::AddressSpace => return 0,
        };
        std::fs::read_to_string(g.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn describe(&self) -> &'static str {
        match self.mode {
            Mode::CgroupV1 => "a memory cgroup (v1) per pod",
            Mode::CgroupV2 => "a memory cgroup (v2) per pod",
            Mode::AddressSpace => "an address-space limit (RLIMIT_AS) per pod",
        }
    }
}

impl Drop for MemoryCap {
    /// Removes the cgroups (the pods must be gone: drop the cluster first).
    fn drop(&mut self) {
        for g in &self.groups {
            for _ in 0..50 {
                if std::fs::remove_dir(g).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        if let Some(parent) = self.groups.first().and_then(|g| g.parent()) {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
