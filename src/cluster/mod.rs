//! Running the grid's cells ([`crate::cells`]) on the engines clusters already have: Slurm job
//! arrays chained by dependency ([`slurm`]) and Kubernetes Indexed Jobs ([`k8s`]). faithful
//! schedules nothing itself: it writes what the engine runs, and every cell is an ordinary
//! `faithful experiment CONFIG --out RUN --cell ...` process.

pub mod k8s;
pub mod slurm;

use crate::cells::KIND_LABELS;
use anyhow::{Result, bail};
use std::collections::BTreeMap;

/// A resource setting that may differ per cell kind: `VALUE` for every kind, or
/// `kind=VALUE,kind=VALUE` (kinds: teacher, students, roar, report), or both mixed
/// (`4,report=1`: 4 for every kind but the report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerKind {
    every: Option<String>,
    by_kind: BTreeMap<String, String>,
}

impl PerKind {
    /// Parses the option `name`'s text (see the type's doc).
    pub fn parse(name: &str, text: &str) -> Result<PerKind> {
        let mut out = PerKind::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((kind, value)) => {
                    let kind = kind.trim();
                    if !KIND_LABELS.contains(&kind) {
                        bail!(
                            "--{name} {text}: unknown cell kind `{kind}` (kinds: {})",
                            KIND_LABELS.join(", ")
                        );
                    }
                    check_value(name, value.trim())?;
                    out.by_kind.insert(kind.into(), value.trim().into());
                }
                None => {
                    check_value(name, part)?;
                    out.every = Some(part.into());
                }
            }
        }
        Ok(out)
    }

    /// The value for cells of `kind`, if any.
    pub fn get(&self, kind: &str) -> Option<&str> {
        self.by_kind
            .get(kind)
            .or(self.every.as_ref())
            .map(String::as_str)
    }
}

/// A value goes into a script or manifest: refuse anything that could break out of it.
fn check_value(name: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/+@".contains(c));
    if !ok {
        bail!("--{name}: `{value}` is not a plain value (letters, digits and -_.:/+@ only)");
    }
    Ok(())
}

/// Quotes `text` for a POSIX shell (single quotes; an embedded quote closed and escaped).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_kind_values_fall_back_to_the_value_for_every_kind() {
        let t = PerKind::parse("time", "02:00:00,report=00:10:00").unwrap();
        assert_eq!(t.get("teacher"), Some("02:00:00"));
        assert_eq!(t.get("report"), Some("00:10:00"));
        let only = PerKind::parse("gpus", "students=1").unwrap();
        assert_eq!(only.get("students"), Some("1"));
        assert_eq!(only.get("teacher"), None);
        let e = PerKind::parse("time", "pupil=1").unwrap_err().to_string();
        assert!(e.contains("unknown cell kind `pupil`"), "{e}");
        let e = PerKind::parse("mem", "4G; rm -rf /")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a plain value"), "{e}");
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
