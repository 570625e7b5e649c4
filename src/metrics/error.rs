//! The error type shared by all metric functions.

use std::fmt;

/// Result alias used by every fallible metric function.
pub type MetricResult<T> = Result<T, MetricError>;

/// Why a metric could not be computed from its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricError {
    /// Two inputs that must describe the same items have different lengths.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// An input holds NaN (or an infinity where the arithmetic needs finite values).
    NotFinite { what: &'static str, index: usize },
    /// An input that needs at least one element is empty.
    Empty { what: &'static str },
    /// Shape arguments are inconsistent (zero size, overflow, length not a multiple of width).
    InvalidShape { what: &'static str, detail: String },
    /// A 0/1 target array holds another value.
    InvalidTarget { index: usize, value: u8 },
    /// A scalar parameter is outside its valid range.
    InvalidParameter {
        what: &'static str,
        detail: &'static str,
    },
    /// The metric has no value for this input (e.g. no class has a positive sample).
    Undefined {
        what: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthMismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what} has length {actual}, expected {expected}"),
            Self::NotFinite { what, index } => {
                write!(
                    f,
                    "{what} holds a non-finite value (NaN or infinity) at index {index}"
                )
            }
            Self::Empty { what } => write!(f, "{what} is empty"),
            Self::InvalidShape { what, detail } => write!(f, "invalid shape for {what}: {detail}"),
            Self::InvalidTarget { index, value } => {
                write!(f, "targets must be 0 or 1, found {value} at index {index}")
            }
            Self::InvalidParameter { what, detail } => write!(f, "invalid {what}: {detail}"),
            Self::Undefined { what, reason } => write!(f, "{what} is undefined: {reason}"),
        }
    }
}

impl std::error::Error for MetricError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = MetricError::LengthMismatch {
            what: "targets",
            expected: 4,
            actual: 3,
        };
        assert_eq!(e.to_string(), "targets has length 3, expected 4");
        let e = MetricError::InvalidTarget { index: 2, value: 7 };
        assert!(e.to_string().contains("found 7 at index 2"));
    }

    #[test]
    fn is_a_std_error_that_can_cross_threads() {
        fn takes<E: std::error::Error + Send + Sync + 'static>(_: E) {}
        takes(MetricError::Empty { what: "map" });
    }
}
