//! The plain-executable mode: a minimal rootfs assembled around one binary.
//!
//! The rootfs holds `/bin/<name>` (a copy of the executable), for a dynamic executable its ELF
//! interpreter and every shared library it needs transitively, and the declared inputs under
//! `/in`. Libraries are found by parsing PT_INTERP / DT_NEEDED / DT_RUNPATH / DT_RPATH with
//! goblin and searching the loader's default directories, not by running `ldd`: ldd executes the
//! loader on an untrusted file, while parsing only reads it. The cost is that libraries reachable
//! only through /etc/ld.so.cache entries outside the default directories are not found (the
//! error names the library), and dlopen()ed libraries are never copied: declare such a workload
//! as a bundle instead.
//!
//! The executable is untrusted and the copy runs as root: an RPATH/RUNPATH of `/root/.ssh` or
//! a DT_NEEDED of `/etc/shadow` must not copy host files into a cage its author can read. So only
//! [`TRUSTED_LIBRARY_DIRS`] (and directories below them) are ever searched or copied from.
//! RPATH/RUNPATH entries elsewhere (after `$ORIGIN` expansion) are ignored with a warning in
//! [`CageSpec::warnings`] — many real binaries carry a harmless `$ORIGIN/../lib`, and a library
//! that is only there is then reported missing by name; an interpreter or a slash-containing
//! DT_NEEDED outside them is refused.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limits;
use crate::spec::{
    CageCapabilities, CageMount, CagePath, CageProcess, CageResources, CageSpec, DeclaredInput,
    MountKind, Namespaces, OpenedRoot,
};

/// The loader's built-in search path on x86_64 Debian/Ubuntu and most other distributions, in
/// the order ld.so tries them after the object's own RUNPATH; root-owned system directories, the
/// only places libraries are copied from.
pub const TRUSTED_LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why an executable could not be turned into a cage.
#[derive(Debug, thiserror::Error)]
pub enum ExecutableError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable ELF file: {reason}")]
    NotElf { path: PathBuf, reason: String },
    #[error("library `{name}` needed by {needed_by} was not found in {dirs} (RPATH/RUNPATH entries there included)", dirs = TRUSTED_LIBRARY_DIRS.join(", "))]
    LibraryNotFound { name: String, needed_by: PathBuf },
    #[error("{what} {path} of {needed_by} is outside the trusted library directories {dirs}", dirs = TRUSTED_LIBRARY_DIRS.join(", "))]
    UntrustedPath {
        what: &'static str,
        path: String,
        needed_by: PathBuf,
    },
    #[error("more than {max} shared libraries are needed", max = limits::EXECUTABLE_LIBRARIES_COUNT_MAX)]
    TooManyLibraries,
    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("cannot assemble the rootfs at {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

struct ElfDeps {
    interpreter: Option<String>,
    needed: Vec<String>,
    /// RPATH/RUNPATH entries inside the trusted directories, `$ORIGIN` expanded.
    runpaths: Vec<String>,
    /// Entries that were not, for the warning.
    ignored_runpaths: Vec<String>,
}

/// Whether `path` is one of [`TRUSTED_LIBRARY_DIRS`] or below one, judged on its components: it
/// must be absolute and hold no `..` (a `/usr/lib/../../tmp` is not below /usr/lib).
pub fn is_trusted_library_path(path: &Path) -> bool {
    use std::path::Component;
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    TRUSTED_LIBRARY_DIRS
        .iter()
        .any(|dir| path.starts_with(Path::new(dir)))
}

fn read_elf_deps(path: &Path) -> Result<ElfDeps, ExecutableError> {
    let read_error = |source| ExecutableError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > limits::ELF_SIZE_BYTES_MAX {
        return Err(ExecutableError::NotElf {
            path: path.to_path_buf(),
            reason: format!("larger than {} bytes", limits::ELF_SIZE_BYTES_MAX),
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits::ELF_SIZE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|error| ExecutableError::NotElf {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    if elf.header.e_machine != goblin::elf::header::EM_X86_64 || !elf.is_64 {
        return Err(ExecutableError::NotElf {
            path: path.to_path_buf(),
            reason: "not an x86_64 ELF file".to_owned(),
        });
    }
    let origin = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (runpaths, ignored_runpaths) = elf
        .runpaths
        .iter()
        .chain(elf.rpaths.iter())
        .flat_map(|list| list.split(':'))
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            dir.replace("$ORIGIN", &origin)
                .replace("${ORIGIN}", &origin)
        })
        .partition(|dir| is_trusted_library_path(Path::new(dir)));
    Ok(ElfDeps {
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        runpaths,
        ignored_runpaths,
    })
}

/// Finds DT_NEEDED `name` in the (already trusted) RUNPATH entries, then the trusted
/// directories. A name with a slash is used as a path, and only inside the trusted directories.
fn find_library(
    name: &str,
    runpaths: &[String],
    needed_by: &Path,
) -> Result<Option<PathBuf>, ExecutableError> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !is_trusted_library_path(&path) {
            return Err(ExecutableError::UntrustedPath {
                what: "DT_NEEDED",
                path: name.to_owned(),
                needed_by: needed_by.to_path_buf(),
            });
        }
        return Ok(path.is_file().then_some(path));
    }
    Ok(runpaths
        .iter()
        .map(String::as_str)
        .chain(TRUSTED_LIBRARY_DIRS)
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file()))
}

