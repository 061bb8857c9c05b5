//! Version and build information, compiled in by the build script.
//!
//! ```
//! println!("{}", hearsay::build::long_version());
//! assert_eq!(hearsay::build::VERSION, env!("CARGO_PKG_VERSION"));
//! ```
#![deny(unsafe_code)]

/// The package version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the crate was built from: 12 hex digits, `-dirty` appended when the
/// tree had uncommitted changes, or `unknown` when it was not built from a git checkout or
/// a published package that recorded it.
pub const GIT_COMMIT: &str = env!("HEARSAY_GIT_COMMIT");

/// The UTC date of the build, `YYYY-MM-DD` (`SOURCE_DATE_EPOCH` when it was set).
pub const BUILD_DATE: &str = env!("HEARSAY_BUILD_DATE");

/// The target triple, e.g. `x86_64-unknown-linux-gnu`.
pub const TARGET: &str = env!("HEARSAY_TARGET");

/// The cargo profile's base: `debug` or `release`.
pub const PROFILE: &str = env!("HEARSAY_PROFILE");

/// The enabled cargo features of this crate, sorted and comma-separated (empty if none).
pub const FEATURES: &str = env!("HEARSAY_FEATURES");

/// The compiler, as `rustc -V` reports it.
pub const RUSTC: &str = env!("HEARSAY_RUSTC");

/// Every field on its own line, the version first:
///
/// ```text
/// 0.1.0
/// commit:   0123456789ab
/// built:    2026-11-24
/// target:   x86_64-unknown-linux-gnu
/// profile:  release
/// features: agent,sim
/// rustc:    rustc 1.85.0 (4d91de4e4 2025-02-17)
/// ```
pub fn long_version() -> String {
    format!(
        "{VERSION}\ncommit:   {GIT_COMMIT}\nbuilt:    {BUILD_DATE}\ntarget:   {TARGET}\nprofile:  {PROFILE}\nfeatures: {}\nrustc:    {RUSTC}",
        if FEATURES.is_empty() { "none" } else { FEATURES }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_filled_in() {
        assert!(!GIT_COMMIT.is_empty());
        let commit = GIT_COMMIT.trim_end_matches("-dirty");
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{GIT_COMMIT}"
        );
        // YYYY-MM-DD
        let date: Vec<&str> = BUILD_DATE.split('-').collect();
        assert_eq!(date.len(), 3, "{BUILD_DATE}");
        assert!(date[0].len() == 4 && date[1].len() == 2 && date[2].len() == 2);
        assert!(
            date.iter().all(|p| p.parse::<u32>().is_ok()),
            "{BUILD_DATE}"
        );
        assert!(TARGET.contains('-'), "{TARGET}");
        assert!(PROFILE == "debug" || PROFILE == "release", "{PROFILE}");
        assert!(RUSTC.starts_with("rustc "), "{RUSTC}");
        assert_eq!(
            cfg!(feature = "sim"),
            FEATURES.split(',').any(|f| f == "sim")
        );
        let long = long_version();
        assert!(long.starts_with(VERSION));
        assert!(long.contains(GIT_COMMIT) && long.contains(RUSTC));
        assert_eq!(long.lines().count(), 7);
    }
}
