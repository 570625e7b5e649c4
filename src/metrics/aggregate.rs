//! Aggregation of a metric over repeated runs (seeds).

/// Mean and sample standard deviation (divisor n − 1) of `values`, in that order.
///
/// The standard deviation is 0 for fewer than two values; the mean of an empty slice is
/// NaN (there is nothing to average). NaN values propagate.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (squares / (n - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_case() {
        // Mean 5; squared deviations 9+1+1+9 = 20; 20 / 3 → std √(20/3).
        let (m, s) = mean_std(&[2.0, 4.0, 6.0, 8.0]);
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - (20.0_f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn small_inputs() {
        assert_eq!(mean_std(&[3.5]), (3.5, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan());
        assert_eq!(s, 0.0);
        assert_eq!(mean_std(&[1.0, 1.0, 1.0]), (1.0, 0.0));
    }
}