/// Copies `source` (following symlinks) to `rootfs/<cage_path>` with `mode`, creating parents.
fn install_file(
    rootfs: &Path,
    cage_path: &Path,
    source: &Path,
    mode: u32,
) -> Result<(), ExecutableError> {
    let relative = cage_path.strip_prefix("/").unwrap_or(cage_path);
    let target = rootfs.join(relative);
    let write_error = |source| ExecutableError::Write {
        path: target.clone(),
        source,
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(write_error)?;
    }
    fs::copy(source, &target).map_err(|error| ExecutableError::Read {
        path: source.to_path_buf(),
        source: error,
    })?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(write_error)?;
    Ok(())
}

impl CageSpec {
    /// Builds a cage around a plain executable: `/bin/<file name>` runs with `args` (after
    /// argv[0]) and exactly `env`; each input is copied read-only to `/in/<name>`. The rootfs is
    /// read-only; `/tmp` is a tmpfs; limits are [`limits::EXECUTABLE_MEMORY_LIMIT_BYTES`] and
    /// [`limits::EXECUTABLE_PIDS_LIMIT`]. The assembled rootfs lives in a temporary directory
    /// removed when the last clone of the returned spec is dropped.
    pub fn from_executable(
        path: &Path,
        args: &[String],
        env: &[String],
        inputs: &[DeclaredInput],
    ) -> Result<CageSpec, ExecutableError> {
        let executable = fs::canonicalize(path).map_err(|source| ExecutableError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ExecutableError::NotElf {
                path: executable.clone(),
                reason: "has no file name".to_owned(),
            })?;
        check_strings(args, env)?;
        check_inputs(inputs)?;

        let dir = tempfile::Builder::new()
            .prefix("docklock-rootfs-")
            .tempdir()
            .map_err(|source| ExecutableError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let rootfs = dir.path().to_path_buf();
        for sub in ["bin", "proc", "tmp", "dev", "in", "out", "etc"] {
            let sub_path = rootfs.join(sub);
            fs::create_dir_all(&sub_path).map_err(|source| ExecutableError::Write {
                path: sub_path.clone(),
                source,
            })?;
        }
        fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)).map_err(|source| {
            ExecutableError::Write {
                path: rootfs.clone(),
                source,
            }
        })?;

