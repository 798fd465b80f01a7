//! The architecture invariants that the dependency graph can show (ARCHITECTURE.md): gracenet
//! knows nothing of any runtime, and gracenet and gracedown know nothing of each other or of
//! HTTP. Read from `cargo tree`, as cargo resolves it for each crate alone.

use std::path::Path;
use std::process::Command;

/// The packages in `package`'s dependency graph (normal dependencies, to `depth` levels, or all
/// of them), by name.
fn dependencies(package: &str, depth: Option<u32>) -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&workspace).args([
        "tree",
        "--frozen",
        "--package",
        package,
        "--edges",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    if let Some(depth) = depth {
        cmd.args(["--depth", &depth.to_string()]);
    }
    let out = cmd.output().expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_none_of(package: &str, deps: &[String], forbidden: &[&str]) {
    let found: Vec<&&str> = forbidden
        .iter()
        .filter(|f| deps.iter().any(|d| d == **f))
        .collect();
    assert!(found.is_empty(), "{package} depends on {found:?}: {deps:?}");
}

#[test]
fn gracenet_depends_on_no_runtime_and_on_no_other_crate_of_the_workspace() {
    let deps = dependencies("gracenet", None);
    assert!(deps.iter().any(|d| d == "socket2"), "{deps:?}");
    assert_none_of(
        "gracenet",
        &deps,
        &[
            "tokio",
            "mio",
            "async-io",
            "futures-util",
            "gracedown",
            "gracehttp",
            "hyper",
        ],
    );
}

#[test]
fn gracedown_knows_nothing_of_descriptors_http_or_gracenet() {
    let direct = dependencies("gracedown", Some(1));
    assert!(direct.iter().any(|d| d == "tokio"), "{direct:?}");
    assert_none_of(
        "gracedown",
        &direct,
        &[
            "gracenet",
            "gracehttp",
            "hyper",
            "http",
            "libc",
            "nix",
            "socket2",
        ],
    );
    assert_none_of(
        "gracedown",
        &dependencies("gracedown", None),
        &["gracenet", "hyper"],
    );
}
