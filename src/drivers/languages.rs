//! Interpreters for `execute_code`: which program runs which language. The local driver finds
//! them on the sandbox's `PATH` ([`resolve`]); the daytona driver names the first candidate and
//! lets the sandbox's `PATH` find it ([`first_candidate`]). Code always travels as a file the
//! interpreter reads, never on a command line.

use std::path::{Path, PathBuf};

use crate::drivers::DriverError;

/// One language: the names callers may use, the interpreters to try in order, the file
/// extension the interpreter expects.
struct Language {
    names: &'static [&'static str],
    candidates: &'static [(&'static str, &'static [&'static str])],
    extension: &'static str,
}

const LANGUAGES: &[Language] = &[
    Language {
        names: &["python", "python3", "py"],
        candidates: &[("python3", &[]), ("python", &[])],
        extension: "py",
    },
    Language {
        names: &["javascript", "js", "node", "nodejs"],
        candidates: &[("node", &[]), ("nodejs", &[])],
        extension: "js",
    },
    Language {
        names: &["typescript", "ts"],
        candidates: &[
            ("tsx", &[]),
            ("ts-node", &[]),
            ("deno", &["run", "--quiet"]),
            ("bun", &["run"]),
        ],
        extension: "ts",
    },
    Language {
        names: &["bash"],
        candidates: &[("bash", &[])],
        extension: "sh",
    },
    Language {
        names: &["sh", "shell"],
        candidates: &[("sh", &[])],
        extension: "sh",
    },
    Language {
        names: &["ruby", "rb"],
        candidates: &[("ruby", &[])],
        extension: "rb",
    },
    Language {
        names: &["perl", "pl"],
        candidates: &[("perl", &[])],
        extension: "pl",
    },
    Language {
        names: &["php"],
        candidates: &[("php", &[])],
        extension: "php",
    },
    Language {
        names: &["go", "golang"],
        candidates: &[("go", &["run"])],
        extension: "go",
    },
    Language {
        names: &["lua"],
        candidates: &[("lua", &[]), ("lua5.4", &[]), ("lua5.3", &[])],
        extension: "lua",
    },
    Language {
        names: &["r"],
        candidates: &[("Rscript", &[])],
        extension: "R",
    },
];

/// A resolved interpreter: the program (absolute path), its fixed arguments, and the extension
/// for the code file.
#[derive(Clone, Debug, PartialEq)]
pub struct Interpreter {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub extension: &'static str,
}

/// Every language name the driver knows, for error messages and schemas.
pub fn known() -> Vec<&'static str> {
    LANGUAGES.iter().map(|l| l.names[0]).collect()
}

/// The first name of the language `language` names (`py` → `python`), if any.
pub fn canonical(language: &str) -> Option<&'static str> {
    let wanted = language.to_ascii_lowercase();
    LANGUAGES
        .iter()
        .find(|l| l.names.contains(&wanted.as_str()))
        .map(|l| l.names[0])
}

/// Whether `language` is a name the driver knows (available or not).
pub fn is_known(language: &str) -> bool {
    let wanted = language.to_ascii_lowercase();
    LANGUAGES.iter().any(|l| l.names.contains(&wanted.as_str()))
}

/// The first interpreter of `language` (its program name, fixed arguments and the extension of
/// the code file), for drivers that cannot look into the sandbox's `PATH` beforehand.
pub fn first_candidate(
    language: &str,
) -> Result<(&'static str, &'static [&'static str], &'static str), DriverError> {
    let wanted = language.to_ascii_lowercase();
    LANGUAGES
        .iter()
        .find(|l| l.names.contains(&wanted.as_str()))
        .map(|l| (l.candidates[0].0, l.candidates[0].1, l.extension))
        .ok_or_else(|| {
            DriverError::invalid(
                "language",
                format!(
                    "unsupported language `{language}`; supported: {}",
                    known().join(", ")
                ),
            )
        })
}

/// Finds the interpreter for `language` in `path_dirs`.
pub fn resolve(language: &str, path_dirs: &[PathBuf]) -> Result<Interpreter, DriverError> {
    let wanted = language.to_ascii_lowercase();
    let Some(lang) = LANGUAGES
        .iter()
        .find(|l| l.names.contains(&wanted.as_str()))
    else {
        return Err(DriverError::invalid(
            "language",
            format!(
                "unsupported language `{language}`; supported: {}",
                known().join(", ")
            ),
        ));
    };
    for (program, args) in lang.candidates {
        if let Some(found) = find_program(program, path_dirs) {
            return Ok(Interpreter {
                program: found,
                args: args.iter().map(|s| s.to_string()).collect(),
                extension: lang.extension,
            });
        }
    }
    let tried: Vec<&str> = lang.candidates.iter().map(|(p, _)| *p).collect();
    Err(DriverError::Unsupported(format!(
        "language `{language}` is not available in this sandbox: none of {} is installed",
        tried.join(", ")
    )))
}

/// The first executable file named `name` in `dirs`.
pub fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| d.join(name)).find(|p| {
        Path::new(p)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_language_is_an_invalid_argument_naming_the_field() {
        match resolve("cobol", &[PathBuf::from("/usr/bin")]) {
            Err(DriverError::InvalidArgument { field, message }) => {
                assert_eq!(field, "language");
                assert!(message.contains("cobol"));
                assert!(message.contains("python"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn known_language_without_interpreter_is_unsupported() {
        let err = resolve("python", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert!(matches!(err, DriverError::Unsupported(m) if m.contains("python3")));
    }

    #[test]
    fn aliases_resolve_case_insensitively() {
        assert!(is_known("JavaScript"));
        assert!(is_known("node"));
        assert!(!is_known("cobol"));
    }
}