        let cage_exe = format!("/bin/{name}");
        install_file(&rootfs, Path::new(&cage_exe), &executable, 0o555)?;
        let warnings = copy_dependencies(&rootfs, &executable)?;
        for input in inputs {
            let size = fs::metadata(&input.source)
                .map_err(|source| ExecutableError::Read {
                    path: input.source.clone(),
                    source,
                })?
                .len();
            if size > limits::EXECUTABLE_INPUT_SIZE_BYTES_MAX {
                return Err(ExecutableError::Input {
                    name: input.name.clone(),
                    reason: format!(
                        "{size} bytes is more than {}",
                        limits::EXECUTABLE_INPUT_SIZE_BYTES_MAX
                    ),
                });
            }
            install_file(
                &rootfs,
                &Path::new("/in").join(&input.name),
                &input.source,
                0o444,
            )?;
        }

        // Our own fresh directory, opened once like a bundle's rootfs so that the launcher works
        // from the fd.
        let rootfs_fd =
            crate::host::open_dir_nofollow(&rootfs).map_err(|errno| ExecutableError::Read {
                path: rootfs.clone(),
                source: errno.into(),
            })?;
        let cage_path = |p: &str| {
            CagePath::parse(p).map_err(|reason| ExecutableError::Invalid {
                field: p.to_owned(),
                reason,
            })
        };
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(cage_exe.clone());
        argv.extend(args.iter().cloned());
        Ok(CageSpec {
            oci_version: "1.2.0".to_owned(),
            rootfs,
            rootfs_readonly: true,
            process: CageProcess {
                args: argv,
                env: env.to_vec(),
                cwd: cage_path("/")?,
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
                umask: None,
                capabilities: CageCapabilities::default(),
                rlimits: Vec::new(),
            },
            hostname: Some("docklock".to_owned()),
            mounts: vec![
                CageMount {
                    destination: cage_path("/proc")?,
                    kind: MountKind::Proc,
                    set_flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    clear_flags: 0,
                    data: String::new(),
                },
                CageMount {
                    destination: cage_path("/tmp")?,
                    kind: MountKind::Tmpfs,
                    set_flags: libc::MS_NOSUID | libc::MS_NODEV,
                    clear_flags: 0,
                    data: "mode=1777,size=64m".to_owned(),
                },
            ],
            namespaces: Namespaces::DEFAULT,
            uid_mappings: Vec::new(),
            gid_mappings: Vec::new(),
            resources: CageResources {
                memory_limit_bytes: Some(limits::EXECUTABLE_MEMORY_LIMIT_BYTES),
                pids_max: Some(limits::EXECUTABLE_PIDS_LIMIT),
                ..CageResources::default()
            },
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            annotations: BTreeMap::new(),
            inputs: inputs.to_vec(),
            config_digest: exec_agreement_digest(&cage_exe, args),
            warnings,
            bundle_dir: None,
            opened: Some(Arc::new(OpenedRoot {
                bundle: None,
                rootfs: rootfs_fd,
            })),
            owned_rootfs: Some(Arc::new(dir)),
        })
    }
}

