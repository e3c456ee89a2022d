//! Parsers for /proc/self/mountinfo, /proc/self/cgroup and cgroup counter files. Pure text in,
//! values or a message naming the line/key out; never a panic on malformed text.

use std::path::PathBuf;

/// One cgroup filesystem mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// The path inside the hierarchy that is mounted (field 4), unescaped.
    pub root: String,
    /// Where it is mounted (field 5), unescaped.
    pub mount_point: PathBuf,
    /// `None` for cgroup2; for cgroup v1 the super options (controllers among them).
    pub v1_options: Option<Vec<String>>,
}

/// Extracts the cgroup and cgroup2 mounts. `Err((line, message))` on a malformed line.
pub(crate) fn parse_mountinfo(text: &str) -> Result<Vec<CgroupMount>, (usize, String)> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent major:minor root mount_point options [optional...] - fstype source super
        let separator = fields
            .iter()
            .skip(6)
            .position(|field| *field == "-")
            .map(|position| position + 6)
            .ok_or_else(|| (line_number, "no ' - ' separator after field 6".to_string()))?;
        let (Some(root), Some(mount_point), Some(fstype)) =
            (fields.get(3), fields.get(4), fields.get(separator + 1))
        else {
            return Err((line_number, "fewer fields than mountinfo has".to_string()));
        };
        let super_options = fields.get(separator + 3).copied().unwrap_or("");
        let v1_options = match *fstype {
            "cgroup2" => None,
            "cgroup" => Some(super_options.split(',').map(str::to_string).collect()),
            _ => continue,
        };
        mounts.push(CgroupMount {
            root: unescape_octal(root).map_err(|e| (line_number, format!("root: {e}")))?,
            mount_point: PathBuf::from(
                unescape_octal(mount_point)
                    .map_err(|e| (line_number, format!("mount point: {e}")))?,
            ),
            v1_options,
        });
    }
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (fs/proc_namespace.c).
fn unescape_octal(field: &str) -> Result<String, String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'\\' {
            let digits = bytes
                .get(index + 1..index + 4)
                .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
                .ok_or_else(|| format!("bad octal escape at byte {index} of {field:?}"))?;
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            let value = u8::try_from(value)
                .map_err(|_| format!("octal escape above 0o377 at byte {index} of {field:?}"))?;
            out.push(value);
            index += 4;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{field:?} is not UTF-8 after unescaping"))
}

/// One line of /proc/self/cgroup: `hierarchy-id:controller-list:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroupEntry {
    pub hierarchy_id: u32,
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroupEntry>, (usize, String)> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        // The path may itself contain ':', so split only twice.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err((line_number, format!("{line:?} is not id:controllers:path")));
        };
        let hierarchy_id = id
            .parse::<u32>()
            .map_err(|_| (line_number, format!("hierarchy id {id:?} is not a number")))?;
        if !path.starts_with('/') {
            return Err((line_number, format!("path {path:?} is not absolute")));
        }
        let controllers = if controllers.is_empty() {
            Vec::new()
        } else {
            controllers.split(',').map(str::to_string).collect()
        };
        entries.push(ProcCgroupEntry {
            hierarchy_id,
            controllers,
            path: path.to_string(),
        });
    }
    Ok(entries)
}

/// The path of `path` below the mount's `root`, or `None` when the mount does not show it.
pub(crate) fn relative_to_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// A file holding one unsigned number (cpuacct.usage, memory.peak, pids.peak, ...).
pub(crate) fn parse_single_u64(text: &str) -> Result<u64, String> {
    let value = text.trim();
    value
        .parse::<u64>()
        .map_err(|_| format!("{value:?} is not an unsigned number"))
}

/// The value of `key` in a flat-keyed file (`key value` per line: memory.events, pids.events,
/// cpu.stat, memory.oom_control).
pub(crate) fn parse_keyed_u64(text: &str, key: &str) -> Result<u64, String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words
                .next()
                .ok_or_else(|| format!("key {key:?} has no value"))?;
            return value
                .parse::<u64>()
                .map_err(|_| format!("key {key:?} has value {value:?}, not an unsigned number"));
        }
    }
    Err(format!("key {key:?} is missing"))
}

/// Pids listed in cgroup.procs, one per line.
pub(crate) fn parse_pids(text: &str) -> Result<Vec<i32>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line = line.trim();
            line.parse::<i32>()
                .map_err(|_| format!("{line:?} is not a pid"))
        })
        .collect()
}

