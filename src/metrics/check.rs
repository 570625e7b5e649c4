//! Input validation shared by the metric modules.

use super::error::{MetricError, MetricResult};

/// Fails unless `actual == expected`; `what` names the offending input.
pub(super) fn same_len(what: &'static str, expected: usize, actual: usize) -> MetricResult<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(MetricError::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// Fails on the first NaN (infinities are allowed: they still rank).
pub(super) fn no_nan(what: &'static str, values: &[f32]) -> MetricResult<()> {
    match values.iter().position(|v| v.is_nan()) {
        Some(index) => Err(MetricError::NotFinite { what, index }),
        None => Ok(()),
    }
}

/// Fails on the first NaN or infinity (for inputs used in arithmetic).
pub(super) fn all_finite(what: &'static str, values: &[f32]) -> MetricResult<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricError::NotFinite { what, index }),
        None => Ok(()),
    }
}

/// Fails on an empty slice.
pub(super) fn non_empty<T>(what: &'static str, values: &[T]) -> MetricResult<()> {
    if values.is_empty() {
        Err(MetricError::Empty { what })
    } else {
        Ok(())
    }
}

/// `rows * cols`, failing on overflow.
pub(super) fn area(what: &'static str, rows: usize, cols: usize) -> MetricResult<usize> {
    rows.checked_mul(cols)
        .ok_or_else(|| MetricError::InvalidShape {
            what,
            detail: format!("{rows} x {cols} overflows usize"),
        })
}

/// Fails unless every target is 0 or 1.
pub(super) fn binary_targets(targets: &[u8]) -> MetricResult<()> {
    match targets.iter().position(|&t| t > 1) {
        Some(index) => Err(MetricError::InvalidTarget {
            index,
            value: targets[index],
        }),
        None => Ok(()),
    }
}

/// Height of a non-empty row-major grid of `len` values with `width` columns.
pub(super) fn grid_height(what: &'static str, len: usize, width: usize) -> MetricResult<usize> {
    if width == 0 || len == 0 || !len.is_multiple_of(width) {
        return Err(MetricError::InvalidShape {
            what,
            detail: format!("length {len} is not a positive multiple of width {width}"),
        });
    }
    Ok(len / width)
}

/// Fails unless `ignore` (when given) has length `expected`.
pub(super) fn ignore_len(ignore: Option<&[bool]>, expected: usize) -> MetricResult<()> {
    match ignore {
        Some(mask) => same_len("ignore", expected, mask.len()),
        None => Ok(()),
    }
}

/// Whether pixel `i` is excluded by the optional ignore mask.
pub(super) fn is_ignored(ignore: Option<&[bool]>, i: usize) -> bool {
    ignore.is_some_and(|mask| mask[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_height_rejects_bad_shapes() {
        assert_eq!(grid_height("m", 6, 3), Ok(2));
        assert!(grid_height("m", 6, 0).is_err());
        assert!(grid_height("m", 7, 3).is_err());
        assert!(grid_height("m", 0, 3).is_err());
    }

    #[test]
    fn area_rejects_overflow() {
        assert_eq!(area("x", 3, 4), Ok(12));
        assert!(area("x", usize::MAX, 2).is_err());
    }

    #[test]
    fn nan_and_infinity_checks() {
        assert!(no_nan("s", &[f32::INFINITY, 1.0]).is_ok());
        assert_eq!(
            no_nan("s", &[1.0, f32::NAN]),
            Err(MetricError::NotFinite {
                what: "s",
                index: 1
            })
        );
        assert!(all_finite("s", &[f32::NEG_INFINITY]).is_err());
        assert!(binary_targets(&[0, 1, 2]).is_err());
    }
}
