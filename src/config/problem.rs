//! Config problems: every one names the file, the line and the reason, and they are
//! reported all at once so an operator fixes a file in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with the configuration or a file it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// What is wrong, and where it helps, what was expected.
    pub message: String,
}

impl Problem {
    /// A problem at a known line (and column, if known).
    pub fn at(file: &Path, line: u64, column: Option<u64>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: (line > 0).then_some(line),
            column: column.filter(|c| *c > 0),
            message: message.into(),
        }
    }

    /// A problem with the file as a whole (missing, unreadable, wrong format).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A configuration that cannot be served, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// All problems, in file order where possible.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps a single problem.
    pub fn one(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl From<Vec<Problem>> for ConfigError {
    fn from(problems: Vec<Problem>) -> Self {
        Self { problems }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
