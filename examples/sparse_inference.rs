//! The demo teacher's layout with 97% of its conv weights zeroed, run by faithful's sparse
//! runtime and by flex's dense forward (for a profiler, or a quick look):
//! `target/release/examples/sparse_inference [ITERATIONS] [BATCH]`.

use burn::prelude::*;
use burn::tensor::Distribution;
use faithful::compression::unstructured::{PruneScope, prune_to};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let batch: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let device = Device::flex();
    let cfg = faithful::config::ExperimentConfig::default();
    let teacher = cfg.teacher_arch().init(&device, 0)?;
    let pruned = prune_to(teacher, 0.97, PruneScope::PerLayer)?;
    let mut proto = faithful::export::onnx::network_onnx_model(&pruned, None)?;
    faithful::export::onnx_sparse::sparsify(&mut proto, 1.0 / 3.0)?;
    let runtime = faithful::runtime::Runtime::from_model(&proto)?;
    let side = cfg.teacher_arch().input_size();
    let x = faithful::util::seeded_random(
        [batch, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
        0,
    );
    let xs: Vec<f32> = x
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let time = |f: &dyn Fn()| {
        f();
        let t0 = Instant::now();
        for _ in 0..iterations {
            f();
        }
        1e3 * t0.elapsed().as_secs_f64() / iterations as f64
    };
    let sparse = time(&|| {
        runtime.run(&xs, batch).expect("runs");
    });
    let dense = time(&|| {
        pruned.forward(x.clone()).into_data();
    });
    println!(
        "density {:.3}; batch {batch}: sparse runtime {sparse:.2} ms, flex dense {dense:.2} ms",
        runtime.density()
    );
    Ok(())
}
