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

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limits;
use crate::spec::{
    CageCapabilities, CageMount, CagePath, CageProcess, CageResources, CageSpec, DeclaredInput,
    MountKind, Namespaces,
};

/// The loader's built-in search path on x86_64 Debian/Ubuntu and most other distributions, in
/// the order ld.so tries them after the object's own RUNPATH.
const LIBRARY_DIRS: [&str; 6] = [
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
    #[error("library `{name}` needed by {needed_by} was not found in its RUNPATH or {dirs}", dirs = LIBRARY_DIRS.join(", "))]
    LibraryNotFound { name: String, needed_by: PathBuf },
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
    runpaths: Vec<String>,
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
    let runpaths = elf
        .runpaths
        .iter()
        .chain(elf.rpaths.iter())
        .flat_map(|list| list.split(':'))
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            dir.replace("$ORIGIN", &origin)
                .replace("${ORIGIN}", &origin)
        })
        .collect();
    Ok(ElfDeps {
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        runpaths,
    })
}

fn find_library(name: &str, runpaths: &[String]) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    runpaths
        .iter()
        .map(String::as_str)
        .chain(LIBRARY_DIRS)
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
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
        copy_dependencies(&rootfs, &executable)?;
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
/// each at the path the loader will look for it.
fn copy_dependencies(rootfs: &Path, executable: &Path) -> Result<(), ExecutableError> {
    let deps = read_elf_deps(executable)?;
    let Some(interpreter) = deps.interpreter.clone() else {
        // Static: nothing else to copy. (A static-pie has no PT_INTERP either.)
        return Ok(());
    };
    let interpreter_path = PathBuf::from(&interpreter);
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
        let found =
            find_library(&name, &runpaths).ok_or_else(|| ExecutableError::LibraryNotFound {
                name: name.clone(),
                needed_by: needed_by.clone(),
            })?;
        // The interpreter is often also listed as needed (libc needs ld-linux): copying it again
        // to its library-directory path is harmless and keeps the search simple.
        install_file(rootfs, &found, &found, 0o555)?;
        let lib_deps = read_elf_deps(&found)?;
        for next in lib_deps.needed {
            if !copied.contains_key(&next) {
                queue.push_back((next, lib_deps.runpaths.clone(), found.clone()));
            }
        }
        copied.insert(name, found);
    }
    Ok(())
}
