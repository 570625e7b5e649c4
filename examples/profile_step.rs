//! Runs the reference fixture's training steps (plain and with the closed-form Grad-CAM loss)
//! many times, for a profiler: `perf record -g target/release/examples/profile_step 40`.

fn main() -> anyhow::Result<()> {
    let iterations = std::env::args()
        .nth(1)
        .map_or(Ok(20), |s| s.parse::<usize>())?;
    let device = burn::prelude::Device::flex();
    for row in faithful::bench::fixture_steps(&device, iterations)? {
        println!("{}: {:.1} ms per step", row.stage, row.ms_per_step);
    }
    Ok(())
}
