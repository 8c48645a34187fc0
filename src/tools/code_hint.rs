//! A hint for `execute_code` calls whose code is a shell command line. Agents copy examples
//! that post `{"code": "python -m pytest"}`: the interpreter answers a bare `SyntaxError`,
//! which does not say that the call itself was the mistake. When the code failed to compile
//! and reads as a command line, the result's `message` says to use `execute_shell` or
//! `language: "bash"`; every other field stays what the interpreter produced.

/// Programs whose name starting a line makes it read as a command line.
const COMMANDS: &[&str] = &[
    "apt", "apt-get", "bash", "bun", "bundle", "cargo", "cat", "cc", "cd", "chmod", "cmake",
    "composer", "cp", "curl", "deno", "docker", "dotnet", "echo", "env", "export", "find", "gcc",
    "gem", "git", "go", "gradle", "grep", "jest", "java", "javac", "kubectl", "ls", "make",
    "mkdir", "mv", "mvn", "node", "npm", "npx", "perl", "php", "pip", "pip3", "pipenv", "pnpm",
    "poetry", "pwd", "pytest", "python", "python3", "rake", "rm", "ruby", "rustc", "sh", "source",
    "tar", "touch", "tox", "tsc", "unzip", "uv", "wget", "which", "yarn",
];

/// Languages whose code already is a command line.
const SHELLS: &[&str] = &["bash", "sh"];

/// Whether `source`, given as `language` code, reads as a shell command line: a few lines,
/// each starting with a known program or a path to one. Cheap; decided before the run.
pub(super) fn reads_as_command_line(language: &str, source: &str) -> bool {
    if SHELLS.contains(&language) {
        return false;
    }
    let lines: Vec<&str> = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    !lines.is_empty() && lines.len() <= 5 && lines.iter().all(|line| starts_with_a_program(line))
}

fn starts_with_a_program(line: &str) -> bool {
    let Some(word) = line.split_whitespace().next() else {
        return false;
    };
    if !word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'+' | b'-'))
    {
        return false;
    }
    let name = word.rsplit('/').next().unwrap_or(word);
    COMMANDS.contains(&name) || word.starts_with("./")
}

/// Whether the interpreter's standard error reports that the code did not compile.
pub(super) fn failed_to_compile(stderr: &str) -> bool {
    let stderr = stderr.to_ascii_lowercase();
    ["syntaxerror", "syntax error", "parse error"]
        .iter()
        .any(|marker| stderr.contains(marker))
}

/// The sentence added to `message`.
pub(super) fn hint(language: &str) -> String {
    format!(
        "the code reads as a shell command line, not {language} source: run it with \
         execute_shell (as `command`), or pass language: \"bash\" to execute_code"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_and_code() {
        for line in [
            "python -m pytest",
            "pytest -q",
            "pip install -r requirements.txt && pytest",
            "./run-tests.sh --fast",
            "/usr/bin/python3 -m pytest",
            "cd app\nnpm test",
        ] {
            assert!(reads_as_command_line("python", line), "{line}");
        }
        for code in [
            "print('hi')",
            "import os",
            "x = 1",
            "def f(:\n    pass",
            "for i in range(3): print(i)",
            "",
        ] {
            assert!(!reads_as_command_line("python", code), "{code}");
        }
        assert!(!reads_as_command_line("bash", "python -m pytest"));
        assert!(!reads_as_command_line("python", &"ls\n".repeat(6)));
    }

    #[test]
    fn compile_failures() {
        assert!(failed_to_compile(
            "  File \"main.py\"\nSyntaxError: invalid syntax"
        ));
        assert!(failed_to_compile("-e:1: syntax error, unexpected"));
        assert!(failed_to_compile("PHP Parse error: syntax error"));
        assert!(!failed_to_compile(
            "NameError: name 'pytest' is not defined"
        ));
    }
}
