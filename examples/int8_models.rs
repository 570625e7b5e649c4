//! Writes a float ONNX network and its int8 (QDQ) quantization for the onnxruntime benchmark
//! (`python/bench_onnx_int8.py`): a randomly initialised VGG of the given layout and input
//! side, quantized W8A8 with its activation observers fed four batches of random images.
//! Random weights are fine for timing and size; accuracy is measured in the grid.
//!
//! `cargo run --release --example int8_models -- LAYOUT SIDE OUT_DIR` (e.g. `vgg16 112 /tmp/b`)

use burn::module::Module;
use burn::prelude::*;
use faithful::models::network::FamilyNet;
use faithful::models::quant::{QuantNet, QuantSpec};
use faithful::models::{Arch, HeadDropout, Network, VggArch};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: int8_models LAYOUT SIDE OUT_DIR");
    let (layout, side, out) = (
        &args[1],
        args[2].parse::<usize>()?,
        std::path::Path::new(&args[3]),
    );
    std::fs::create_dir_all(out)?;
    let arch = Arch::Vgg(VggArch {
        layout: layout.clone(),
        input_size: side,
        num_classes: 10,
        ..VggArch::default()
    });
    arch.validate()?;
    let float = arch.init(&Device::flex(), 0)?;
    let ad = Device::flex().autodiff();
    let q = QuantNet::from_network(&float, &QuantSpec::default())?.fork(&ad);
    for seed in 0..4 {
        let x = faithful::util::seeded_random(
            [4, 3, side, side],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &ad,
            seed,
        );
        let drop = HeadDropout::none(q.head().layers());
        let _ = q.head().forward(q.features(x), &drop);
    }
    let q = Network::from(q.valid());
    faithful::export::export_onnx(&float, &out.join("fp32.onnx"), None)?;
    faithful::export::export_onnx(&q, &out.join("int8.onnx"), None)?;
    println!(
        "wrote {} and {} ({} parameters, {:.2} GMACs per image)",
        out.join("fp32.onnx").display(),
        out.join("int8.onnx").display(),
        float.params(),
        float.macs() as f64 / 1e9
    );
    Ok(())
}
