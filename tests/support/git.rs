//! Repositories on the host for the git tests of both test binaries (`api`, `driver`).

use std::path::Path;
use std::process::Command;

/// Runs git on the host (to seed and read back repositories), failing the test on error.
pub fn host_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(["-c", "init.defaultBranch=main", "-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository at `bare` with one commit on `main` holding `README.md`.
pub fn seed_bare_repo(bare: &Path) {
    std::fs::create_dir_all(bare).unwrap();
    host_git(bare, &["init", "--bare", "--quiet"]);
    let work = tempfile::tempdir().unwrap();
    host_git(work.path(), &["init", "--quiet"]);
    std::fs::write(work.path().join("README.md"), "# seeded\n").unwrap();
    host_git(work.path(), &["add", "README.md"]);
    host_git(work.path(), &["commit", "--quiet", "-m", "initial commit"]);
    host_git(
        work.path(),
        &[
            "push",
            "--quiet",
            bare.to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );
    host_git(bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    // Sandboxed commands (uid 1000 under the local driver) must be able to push into it.
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(bare)
        .status()
        .unwrap();
}