/// The plain-executable mode has no config.json: the receipt's agreement field is a digest of
/// what stands in for it, the program's cage path and its arguments (length-prefixed, so no two
/// argument lists collide). The program's bytes, libraries and inputs are covered by the rootfs
/// digest and the environment by env_root.
fn exec_agreement_digest(program: &str, args: &[String]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"metanode docklock exec agreement v1\0");
    for part in std::iter::once(program).chain(args.iter().map(String::as_str)) {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

fn check_strings(args: &[String], env: &[String]) -> Result<(), ExecutableError> {
    let invalid = |field: String, reason: String| ExecutableError::Invalid { field, reason };
    if args.len() + 1 > limits::ARGS_COUNT_MAX {
        return Err(invalid(
            "args".into(),
            format!("more than {} arguments", limits::ARGS_COUNT_MAX),
        ));
    }
    for (index, arg) in args.iter().enumerate() {
        if arg.len() > limits::ARG_BYTES_MAX || arg.contains('\0') {
            return Err(invalid(
                format!("args[{index}]"),
                "too long or contains a NUL byte".into(),
            ));
        }
    }
    if env.len() > limits::ENV_COUNT_MAX {
        return Err(invalid(
            "env".into(),
            format!("more than {} entries", limits::ENV_COUNT_MAX),
        ));
    }
    for (index, entry) in env.iter().enumerate() {
        let key_ok = entry.split_once('=').is_some_and(|(k, _)| !k.is_empty());
        if !key_ok || entry.len() > limits::ENV_ENTRY_BYTES_MAX || entry.contains('\0') {
            return Err(invalid(
                format!("env[{index}]"),
                format!("`{entry}` is not KEY=value"),
            ));
        }
    }
    Ok(())
}

fn check_inputs(inputs: &[DeclaredInput]) -> Result<(), ExecutableError> {
    if inputs.len() > limits::EXECUTABLE_INPUTS_COUNT_MAX {
        return Err(ExecutableError::Invalid {
            field: "inputs".into(),
            reason: format!("more than {} inputs", limits::EXECUTABLE_INPUTS_COUNT_MAX),
        });
    }
    for (index, input) in inputs.iter().enumerate() {
        let name = &input.name;
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
            || name.len() > 255
        {
            return Err(ExecutableError::Input {
                name: name.clone(),
                reason: "an input name must be one path component".into(),
            });
        }
        if inputs[..index].iter().any(|other| &other.name == name) {
            return Err(ExecutableError::Input {
                name: name.clone(),
                reason: "declared twice".into(),
            });
        }
    }
    Ok(())
}

/// Copies the interpreter and the transitive DT_NEEDED closure of `executable` into `rootfs`,
/// each at the path the loader will look for it. Returns the warnings for ignored RPATH/RUNPATH
/// entries.
fn copy_dependencies(rootfs: &Path, executable: &Path) -> Result<Vec<String>, ExecutableError> {
    let mut warnings = Vec::new();
    let mut warn_ignored = |deps: &ElfDeps, object: &Path| {
        for dir in &deps.ignored_runpaths {
            warnings.push(format!(
                "ignored RPATH/RUNPATH entry {dir} of {}: only {} are searched",
                object.display(),
                TRUSTED_LIBRARY_DIRS.join(", ")
            ));
        }
    };
    let deps = read_elf_deps(executable)?;
    warn_ignored(&deps, executable);
    let Some(interpreter) = deps.interpreter.clone() else {
        // Static: nothing else to copy. (A static-pie has no PT_INTERP either.)
        return Ok(warnings);
    };
    let interpreter_path = PathBuf::from(&interpreter);
    if !is_trusted_library_path(&interpreter_path) {
        return Err(ExecutableError::UntrustedPath {
            what: "ELF interpreter",
            path: interpreter,
            needed_by: executable.to_path_buf(),
        });
    }
    install_file(rootfs, &interpreter_path, &interpreter_path, 0o555)?;

    let mut copied: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut queue: VecDeque<(String, Vec<String>, PathBuf)> = deps
        .needed
        .into_iter()
        .map(|name| (name, deps.runpaths.clone(), executable.to_path_buf()))
        .collect();
    while let Some((name, runpaths, needed_by)) = queue.pop_front() {
        if copied.contains_key(&name) {
            continue;
        }
        if copied.len() >= limits::EXECUTABLE_LIBRARIES_COUNT_MAX {
            return Err(ExecutableError::TooManyLibraries);
        }
        let found = find_library(&name, &runpaths, &needed_by)?.ok_or_else(|| {
            ExecutableError::LibraryNotFound {
                name: name.clone(),
                needed_by: needed_by.clone(),
            }
        })?;
        // The interpreter is often also listed as needed (libc needs ld-linux): copying it again
        // to its library-directory path is harmless and keeps the search simple.
        install_file(rootfs, &found, &found, 0o555)?;
        let lib_deps = read_elf_deps(&found)?;
        warn_ignored(&lib_deps, &found);
        for next in lib_deps.needed.iter() {
            if !copied.contains_key(next) {
                queue.push_back((next.clone(), lib_deps.runpaths.clone(), found.clone()));
            }
        }
        copied.insert(name, found);
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_library_paths_are_judged_by_component() {
        assert!(is_trusted_library_path(Path::new(
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        )));
        assert!(is_trusted_library_path(Path::new("/lib64")));
        assert!(!is_trusted_library_path(Path::new("/usr/lib/../../tmp/x")));
        assert!(!is_trusted_library_path(Path::new("/usr/libexec/x")));
        assert!(!is_trusted_library_path(Path::new("/tmp/evil")));
        assert!(!is_trusted_library_path(Path::new("lib/x")));
    }

    /// Compiles `source` with `cc` and `flags` into `dir/name`; None when no C compiler exists.
    fn cc(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Option<PathBuf> {
        let src = dir.join(format!("{name}.c"));
        fs::write(&src, source).expect("write C source");
        let out = dir.join(name);
        // Spawning forks: held so that a store test beside it never sees its
        // LOCK fd kept open by this child until its exec (see lib.rs).
        let _forking = crate::test_fork_guard();
        let status = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(flags)
            .status()
            .ok()?;
        assert!(status.success(), "cc {name} failed");
        Some(out)
    }

    /// A real ELF whose RUNPATH names an attacker directory (and $ORIGIN): the entries are
    /// ignored with warnings and nothing from that directory is copied; a library that only
    /// exists there is reported missing instead of copied.
    #[test]
    fn untrusted_runpaths_are_ignored_with_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let evil = dir.path().join("evil");
        fs::create_dir(&evil).expect("mkdir");
        let evil_text = evil.to_str().expect("utf-8");
        let Some(_) = cc(
            &evil,
            "libsecret.so",
            "int secret(void) { return 42; }\n",
            &["-shared", "-fPIC"],
        ) else {
            eprintln!("skipping: no C compiler (cc)");
            return;
        };
        // A plain program (needs only libc) with the attacker's directory in its RUNPATH and
        // a libc.so.6 planted there: the system libc is copied, the planted one never.
        fs::write(evil.join("libc.so.6"), b"planted, not a library").expect("plant");
        let rpath = format!("-Wl,-rpath,{evil_text}:$ORIGIN/lib");
        let plain = cc(
            dir.path(),
            "plain",
            "int main(void) { return 0; }\n",
            &[&rpath],
        )
        .expect("cc");
        let spec = CageSpec::from_executable(&plain, &[], &[], &[]).expect("plain becomes a cage");
        assert_eq!(spec.warnings.len(), 2, "{:?}", spec.warnings);
        assert!(
            spec.warnings[0].starts_with(&format!("ignored RPATH/RUNPATH entry {evil_text} of ")),
            "{:?}",
            spec.warnings
        );
        assert!(
            spec.warnings[1].starts_with(&format!(
                "ignored RPATH/RUNPATH entry {}/lib of ",
                dir.path().display()
            )),
            "{:?}",
            spec.warnings
        );
        assert!(
            !spec
                .rootfs
                .join(evil.strip_prefix("/").expect("absolute"))
                .exists(),
            "the attacker's directory was copied into the rootfs"
        );
        // The libc copied is a real ELF from a trusted directory.
        let copied_libc = TRUSTED_LIBRARY_DIRS
            .iter()
            .map(|d| {
                spec.rootfs
                    .join(d.trim_start_matches('/'))
                    .join("libc.so.6")
            })
            .find(|p| p.exists())
            .expect("libc copied from a trusted directory");
        assert_eq!(
            fs::read(copied_libc).expect("read").get(..4),
            Some(&b"\x7fELF"[..])
        );

        // A program needing a library that only the attacker's directory has: refused by name.
        let needy = cc(
            dir.path(),
            "needy",
            "int secret(void); int main(void) { return secret(); }\n",
            &[&format!("-L{evil_text}"), "-lsecret", &rpath],
        )
        .expect("cc");
        match CageSpec::from_executable(&needy, &[], &[], &[]) {
            Err(ExecutableError::LibraryNotFound { name, needed_by }) => {
                assert_eq!(name, "libsecret.so");
                assert_eq!(needed_by, fs::canonicalize(&needy).expect("canonical"));
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }
    }
}
