//! Compiles version and build information into the crate (`hearsay::build`): the git
//! commit, the build date, the target, the profile, the enabled features and the compiler.
//!
//! The commit comes from `.cargo_vcs_info.json` when the crate was built from a published
//! package (cargo writes the commit there when it packages), otherwise from `git` when the
//! sources are a git checkout, otherwise it is `unknown`. The build date honours
//! `SOURCE_DATE_EPOCH`, so reproducible builds get a fixed date.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());

    emit("HEARSAY_GIT_COMMIT", &git_commit(&manifest_dir));
    emit("HEARSAY_BUILD_DATE", &build_date());
    emit(
        "HEARSAY_TARGET",
        &env::var("TARGET").unwrap_or_else(|_| "unknown".into()),
    );
    emit(
        "HEARSAY_PROFILE",
        &env::var("PROFILE").unwrap_or_else(|_| "unknown".into()),
    );
    emit("HEARSAY_FEATURES", &features());
    emit("HEARSAY_RUSTC", &rustc_version());
}

fn emit(name: &str, value: &str) {
    // A value is one line: a newline would end the instruction early.
    let value = value.replace(['\n', '\r'], " ");
    println!("cargo:rustc-env={name}={value}");
}

/// The enabled cargo features, sorted, comma-separated (`CARGO_FEATURE_SIM` → `sim`);
/// `default` itself is left out (the features it enables are listed).
fn features() -> String {
    let mut features: Vec<String> = env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .filter(|f| f != "default")
        .collect();
    features.sort();
    features.join(",")
}

fn rustc_version() -> String {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The commit, 12 hex digits, with `-dirty` when the tree had uncommitted changes.
fn git_commit(manifest_dir: &Path) -> String {
    // A published package: cargo recorded the commit it was packaged from.
    let vcs_info = manifest_dir.join(".cargo_vcs_info.json");
    if let Ok(text) = fs::read_to_string(&vcs_info) {
        println!("cargo:rerun-if-changed={}", vcs_info.display());
        if let Some(sha) = json_string_field(&text, "sha1") {
            let short: String = sha.chars().take(12).collect();
            let dirty = text.contains("\"dirty\": true") || text.contains("\"dirty\":true");
            return if dirty {
                format!("{short}-dirty")
            } else {
                short
            };
        }
        return "unknown".into();
    }
    let Some(git_dir) = find_git_dir(manifest_dir) else {
        return "unknown".into();
    };
    watch_git(&git_dir);
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest_dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty()) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain"]) {
        Some(s) if !s.is_empty() => format!("{commit}-dirty"),
        _ => commit,
    }
}

/// The git directory of the checkout holding `start`: `.git` as a directory, or as a file
/// pointing elsewhere (`gitdir: …`, in worktrees and submodules).
fn find_git_dir(start: &Path) -> Option<PathBuf> {
    for dir in start.ancestors() {
        let dot_git = dir.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        if dot_git.is_file() {
            let text = fs::read_to_string(&dot_git).ok()?;
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            let path = Path::new(target);
            return Some(if path.is_absolute() {
                path.to_path_buf()
            } else {
                dir.join(path)
            });
        }
    }
    None
}

/// Rerun when the commit or the branch changes (HEAD, the ref it names, packed refs) or
/// when files are staged or committed (the index), and not on every build.
fn watch_git(git_dir: &Path) {
    let head = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    println!("cargo:rerun-if-changed={}", git_dir.join("index").display());
    if let Ok(text) = fs::read_to_string(&head) {
        if let Some(reference) = text.trim().strip_prefix("ref:") {
            let reference = reference.trim();
            // In a worktree the branch refs live in the common directory.
            let common = fs::read_to_string(git_dir.join("commondir"))
                .ok()
                .map(|c| git_dir.join(c.trim()))
                .unwrap_or_else(|| git_dir.to_path_buf());
            for base in [git_dir, common.as_path()] {
                let path = base.join(reference);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            let packed = common.join("packed-refs");
            if packed.exists() {
                println!("cargo:rerun-if-changed={}", packed.display());
            }
        }
    }
}

/// The string value of `"field": "value"` in a small JSON document (no escapes in the
/// values this reads: hex digests).
fn json_string_field(text: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\"");
    let rest = &text[text.find(&key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The UTC date of the build, `YYYY-MM-DD`: `SOURCE_DATE_EPOCH` when set, else now.
fn build_date() -> String {
    let secs = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
