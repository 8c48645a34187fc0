//! How a command travels through `daytona exec`, whose arguments the CLI joins with spaces
//! into one command line that the sandbox's toolbox splits again (on spaces, honouring `'` and
//! `"` runs, no backslash escapes, empty arguments dropped) and runs without a shell.
//!
//! Nothing of the caller's reaches that line as text: the line is
//! `sh -c '<WRAPPER>' _ x<base64>…`, where `WRAPPER` is a constant script without a single
//! quote and every other token is `x` followed by base64 (letters, digits, `+/=`), which mean
//! the same to the toolbox's splitting and to a POSIX shell. The wrapper decodes its arguments
//! (the working directory, the environment, stdin, a code file, the argv), runs the real argv
//! with stdout and stderr in separate files, and prints one frame: the exit code, the streams'
//! sizes and their first bytes in base64, between the call's nonce. So stdin, the environment
//! and separate stdout/stderr survive the CLI's combined output, and every byte value too.

use base64::Engine;

/// The constant script. No `'` may appear in it (it travels as one single-quoted run).
///
/// Arguments: `$1` nonce, `$2` working directory, `$3` bytes kept per stream, `$4` timeout in
/// seconds, `$5` environment entries, `$6` stdin chunks, `$7` code chunks, `$8` the code
/// file's extension (empty: no code file), then the entries, the chunks and the argv. Every
/// argument is `x` and then base64, except the numbers and the nonce, which are `x` and ASCII.
pub const WRAPPER: &str = r#"set -u
dv() { v=$(printf %s "${1#x}" | base64 -d; printf .); v=${v%.}; }
dw() { printf %s "${1#x}" | base64 -d; }
n=${1#x}; dv "$2"; d=$v; l=${3#x}; s=${4#x}; ne=${5#x}; ni=${6#x}; nc=${7#x}; dv "$8"; e=$v
shift 8
t=$(mktemp -d "/tmp/dmcp.XXXXXXXX") || { printf "\n%s:setup:%s\n" "$n" "$n"; exit 0; }
trap "rm -rf $t /tmp/dmcp-$n.pid" EXIT
: > "$t/in"; : > "$t/code"
i=0; m=$#
while [ "$i" -lt "$m" ]; do
  if [ "$i" -lt "$ne" ]; then dv "$1"; set -- "$@" "$v"
  elif [ "$i" -lt $((ne + ni)) ]; then dw "$1" >> "$t/in"
  elif [ "$i" -lt $((ne + ni + nc)) ]; then dw "$1" >> "$t/code"
  else dv "$1"; set -- "$@" "$v"; fi
  shift; i=$((i + 1))
done
if [ -n "$e" ]; then mv "$t/code" "$t/main.$e"; set -- "$@" "$t/main.$e"; fi
cd "$d" 2>/dev/null || { printf "\n%s:nocwd:%s\n" "$n" "$n"; exit 0; }
b=$(date +%s)
if command -v timeout >/dev/null 2>&1; then
  timeout -k 2 "$s" env -- "$@" < "$t/in" > "$t/out" 2> "$t/err" &
else
  env -- "$@" < "$t/in" > "$t/out" 2> "$t/err" &
fi
p=$!
echo "$p" > "/tmp/dmcp-$n.pid"
wait "$p"; c=$?
a=$(date +%s)
k=0
if [ $((a - b)) -ge "$s" ] && { [ "$c" -eq 124 ] || [ "$c" -eq 137 ]; }; then k=1; fi
o=$(($(wc -c < "$t/out"))); r=$(($(wc -c < "$t/err")))
printf "\n%s:frame:%s:%s:%s:%s:" "$n" "$c" "$k" "$o" "$r"
head -c "$l" "$t/out" | base64 | tr -d "\n"
printf ":"
head -c "$l" "$t/err" | base64 | tr -d "\n"
printf ":%s\n" "$n"
exit 0"#;

/// Kills the process group of the command a wrapper with nonce `$1` started (a cancelled call:
/// the command goes on in the sandbox when only the CLI is killed). Waits a moment for the
/// wrapper to have written its pid file.
pub const KILLER: &str = r#"f=/tmp/dmcp-${1#x}.pid; i=0
while [ ! -s "$f" ] && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$f" ] || exit 0
p=$(cat "$f"); kill -KILL -"$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; exit 0"#;

/// Largest encoded argument (Linux refuses one argument over 128 KiB, on the host for the CLI
/// and in the sandbox for `sh`).
pub const MAX_ARG: usize = 120 * 1024;
/// Raw bytes per stdin or code chunk (their base64 stays under [`MAX_ARG`]).
pub const CHUNK: usize = 64 * 1024;
/// Largest total of the encoded arguments of one call (Linux's `ARG_MAX` is usually 2 MiB,
/// shared with the environment).
pub const MAX_TOTAL: usize = 1024 * 1024;

/// One command for the wrapper.
#[derive(Debug, Default)]
pub struct Wrapped<'a> {
    pub nonce: String,
    pub cwd: &'a str,
    pub output_limit: usize,
    pub timeout_s: u64,
    pub env: Vec<(&'a str, &'a str)>,
    pub stdin: &'a [u8],
    /// The code file's extension and content; its path is appended to the argv.
    pub code: Option<(&'a str, &'a [u8])>,
    pub argv: Vec<&'a [u8]>,
}

