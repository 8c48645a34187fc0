//! Repository URLs from callers: which forms git may use, and the credentials in them.
//!
//! A password or token in a URL (`https://user:token@host/repo.git`) is taken out before the
//! URL is stored anywhere: the URL keeps the user name, the token travels separately (see
//! `secrets.rs`) and reaches git as an HTTP header, never on a command line.

use crate::tools::InvalidInput;

/// A checked repository URL (or local path).
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteUrl {
    /// The URL without its password.
    pub url: String,
    /// The password or token that was in the URL, if any.
    pub password: Option<String>,
}

/// Schemes git may use. `ext::` and other remote helpers (`<transport>::<address>`) run
/// programs and are refused.
const SCHEMES: [&str; 5] = ["https", "http", "ssh", "git", "file"];

/// Checks `input` (a URL, an scp-like `user@host:path`, or a path) and takes its password out.
pub fn parse(field: &str, input: &str) -> Result<RemoteUrl, InvalidInput> {
    let refuse = |why: &str| Err(InvalidInput::field(field, format!("{field}: {why}")));
    if input.trim().is_empty() {
        return refuse("it is empty");
    }
    if input.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if input.chars().any(|c| c.is_control()) {
        return refuse("it contains a control character (such as a newline)");
    }
    if input.contains("::") {
        return refuse("remote helpers (`transport::address`, such as `ext::`) are not allowed");
    }
    let Some((scheme, rest)) = input.split_once("://") else {
        // scp-like `user@host:path` or a local path: no password to take out.
        return Ok(RemoteUrl {
            url: input.to_string(),
            password: None,
        });
    };
    let scheme_lower = scheme.to_ascii_lowercase();
    if !SCHEMES.contains(&scheme_lower.as_str()) {
        return refuse(&format!(
            "the scheme `{scheme}` is not supported; use {}",
            SCHEMES.join(", ")
        ));
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Ok(RemoteUrl {
            url: input.to_string(),
            password: None,
        });
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return Ok(RemoteUrl {
            url: input.to_string(),
            password: None,
        });
    };
    let user_part = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    Ok(RemoteUrl {
        url: format!("{scheme}://{user_part}{host}{path}"),
        password: (!password.is_empty()).then(|| percent_decode(password)),
    })
}

/// `scheme://host[:port]/` of an HTTP(S) URL, to scope a credential header to that server.
pub fn http_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| format!("{scheme}://{host}/"))
}

/// An HTTP(S) URL without its user information, with scheme and host lowercased and without a
/// trailing `/`: two URLs name the same repository when these agree.
fn comparable(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!(
        "{scheme}://{}{}",
        host.to_ascii_lowercase(),
        path.trim_end_matches('/')
    ))
}

/// Whether two HTTP(S) URLs name the same repository (user names and passwords aside).
pub fn same_repository(a: &str, b: &str) -> bool {
    matches!((comparable(a), comparable(b)), (Some(a), Some(b)) if a == b)
}

/// The directory `git clone <url>` creates when given none (git's `git_url_basename`: the last
/// path component without `.git`, or the host without its port). `None` when git could not
/// guess one either, or the guess would not be a plain name.
pub fn clone_directory(url: &str) -> Option<String> {
    let mut rest = url.split_once("://").map_or(url, |(_, r)| r);
    // User information up to the last `@` before the first `/`.
    let host_end = rest.find('/').unwrap_or(rest.len());
    if let Some(at) = rest[..host_end].rfind('@') {
        rest = &rest[at + 1..];
    }
    let mut rest = rest.trim_end_matches(|c: char| c == '/' || c.is_whitespace());
    if let Some(stripped) = rest.strip_suffix("/.git") {
        rest = stripped.trim_end_matches('/');
    }
    if !rest.contains('/') {
        // Only a host: drop a port.
        if let Some((host, port)) = rest.rsplit_once(':') {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                rest = host;
            }
        }
    }
    let last = rest.rsplit(['/', ':']).next().unwrap_or("");
    let name = last.strip_suffix(".git").unwrap_or(last).trim();
    (!name.is_empty() && name != "." && name != ".." && !name.chars().any(char::is_control))
        .then(|| name.to_string())
}

/// The user name in an HTTP(S) URL, if any (`https://user@host/…`).
pub fn user(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next().unwrap_or("");
    (!user.is_empty()).then(|| percent_decode(user))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_taken_out_and_users_kept() {
        let r = parse("u", "https://bob:s3cr%40t@git.example.com:8443/a/b.git").unwrap();
        assert_eq!(r.url, "https://bob@git.example.com:8443/a/b.git");
        assert_eq!(r.password.as_deref(), Some("s3cr@t"));
        let r = parse("u", "https://:tok@host/r").unwrap();
        assert_eq!(r.url, "https://host/r");
        assert_eq!(r.password.as_deref(), Some("tok"));
        let r = parse("u", "https://host/r.git").unwrap();
        assert_eq!(r.password, None);
        assert_eq!(parse("u", "git@github.com:a/b.git").unwrap().password, None);
        assert_eq!(
            parse("u", "/workspace/remote.git").unwrap().url,
            "/workspace/remote.git"
        );
        assert_eq!(
            parse("u", "file:///workspace/r.git").unwrap().password,
            None
        );
    }

    #[test]
    fn dangerous_forms_are_refused() {
        for bad in [
            "",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/x",
            "fd::3",
            "https://host/a\nb",
            "ftp://host/r",
        ] {
            assert_eq!(
                parse("repository_url", bad).unwrap_err().field.as_deref(),
                Some("repository_url"),
                "{bad}"
            );
        }
    }

    #[test]
    fn origins_and_users() {
        assert_eq!(
            http_origin("https://bob@h:1/x").as_deref(),
            Some("https://h:1/")
        );
        assert_eq!(http_origin("ssh://h/x"), None);
        assert_eq!(http_origin("/x"), None);
        assert_eq!(user("https://bob@h/x").as_deref(), Some("bob"));
        assert_eq!(user("https://h/x"), None);
    }

    #[test]
    fn repositories_compare_without_credentials() {
        assert!(same_repository(
            "https://x-access-token@Git.Example.com/a/r.git",
            "https://git.example.com/a/r.git/"
        ));
        assert!(!same_repository(
            "https://git.example.com/a/r.git",
            "https://git.example.com:444/a/r.git"
        ));
        assert!(!same_repository(
            "http://git.example.com/a/r.git",
            "https://git.example.com/a/r.git"
        ));
        assert!(!same_repository("/workspace/r.git", "/workspace/r.git"));
    }

    #[test]
    fn clone_directories_follow_git() {
        for (url, dir) in [
            ("https://h/a/repo.git", Some("repo")),
            ("https://u@h/a/repo.git/", Some("repo")),
            ("https://h/a/repo/.git", Some("repo")),
            ("https://h/a/repo", Some("repo")),
            ("https://h:8443", Some("h")),
            ("https://h/", Some("h")),
            ("https://h/a/..", None),
        ] {
            assert_eq!(clone_directory(url).as_deref(), dir, "{url}");
        }
    }
}