/// Controller names in cgroup.controllers / cgroup.subtree_control (space separated).
pub(crate) fn parse_controller_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = include_str!("../testdata/hybrid-ci-mountinfo.txt");
    const HYBRID_CGROUP: &str = include_str!("../testdata/hybrid-ci-proc-self-cgroup.txt");
    const DEBIAN_MOUNTINFO: &str = include_str!("../testdata/v2-debian12-service-mountinfo.txt");

    #[test]
    fn hybrid_mountinfo_yields_every_cgroup_mount_and_nothing_else() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO).expect("captured text parses");
        let points: Vec<_> = mounts
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuacct",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/devices",
                "/sys/fs/cgroup/freezer",
                "/sys/fs/cgroup/blkio",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified",
            ]
        );
        let memory = mounts.get(3).expect("memory mount");
        assert_eq!(
            memory.v1_options.as_deref(),
            Some(&["rw".to_string(), "memory".to_string()][..])
        );
        assert_eq!(memory.root, "/");
        assert_eq!(
            mounts.last().and_then(|m| m.v1_options.clone()),
            None,
            "unified is cgroup2"
        );
    }

    #[test]
    fn pure_v2_mountinfo_has_one_cgroup2_mount_and_unescapes_other_lines() {
        let mounts = parse_mountinfo(DEBIAN_MOUNTINFO).expect("parses");
        assert_eq!(mounts.len(), 1);
        let only = mounts.first().expect("one");
        assert_eq!(only.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(only.v1_options, None);
        assert_eq!(
            unescape_octal("/mnt/My\\040Disk").as_deref(),
            Ok("/mnt/My Disk")
        );
        assert_eq!(unescape_octal("a\\134b").as_deref(), Ok("a\\b"));
    }

    #[test]
    fn mountinfo_with_optional_fields_and_bind_root() {
        let text = "50 24 0:30 /system.slice/docker-ab.scope /sys/fs/cgroup ro,nosuid shared:9 master:3 - cgroup2 cgroup2 rw,nsdelegate\n\
                    51 24 0:31 /docker/ab /sys/fs/cgroup/cpu,cpuacct rw shared:5 - cgroup cgroup rw,cpuacct,cpu,clone_children\n";
        let mounts = parse_mountinfo(text).expect("parses");
        assert_eq!(mounts.len(), 2);
        let first = mounts.first().expect("first");
        assert_eq!(first.root, "/system.slice/docker-ab.scope");
        let second = mounts.get(1).expect("second");
        assert_eq!(
            second.mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            second.v1_options.as_deref(),
            Some(&["rw", "cpuacct", "cpu", "clone_children"].map(String::from)[..])
        );
    }

    #[test]
    fn malformed_mountinfo_names_the_line() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n41 31 0:38 / /sys/fs/cgroup/unified rw\n";
        assert_eq!(parse_mountinfo(text).map_err(|(line, _)| line), Err(2));
        let bad_escape = "41 31 0:38 / /a\\09 rw - cgroup2 cgroup2 rw\n";
        let (line, message) = parse_mountinfo(bad_escape).expect_err("bad escape");
        assert_eq!(line, 1);
        assert!(message.contains("bad octal escape at byte 2"), "{message}");
        let short = "41 31 0:38 / /x rw -\n";
        assert_eq!(parse_mountinfo(short).map_err(|(line, _)| line), Err(1));
    }

    #[test]
    fn hybrid_proc_cgroup_lists_each_hierarchy() {
        let entries = parse_proc_cgroup(HYBRID_CGROUP).expect("parses");
        assert_eq!(entries.len(), 10);
        let memory = entries
            .iter()
            .find(|e| e.controllers == ["memory"])
            .expect("memory line");
        assert_eq!(memory.hierarchy_id, 4);
        assert_eq!(memory.path, "/process_api/18126a8bb1a3cd564a319d927452652c");
        let unified = entries
            .iter()
            .find(|e| e.hierarchy_id == 0)
            .expect("v2 line");
        assert!(unified.controllers.is_empty());
        assert_eq!(unified.path, "/");
    }

    #[test]
    fn proc_cgroup_keeps_colons_in_paths_and_rejects_garbage() {
        let entries = parse_proc_cgroup("0::/a:b/c\n3:cpu,cpuacct:/x\n").expect("parses");
        assert_eq!(entries.first().map(|e| e.path.as_str()), Some("/a:b/c"));
        assert_eq!(entries.get(1).map(|e| e.controllers.len()), Some(2));
        assert_eq!(
            parse_proc_cgroup("0::/\nx:memory:/\n").map_err(|(l, _)| l),
            Err(2)
        );
        assert_eq!(parse_proc_cgroup("0:/\n").map_err(|(l, _)| l), Err(1));
        assert_eq!(
            parse_proc_cgroup("0::relative\n").map_err(|(l, _)| l),
            Err(1)
        );
    }

    #[test]
    fn relative_paths_respect_mount_roots() {
        assert_eq!(relative_to_root("/", "/"), Some(""));
        assert_eq!(relative_to_root("/a/b", "/"), Some("a/b"));
        assert_eq!(relative_to_root("/docker/ab", "/docker/ab"), Some(""));
        assert_eq!(relative_to_root("/docker/ab/c", "/docker/ab"), Some("c"));
        assert_eq!(relative_to_root("/docker/abc", "/docker/ab"), None);
        assert_eq!(relative_to_root("/other", "/docker/ab"), None);
    }

    #[test]
    fn counters_parse_from_kernel_text() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_keyed_u64(events, "oom_kill"), Ok(2));
        assert_eq!(parse_keyed_u64(events, "max"), Ok(12));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_keyed_u64(oom_control, "oom_kill"), Ok(7));
        let cpu_stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(parse_keyed_u64(cpu_stat, "usage_usec"), Ok(1_234_567));
        assert!(parse_keyed_u64(cpu_stat, "nr_periods").is_err());
        assert!(
            parse_keyed_u64("max x\n", "max")
                .expect_err("bad")
                .contains("\"x\"")
        );
        assert_eq!(parse_single_u64("33554432\n"), Ok(33_554_432));
        assert!(parse_single_u64("max\n").is_err());
        assert_eq!(parse_pids("12\n13\n"), Ok(vec![12, 13]));
        assert_eq!(parse_pids(""), Ok(vec![]));
        assert!(parse_pids("12\nabc\n").is_err());
        assert_eq!(
            parse_controller_list("cpu io memory pids\n"),
            ["cpu", "io", "memory", "pids"]
        );
    }
}
