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
}
