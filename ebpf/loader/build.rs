//! Compiles ebpf/xdp/biso.c, floor.c and gen.c with clang-14 into
//! OUT_DIR/{biso,floor,gen}.o, which src/lights.rs, src/floor.rs and
//! src/traffic_gen.rs embed with
//! `aya::include_bytes_aligned!`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const CLANG: &str = "clang-14";
/// (source in ebpf/xdp/, object in OUT_DIR)
const OBJECTS: [(&str, &str); 3] = [
    ("biso.c", "biso.o"),
    ("floor.c", "floor.o"),
    ("gen.c", "gen.o"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let xdp_dir = manifest_dir.join("../xdp");
    println!(
        "cargo:rerun-if-changed={}",
        xdp_dir.join("biso.h").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
    for (source, object) in OBJECTS {
        let source = xdp_dir.join(source);
        println!("cargo:rerun-if-changed={}", source.display());
        compile(&source, &out_dir.join(object));
    }
}

fn compile(source: &Path, out: &Path) {
    let status = Command::new(CLANG)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(out)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{CLANG} failed to compile {} ({status})", source.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "{CLANG} not found: install the Debian packages clang-14 and libbpf-dev \
             (apt-get install clang-14 libbpf-dev) to build the BISO XDP programs"
        ),
        Err(error) => panic!("running {CLANG} on {}: {error}", source.display()),
    }
}
