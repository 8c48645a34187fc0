//! Whether a repository may be used with a token: its local configuration, read without the
//! token, may only hold keys from a small allowlist (and `authed.rs` trusts a remote *name*
//! only when it points at the sandbox's recorded `git_repo`).
//!
//! The sandbox's `.git/config` is written by whatever ran in the sandbox before (caller code,
//! a cloned repository's scripts), so it is treated as hostile: `include.path`, `url.*.insteadOf`,
//! `http.*` (proxies, certificates, headers), `remote.*.pushurl`, filter drivers, `core.*`
//! commands and anything else not listed could send the request elsewhere or run a program while
//! git holds the token. Jobs of one sandbox run one at a time and no process of an earlier job
//! outlives it, so the configuration cannot change between this check and the run it guards.

use super::refs::is_remote_name;

/// The local configuration of a repository, as `git config --local --no-includes --null
/// --list` prints it (section and key names lowercased, subsections as written).
#[derive(Debug, Default)]
pub(super) struct LocalConfig {
    entries: Vec<(String, String)>,
}

impl LocalConfig {
    pub fn parse(listing: &str) -> LocalConfig {
        let entries = listing
            .split('\0')
            .filter(|e| !e.is_empty())
            .map(|e| match e.split_once('\n') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                // A key without `=` (a boolean that is simply true).
                None => (e.to_string(), String::new()),
            })
            .collect();
        LocalConfig { entries }
    }

    /// The first key outside the allowlist, if any.
    pub fn disallowed_key(&self) -> Option<&str> {
        self.entries
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !allowed(k))
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value git uses for a single-valued `key` (the last one).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.all(key).last().copied()
    }
}

/// Whether a local configuration key is harmless while a token is present: repository format,
/// remotes' URLs and refspecs (by plain names; a URL as subsection could configure the
/// anonymous remote of a URL), branches' upstreams, identity and pull/push defaults.
fn allowed(key: &str) -> bool {
    let Some((section, rest)) = key.split_once('.') else {
        return false;
    };
    let (subsection, name) = match rest.rsplit_once('.') {
        Some((sub, name)) => (Some(sub), name),
        None => (None, rest),
    };
    match (section, subsection, name) {
        (
            "core",
            None,
            "repositoryformatversion"
            | "filemode"
            | "bare"
            | "logallrefupdates"
            | "symlinks"
            | "ignorecase"
            | "precomposeunicode",
        ) => true,
        ("extensions", None, "objectformat" | "refstorage") => true,
        ("remote", Some(remote), "url" | "fetch") => is_remote_name(remote),
        ("branch", Some(_), "remote" | "merge" | "rebase") => true,
        ("user", None, "name" | "email") => true,
        ("pull", None, "rebase" | "ff") | ("push", None, "default") => true,
        ("init", None, "defaultbranch") => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_clone_is_allowed_and_planted_keys_are_not() {
        let fresh = "core.repositoryformatversion\n0\0core.filemode\ntrue\0core.bare\nfalse\0\
            core.logallrefupdates\ntrue\0remote.origin.url\nhttps://h/r.git\0\
            remote.origin.fetch\n+refs/heads/*:refs/remotes/origin/*\0branch.main.remote\n\
            origin\0branch.main.merge\nrefs/heads/main\0";
        let config = LocalConfig::parse(fresh);
        assert_eq!(config.disallowed_key(), None);
        assert_eq!(config.get("remote.origin.url"), Some("https://h/r.git"));
        assert_eq!(config.get("branch.main.merge"), Some("refs/heads/main"));
        for planted in [
            "include.path\n/workspace/x\0",
            "includeif.gitdir:/.path\n/x\0",
            "url.http://evil/.insteadof\nhttps://h/\0",
            "http.proxy\nhttp://evil:1\0",
            "http.https://h/.proxy\nhttp://evil:1\0",
            "http.sslverify\nfalse\0",
            "http.extraheader\nX: 1\0",
            "remote.origin.pushurl\nhttp://evil/r.git\0",
            "remote.https://h/r.git.vcs\nevil\0",
            "filter.spy.smudge\nsh -c id\0",
            "core.attributesfile\n/workspace/a\0",
            "core.fsmonitor\ntrue\0",
            "core.sshcommand\nid\0",
            "credential.helper\nstore\0",
            "extensions.worktreeconfig\ntrue\0",
            "novalue\0",
        ] {
            let config = LocalConfig::parse(&format!("{fresh}{planted}"));
            let key = planted.split(['\n', '\0']).next().unwrap();
            assert_eq!(config.disallowed_key(), Some(key), "{planted:?}");
        }
    }
}