/// Why a command cannot be sent.
#[derive(Debug, PartialEq)]
pub enum TooLarge {
    /// One argument (or variable) is over [`MAX_ARG`] once encoded.
    Argument,
    /// Everything together is over [`MAX_TOTAL`].
    Total,
}

fn b64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
    s.push('x');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut s);
    s
}

/// The arguments of `daytona exec … --` for `w`: `sh -c '<WRAPPER>' _ …`.
pub fn command_line(w: &Wrapped) -> Result<Vec<String>, TooLarge> {
    let mut args = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("'{WRAPPER}'"),
        "_".to_string(),
    ];
    let stdin: Vec<&[u8]> = w.stdin.chunks(CHUNK).collect();
    let code: Vec<&[u8]> = w
        .code
        .map(|(_, c)| c.chunks(CHUNK).collect())
        .unwrap_or_default();
    args.push(format!("x{}", w.nonce));
    args.push(b64(w.cwd.as_bytes()));
    args.push(format!("x{}", w.output_limit));
    args.push(format!("x{}", w.timeout_s.max(1)));
    args.push(format!("x{}", w.env.len()));
    args.push(format!("x{}", stdin.len()));
    args.push(format!("x{}", code.len()));
    args.push(b64(w.code.map_or("", |(ext, _)| ext).as_bytes()));
    for (k, v) in &w.env {
        args.push(b64(format!("{k}={v}").as_bytes()));
    }
    args.extend(stdin.iter().map(|c| b64(c)));
    args.extend(code.iter().map(|c| b64(c)));
    args.extend(w.argv.iter().map(|a| b64(a)));
    if args.iter().any(|a| a.len() > MAX_ARG) {
        return Err(TooLarge::Argument);
    }
    if args.iter().map(|a| a.len() + 1).sum::<usize>() > MAX_TOTAL {
        return Err(TooLarge::Total);
    }
    Ok(args)
}

/// The arguments that kill the command of the wrapper with `nonce`.
pub fn killer_line(nonce: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("'{KILLER}'"),
        "_".into(),
        format!("x{nonce}"),
    ]
}

/// What the wrapper reported.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Ran {
        exit_code: i32,
        /// The wrapper's timeout ended the command.
        timed_out: bool,
        stdout_total: u64,
        stderr_total: u64,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// The working directory does not exist.
    NoWorkingDirectory,
    /// The wrapper could not prepare (no temporary directory).
    Setup,
}

