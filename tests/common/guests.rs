//! The example guests (`examples/*/build.sh`), built with the system's
//! rustc for the end-to-end tests that run them.
//!
//! They need a rustc with the wasm32-wasi standard library (Debian:
//! `apt-get install rustc libstd-rust-dev-wasm32`). Without one a test is
//! skipped with a note, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Site;

/// build.sh's exit status when no rustc has the wasm32-wasi standard library.
const NO_TOOLCHAIN: i32 = 3;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A bundle folder made by an example's build.sh: the module and process.yaml.
pub struct BuiltBundle {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Runs `examples/<example>/build.sh` into a temporary bundle folder
/// named `name`; `None` when the machine cannot build WebAssembly guests
/// (and `CI` is not set).
pub fn build(example: &str, name: &str) -> Option<BuiltBundle> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    let script = repo().join("examples").join(example).join("build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&path)
        .output()
        .expect("bash runs build.sh");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Some(BuiltBundle { _dir: dir, path }),
        Some(NO_TOOLCHAIN) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED: cannot build examples/{example}: no rustc with the wasm32-wasi \
                 standard library (apt-get install rustc libstd-rust-dev-wasm32):\n{output}"
            );
            None
        }
        Some(NO_TOOLCHAIN) => panic!(
            "CI is set but examples/{example} cannot be built: no rustc with the wasm32-wasi \
             standard library; install it with `apt-get install rustc libstd-rust-dev-wasm32`:\n{output}"
        ),
        _ => panic!("{} failed ({}):\n{output}", script.display(), out.status),
    }
}

impl BuiltBundle {
    /// Deploys the bundle as built (its process.yaml is the example's) into `site`.
    pub fn deploy(&self, site: &Site, name: &str) {
        for entry in std::fs::read_dir(&self.path).expect("bundle folder") {
            let entry = entry.expect("bundle entry");
            let file = entry.file_name();
            let file = file.to_str().expect("UTF-8 file name");
            let content = std::fs::read(entry.path()).expect("bundle file");
            site.deploy_file(name, file, &content);
        }
    }
}