/// Finds the frame of `nonce` in the CLI's output (the last one: a command cannot forge the
/// wrapper's, since its own output goes to files, but the toolbox may print around it).
pub fn parse(output: &[u8], nonce: &str) -> Option<Frame> {
    let text = String::from_utf8_lossy(output);
    let start_marker = format!("{nonce}:");
    let end_marker = format!(":{nonce}");
    for line in text.lines().rev() {
        let Some(body) = line
            .trim()
            .strip_prefix(start_marker.as_str())
            .and_then(|rest| rest.strip_suffix(end_marker.as_str()))
        else {
            continue;
        };
        match body {
            "nocwd" => return Some(Frame::NoWorkingDirectory),
            "setup" => return Some(Frame::Setup),
            _ => {}
        }
        let fields: Vec<&str> = body.strip_prefix("frame:")?.split(':').collect();
        let [code, killed, out_total, err_total, out, err] = fields[..] else {
            return None;
        };
        let decode = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
        return Some(Frame::Ran {
            exit_code: code.parse().ok()?,
            timed_out: killed == "1",
            stdout_total: out_total.parse().ok()?,
            stderr_total: err_total.parse().ok()?,
            stdout: decode(out)?,
            stderr: decode(err)?,
        });
    }
    None
}

/// Splits a command line the way the toolbox's `parseCommand` does (for tests: what the sandbox
/// would run).
pub fn toolbox_split(line: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, ' ') => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
            }
            (None, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_has_no_single_quote() {
        assert!(!WRAPPER.contains('\''));
        assert!(!KILLER.contains('\''));
    }

    #[test]
    fn caller_text_never_reaches_the_command_line() {
        let hostile = "it's \"$(touch /tmp/pwned)\" `id` \n -rf ; | & \u{0} é";
        let line = command_line(&Wrapped {
            nonce: "n1".into(),
            cwd: "/home/daytona/workspace/it's",
            output_limit: 10,
            timeout_s: 5,
            env: vec![("K", hostile)],
            stdin: hostile.as_bytes(),
            code: None,
            argv: vec![b"sh", b"-c", hostile.as_bytes()],
        })
        .unwrap();
        let joined = line.join(" ");
        let ours = line[3..].join(" ");
        for needle in ["$(", "`", "touch", "it's", "\n", ";"] {
            assert!(!ours.contains(needle), "{needle:?} in the command line");
        }
        // The toolbox sees exactly the argv we meant: sh, -c, the script, then our tokens.
        let parts = toolbox_split(&joined);
        assert_eq!(parts[0], "sh");
        assert_eq!(parts[2], WRAPPER);
        assert_eq!(parts.len(), line.len());
        for token in &parts[3..] {
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=_".contains(&b)),
                "{token}"
            );
        }
    }

    #[test]
    fn empty_values_survive_the_toolbox_dropping_empty_arguments() {
        let line = command_line(&Wrapped {
            nonce: "n".into(),
            cwd: "/",
            argv: vec![b"printf", b"", b"%s"],
            ..Wrapped::default()
        })
        .unwrap();
        assert_eq!(toolbox_split(&line.join(" ")).len(), line.len());
    }

    #[test]
    fn frames_parse_and_other_output_is_ignored() {
        let out = b"noise\nn9:frame:3:0:2:1:AP8=:eA==:n9\n";
        assert_eq!(
            parse(out, "n9"),
            Some(Frame::Ran {
                exit_code: 3,
                timed_out: false,
                stdout_total: 2,
                stderr_total: 1,
                stdout: vec![0, 255],
                stderr: b"x".to_vec(),
            })
        );
        assert_eq!(parse(out, "other"), None);
        assert_eq!(
            parse(b"\nq:nocwd:q\n", "q"),
            Some(Frame::NoWorkingDirectory)
        );
    }

    #[test]
    fn oversized_arguments_are_refused() {
        let big = vec![b'a'; MAX_ARG];
        let w = Wrapped {
            nonce: "n".into(),
            cwd: "/",
            argv: vec![&big],
            ..Wrapped::default()
        };
        assert_eq!(command_line(&w), Err(TooLarge::Argument));
    }
}
