//! Structured L1 pruning of ResNets: equivalence with an independently masked full-size network,
//! hand counts, residual coupling, persistence of explicit widths, and the compression entry.
//!
//! The kept channels are recomputed here from the raw weights (per-filter L1 norms, summed over
//! a residual stream's writers), independently of the library's ranking code.

use burn::module::{Module, Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::Distribution;
use faithful::compression::Compression;
use faithful::compression::kd::Distillation;
use faithful::compression::structured::{FilterPruning, kept_filters};
use faithful::compression::structured_resnet::{
    ResNetKept, kept_channels, prune_resnet, slice_resnet,
};
use faithful::models::resnet::Stem;
use faithful::models::{
    Arch, FamilyArch, Network, ResNet, ResNetArch, StageWidths, Vgg, VggArch, load_model,
    parse_arch, save_model,
};

fn arch(layout: &str, base_width: usize, stem: Stem, input_size: usize) -> ResNetArch {
    ResNetArch {
        layout: layout.into(),
        stem,
        base_width,
        num_classes: 5,
        input_size,
        ..ResNetArch::default()
    }
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Every BatchNorm of a ResNet, in a fixed order.
fn bns_mut(net: &mut ResNet) -> Vec<&mut BatchNorm> {
    let mut out = vec![&mut net.bn1];
    for b in net.layers.iter_mut().flatten() {
        out.push(&mut b.bn1);
        out.push(&mut b.bn2);
        out.extend(b.downsample_bn.as_mut());
    }
    out
}

/// Random BatchNorm statistics and affine parameters (a fresh draw for every tensor, so values
/// are distinct and a sliced tensor reveals which channels it kept).
fn randomize_bn(mut net: ResNet) -> ResNet {
    let mut draw = 100u64;
    for bn in bns_mut(&mut net) {
        let c = bn.gamma.dims()[0];
        let dev = bn.gamma.val().device();
        let mut r = |lo: f64, hi: f64| {
            draw += 1;
            faithful::util::seeded_random([c], Distribution::Uniform(lo, hi), &dev, draw)
        };
        bn.gamma = Param::from_tensor(r(0.5, 1.5));
        bn.beta = Param::from_tensor(r(-0.3, 0.3));
        bn.running_mean = RunningState::new(r(-0.2, 0.2));
        bn.running_var = RunningState::new(r(0.5, 1.5));
    }
    net
}

fn net(a: &ResNetArch, seed: u64) -> ResNet {
    randomize_bn(a.init(&Device::flex(), seed).unwrap())
}

fn input(a: &ResNetArch, seed: u64) -> Tensor<4> {
    let s = a.input_size;
    faithful::util::seeded_random(
        [2, 3, s, s],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
        seed,
    )
}

/// Per-filter L1 norms of a conv weight, from its raw values.
fn l1_rows(conv: &Conv2d) -> Vec<f32> {
    let out = conv.weight.dims()[0];
    let w = floats(conv.weight.val());
    let per = w.len() / out;
    w.chunks(per)
        .map(|f| f.iter().map(|v| v.abs()).sum())
        .collect()
}

/// The `ceil((1 - rate) * C)` (at least 1) largest scores, ties to the lower index, ascending.
fn top(scores: &[f32], rate: f64) -> Vec<usize> {
    let c = scores.len();
    let keep = (((1.0 - rate) * c as f64).ceil() as usize).clamp(1, c);
    let mut order: Vec<usize> = (0..c).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep].to_vec();
    kept.sort_unstable();
    kept
}

/// The group rule, recomputed: a stream channel scores the sum of the L1 norms of the filters
/// writing into it (stem in stage 0, every conv2, the projection); a block's internal channel
/// scores its conv1 filter's L1 norm.
fn expected_kept(net: &ResNet, rate: f64) -> ResNetKept {
    let mut stream = vec![];
    for (s, stage) in net.layers.iter().enumerate() {
        let mut writers: Vec<&Conv2d> = if s == 0 { vec![&net.conv1] } else { vec![] };
        for b in stage {
            writers.push(&b.conv2);
            writers.extend(b.downsample_conv.as_ref());
        }
        let mut score = vec![0f32; stage[0].bn2.gamma.dims()[0]];
        for w in writers {
            for (acc, n) in score.iter_mut().zip(l1_rows(w)) {
                *acc += n;
            }
        }
        stream.push(top(&score, rate));
    }
    let mid = net
        .layers
        .iter()
        .map(|st| st.iter().map(|b| top(&l1_rows(&b.conv1), rate)).collect())
        .collect();
    ResNetKept { stream, mid }
}

/// Zeroes gamma and beta of the channels not in `keep`: they then leave BN as exact zeros.
fn mask_bn(bn: &mut BatchNorm, keep: &[usize]) {
    let c = bn.gamma.dims()[0];
    let v: Vec<f32> = (0..c)
        .map(|j| if keep.contains(&j) { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::<1>::from_data(TensorData::new(v, [c]), &bn.gamma.val().device());
    bn.gamma = Param::from_tensor(bn.gamma.val() * mask.clone());
    bn.beta = Param::from_tensor(bn.beta.val() * mask);
}

/// The full-size network with the pruned channels silenced. A silenced stream channel is zero
/// out of the stem (ReLU(0) = 0), zero in both summands of every residual addition of its stage
/// (bn2 and the projection's BN are masked; an identity shortcut carries the zero in), so zero
/// after it; a silenced internal channel is zero after bn1 and ReLU. Zeros contribute nothing
/// to the convs, the average pool and fc that read them, so the logits are those of the network
/// without these channels, computed by an untouched forward pass.
fn masked(net: &ResNet, kept: &ResNetKept) -> ResNet {
    let mut m = net.clone();
    mask_bn(&mut m.bn1, &kept.stream[0]);
    for (s, stage) in m.layers.iter_mut().enumerate() {
        for (b, block) in stage.iter_mut().enumerate() {
            mask_bn(&mut block.bn1, &kept.mid[s][b]);
            mask_bn(&mut block.bn2, &kept.stream[s]);
            if let Some(d) = block.downsample_bn.as_mut() {
                mask_bn(d, &kept.stream[s]);
            }
        }
    }
    m
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(1f32, |s, v| s.max(v.abs()));
    for (p, q) in a.iter().zip(b) {
        assert!((p - q).abs() <= 1e-5 * scale, "{what}: {p} vs {q}");
    }
}

#[test]
fn pruned_resnet_equals_the_masked_network_before_fine_tuning() {
    for (layout, stem, size, rate) in [
        ("1,2", Stem::Small, 16, 0.5),
        ("2,1,1", Stem::Small, 16, 0.3),
        ("2,1,1", Stem::Imagenet, 64, 0.5),
    ] {
        let what = format!("{layout} {stem:?} rate {rate}");
        let a = arch(layout, 8, stem, size);
        let full = net(&a, 3);
        let kept = expected_kept(&full, rate);
        assert_eq!(kept_channels(&full, rate).unwrap(), kept, "{what}");
        let pruned = prune_resnet(&full, rate).unwrap();
        let x = input(&a, 11);
        let want = floats(masked(&full, &kept).forward_logits(x.clone()));
        assert_close(&floats(pruned.forward_logits(x.clone())), &want, &what);
        // the masking silenced something, so the comparison is not trivially the full network
        let unmasked = floats(full.forward_logits(x));
        assert!(
            unmasked
                .iter()
                .zip(&want)
                .any(|(p, q)| (p - q).abs() > 1e-3),
            "{what}"
        );
        assert!(pruned.params() < full.params() && pruned.macs() < full.macs());
    }
}

/// Logits of a ResNet without dropout.
trait Logits {
    fn forward_logits(&self, x: Tensor<4>) -> Tensor<2>;
}

impl Logits for ResNet {
    fn forward_logits(&self, x: Tensor<4>) -> Tensor<2> {
        Network::ResNet(self.clone()).forward(x)
    }
}

/// Layout "1,2", base width 6, small stem, 3 classes, 16 px, rate 0.6: every group keeps
/// ceil(0.4 * C), 3 of stage 0's 6 channels and 5 of stage 1's 12.
///
/// Params: stem conv 3*3*9 + BN 2*3;
/// stage 0 block (3 -> 3 -> 3, identity): conv1 3*3*9 + BN 2*3, conv2 3*3*9 + BN 2*3;
/// stage 1 block 0 (3 -> 5 -> 5, projection): conv1 5*3*9 + BN 2*5, conv2 5*5*9 + BN 2*5,
///   1x1 5*3 + BN 2*5;
/// stage 1 block 1 (5 -> 5 -> 5): conv1 5*5*9 + BN 2*5, conv2 5*5*9 + BN 2*5;
/// fc 5*3 + 3.
/// MACs: stem and stage 0 at 16x16, stage 1 at 8x8, then fc.
#[test]
fn pruned_resnet_counts_params_and_macs_by_hand() {
    let a = ResNetArch {
        num_classes: 3,
        ..arch("1,2", 6, Stem::Small, 16)
    };
    let pruned = prune_resnet(&net(&a, 5), 0.6).unwrap();
    assert_eq!(
        pruned.arch.widths,
        Some(vec![
            StageWidths {
                out: 3,
                mid: vec![3]
            },
            StageWidths {
                out: 5,
                mid: vec![5, 5]
            },
        ])
    );
    let params = (3 * 3 * 9 + 2 * 3)
        + 2 * (3 * 3 * 9 + 2 * 3)
        + (5 * 3 * 9 + 2 * 5 + 5 * 5 * 9 + 2 * 5 + 5 * 3 + 2 * 5)
        + 2 * (5 * 5 * 9 + 2 * 5)
        + (5 * 3 + 3);
    assert_eq!(params, 1154);
    assert_eq!(pruned.params(), params);
    let macs = 16 * 16 * (3 * 3 * 9 + 2 * 3 * 3 * 9)
        + 8 * 8 * (5 * 3 * 9 + 5 * 5 * 9 + 5 * 3 + 2 * 5 * 5 * 9)
        + 5 * 3;
    assert_eq!(macs, 115_023);
    assert_eq!(pruned.macs(), macs);
    assert_eq!(pruned.arch.attribution_shape().unwrap(), (5, 8));
}

/// Which of `full`'s values `part` holds, by exact equality of whole slices of `len` values.
fn positions(full: &[f32], part: &[f32], len: usize) -> Vec<usize> {
    part.chunks(len)
        .map(|p| {
            let hits: Vec<usize> = full
                .chunks(len)
                .enumerate()
                .filter(|(_, f)| *f == p)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                hits.len(),
                1,
                "a sliced value must come from exactly one channel"
            );
            hits[0]
        })
        .collect()
}

/// The output channels of `full` that a sliced BN kept (values are distinct draws).
fn bn_kept(full: &BatchNorm, pruned: &BatchNorm) -> Vec<usize> {
    let g = positions(&floats(full.gamma.val()), &floats(pruned.gamma.val()), 1);
    let b = positions(&floats(full.beta.val()), &floats(pruned.beta.val()), 1);
    let m = positions(
        &floats(full.running_mean.value()),
        &floats(pruned.running_mean.value()),
        1,
    );
    assert!(
        g == b && b == m,
        "one BN's tensors disagree: {g:?} {b:?} {m:?}"
    );
    g
}

/// The input channels of `full` a sliced conv reads, given the output filters it kept:
/// input channel j of `pruned` is the full conv's input channel whose kernels (over the kept
/// filters) are the same values.
fn conv_inputs(full: &Conv2d, pruned: &Conv2d, out_kept: &[usize]) -> Vec<usize> {
    let [_, i_full, kh, kw] = full.weight.dims();
    let i_pruned = pruned.weight.dims()[1];
    let column = |w: &[f32], ins: usize, rows: &[usize], i: usize| -> Vec<f32> {
        rows.iter()
            .flat_map(|&o| {
                let at = (o * ins + i) * kh * kw;
                w[at..at + kh * kw].to_vec()
            })
            .collect()
    };
    let wf = floats(full.weight.val());
    let wp = floats(pruned.weight.val());
    let own: Vec<usize> = (0..out_kept.len()).collect();
    let full_cols: Vec<f32> = (0..i_full)
        .flat_map(|i| column(&wf, i_full, out_kept, i))
        .collect();
    let pruned_cols: Vec<f32> = (0..i_pruned)
        .flat_map(|i| column(&wp, i_pruned, &own, i))
        .collect();
    positions(&full_cols, &pruned_cols, out_kept.len() * kh * kw)
}

/// Every member of every residual group of `pruned`, read back from its tensors, kept `want`.
fn assert_coupled(full: &ResNet, pruned: &ResNet, want: &ResNetKept) {
    assert_eq!(bn_kept(&full.bn1, &pruned.bn1), want.stream[0], "stem");
    assert_eq!(
        positions(
            &floats(full.conv1.weight.val()),
            &floats(pruned.conv1.weight.val()),
            3 * full.conv1.weight.dims()[2].pow(2)
        ),
        want.stream[0],
        "stem conv"
    );
    for (s, (fs, ps)) in full.layers.iter().zip(&pruned.layers).enumerate() {
        for (b, (fb, pb)) in fs.iter().zip(ps).enumerate() {
            let at = format!("stage {s} block {b}");
            let inp = &want.stream[if b == 0 { s.saturating_sub(1) } else { s }];
            let mid = &want.mid[s][b];
            assert_eq!(bn_kept(&fb.bn1, &pb.bn1), *mid, "{at} bn1");
            assert_eq!(
                conv_inputs(&fb.conv1, &pb.conv1, mid),
                *inp,
                "{at} conv1 in"
            );
            assert_eq!(bn_kept(&fb.bn2, &pb.bn2), want.stream[s], "{at} bn2");
            assert_eq!(
                conv_inputs(&fb.conv2, &pb.conv2, &want.stream[s]),
                *mid,
                "{at}"
            );
            if let (Some(fd), Some(pd)) = (&fb.downsample_bn, &pb.downsample_bn) {
                assert_eq!(bn_kept(fd, pd), want.stream[s], "{at} downsample_bn");
            }
            if let (Some(fd), Some(pd)) = (&fb.downsample_conv, &pb.downsample_conv) {
                let ins = conv_inputs(fd, pd, &want.stream[s]);
                assert_eq!(ins, *inp, "{at} downsample_conv in");
            }
        }
    }
    // fc (burn stores [in, out]): its rows are the last stream's channels
    let classes = full.fc.weight.dims()[1];
    let rows = positions(
        &floats(full.fc.weight.val()),
        &floats(pruned.fc.weight.val()),
        classes,
    );
    assert_eq!(rows, *want.stream.last().unwrap(), "fc rows");
}

#[test]
fn every_member_of_a_residual_group_keeps_the_same_channels() {
    let a = arch("2,2,1", 8, Stem::Small, 16);
    let full = net(&a, 7);
    let pruned = prune_resnet(&full, 0.4).unwrap();
    let want = expected_kept(&full, 0.4);
    // shapes: every block of a stage outputs the stream's width, the next stage reads it
    for (s, stage) in pruned.layers.iter().enumerate() {
        for block in stage {
            assert_eq!(block.bn2.gamma.dims()[0], want.stream[s].len());
            if let Some(d) = &block.downsample_conv {
                assert_eq!(d.weight.dims()[0], want.stream[s].len());
                assert_eq!(d.weight.dims()[1], want.stream[s - 1].len());
            }
        }
    }
    assert_eq!(pruned.fc.weight.dims()[0], want.stream[2].len());
    assert_coupled(&full, &pruned, &want);
}

/// Multiplies the filters `channels` of a conv by `factor`.
fn scale_filters(conv: &mut Conv2d, channels: &[usize], factor: f32) {
    let out = conv.weight.dims()[0];
    let v: Vec<f32> = (0..out)
        .map(|c| if channels.contains(&c) { factor } else { 1.0 })
        .collect();
    let dev = conv.weight.val().device();
    let s = Tensor::<1>::from_data(TensorData::new(v, [out]), &dev).reshape([out, 1, 1, 1]);
    conv.weight = Param::from_tensor(conv.weight.val() * s);
}

/// Stage 0 (4 channels, stem + one block) and stage 1 (8 channels, a projection block and an
/// identity block) at rate 0.25 drop 1 and 2 stream channels. The channels made tiny in every
/// writer of their stream (1 in stage 0; 2 and 6 in stage 1) are the ones removed, everywhere.
/// Decoys: channel 3 is tinier still in the stem alone, channel 5 in the projection alone; a
/// per-layer ranking would drop them from those layers and break the additions, the group sum
/// keeps them.
#[test]
fn a_channel_small_in_every_writer_is_removed_from_the_whole_group() {
    let a = arch("1,2", 4, Stem::Small, 16);
    let mut full = net(&a, 9);
    scale_filters(&mut full.conv1, &[1], 1e-3);
    scale_filters(&mut full.conv1, &[3], 1e-4);
    scale_filters(&mut full.layers[0][0].conv2, &[1], 1e-3);
    for b in full.layers[1].iter_mut() {
        scale_filters(&mut b.conv2, &[2, 6], 1e-3);
    }
    let ds = full.layers[1][0].downsample_conv.as_mut().unwrap();
    scale_filters(ds, &[2, 6], 1e-3);
    scale_filters(ds, &[5], 1e-4);
    // a per-layer ranking would have removed the decoys
    assert_eq!(kept_filters(&full.conv1.weight.val(), 0.25), vec![0, 1, 2]);
    let ds = full.layers[1][0].downsample_conv.as_ref().unwrap();
    assert!(!kept_filters(&ds.weight.val(), 0.25).contains(&5));

    let kept = kept_channels(&full, 0.25).unwrap();
    assert_eq!(kept.stream, vec![vec![0, 2, 3], vec![0, 1, 3, 4, 5, 7]]);
    let pruned = prune_resnet(&full, 0.25).unwrap();
    assert_coupled(&full, &pruned, &kept);
    let x = input(&a, 2);
    assert_close(
        &floats(pruned.forward_logits(x.clone())),
        &floats(masked(&full, &kept).forward_logits(x)),
        "hand-built",
    );
}

#[test]
fn a_pruned_resnet_saves_and_loads_to_the_same_predictions() {
    let a = arch("1,2", 8, Stem::Small, 16);
    let pruned = prune_resnet(&net(&a, 12), 0.5).unwrap();
    let dir = std::env::temp_dir().join(format!("faithful-resnet-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("pruned.safetensors");
    let network = Network::ResNet(pruned.clone());
    save_model(&network, &path).unwrap();
    let text = std::fs::read_to_string(dir.join("pruned.arch.json")).unwrap();
    assert!(text.contains("\"widths\""), "{text}");
    let loaded = load_model(&path, &Device::flex()).unwrap();
    assert_eq!(loaded.arch(), network.arch());
    let x = input(&a, 3);
    assert_eq!(
        floats(loaded.forward(x.clone())),
        floats(network.forward(x)),
        "same logits after a round trip"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tensors an architecture with explicit widths expects are the ones burn holds, and the
/// attribution shape is the real last stream width.
#[test]
fn explicit_widths_describe_the_pruned_tensors() {
    let a = arch("2,1", 8, Stem::Imagenet, 32);
    let full = net(&a, 1);
    let pruned = prune_resnet(&full, 0.5).unwrap();
    let mut held: Vec<(String, Vec<usize>)> = pruned
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    held.sort();
    let mut expected = pruned.arch.expected_tensors().unwrap();
    expected.sort();
    assert_eq!(expected, held);
    let (c, side) = pruned.arch.attribution_shape().unwrap();
    assert_eq!(c, 8, "stage 1 keeps 8 of 16 channels");
    let feats = pruned.features(input(&a, 0));
    assert_eq!(feats.dims()[1..], [c, side, side]);
    assert!(pruned.arch.describe().contains("widths"));
}

/// Old files (no `widths`) load unchanged and are written without it; explicit widths that do
/// not fit the layout, or carry unknown keys, are refused with a message.
#[test]
fn resnet_arch_files_with_and_without_widths() {
    let f = std::path::Path::new("net.arch.json");
    let old = parse_arch(r#"{"family": "resnet", "layout": "1,1"}"#, f).unwrap();
    let Arch::ResNet(r) = &old else {
        panic!("a resnet")
    };
    assert_eq!(r.widths, None);
    assert!(!serde_json::to_string(&old).unwrap().contains("widths"));
    let ok = r#"{"family": "resnet", "layout": "1,2",
                 "widths": [{"out": 3, "mid": [2]}, {"out": 5, "mid": [4, 1]}]}"#;
    let Arch::ResNet(r) = parse_arch(ok, f).unwrap() else {
        panic!("a resnet")
    };
    assert_eq!((r.stage_width(1), r.mid_width(1, 1)), (5, 1));
    for (bad, says) in [
        (r#"[{"out": 3, "mid": [2]}]"#, "stages"),
        (
            r#"[{"out": 3, "mid": [2]}, {"out": 5, "mid": [4]}]"#,
            "blocks",
        ),
        (
            r#"[{"out": 3, "mid": [2]}, {"out": 0, "mid": [4, 1]}]"#,
            "1..=",
        ),
        (
            r#"[{"out": 3, "mid": [2], "x": 1}, {"out": 5, "mid": [4, 1]}]"#,
            "unknown field",
        ),
    ] {
        let text = format!(r#"{{"family": "resnet", "layout": "1,2", "widths": {bad}}}"#);
        let e = format!("{:#}", parse_arch(&text, f).unwrap_err());
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// `thinner` divides explicit widths by the divisor, rounding down but keeping at least one
/// channel, so a KD student of a pruned network still builds.
#[test]
fn thinner_divides_explicit_widths() {
    let a = ResNetArch {
        widths: Some(vec![
            StageWidths {
                out: 3,
                mid: vec![1],
            },
            StageWidths {
                out: 9,
                mid: vec![5, 4],
            },
        ]),
        ..arch("1,2", 8, Stem::Small, 16)
    };
    let thin = a.thinner(2);
    assert_eq!(
        (
            thin.stage_width(0),
            thin.mid_width(0, 0),
            thin.stage_width(1)
        ),
        (1, 1, 4)
    );
    assert_eq!((thin.mid_width(1, 0), thin.mid_width(1, 1)), (2, 2));
    assert_eq!(thin.attribution_shape().unwrap().0, 4);
    let device = Device::flex();
    let teacher = Network::ResNet(a.init(&device, 0).unwrap());
    let student = Distillation {
        width_divisor: 2,
        ..Distillation::default()
    }
    .make_student(&teacher, &device, 1)
    .unwrap();
    assert_eq!(student.arch(), Arch::ResNet(thin));
    assert!(student.params() < teacher.params());
}

#[test]
fn filter_pruning_makes_a_smaller_resnet_student() {
    let ad = Device::flex().autodiff();
    let a = arch("2,2,2", 16, Stem::Small, 64);
    let teacher = Network::ResNet(a.init(&ad, 0).unwrap()).valid();
    let cfg = FilterPruning {
        rate: 0.5,
        layers: vec![],
        epochs: 1,
    };
    let student = cfg.make_student(&teacher, &ad, 0).unwrap();
    let Network::ResNet(s) = &student else {
        panic!("a resnet student")
    };
    let widths = s.arch.widths.clone().unwrap();
    assert_eq!(
        widths.iter().map(|w| w.out).collect::<Vec<_>>(),
        [8, 16, 32]
    );
    assert!(student.params() < teacher.params() && student.macs() < teacher.macs());
    println!(
        "resnet 2,2,2 base 16 at 64 px, rate 0.5: params {} -> {} ({:.1}%), MACs {} -> {} ({:.1}%)",
        teacher.params(),
        student.params(),
        100.0 * student.params() as f64 / teacher.params() as f64,
        teacher.macs(),
        student.macs(),
        100.0 * student.macs() as f64 / teacher.macs() as f64
    );
    // conv indices name VGG layers; for a ResNet they are refused, not ignored
    let e = FilterPruning {
        layers: vec![0],
        ..cfg.clone()
    }
    .make_student(&teacher, &ad, 0)
    .unwrap_err();
    assert!(format!("{e:#}").contains("vgg family only"), "{e:#}");
    // and VGG is pruned as before
    let vgg: Vgg = VggArch {
        layout: "4,M,8,M".into(),
        num_classes: 5,
        input_size: 16,
        ..VggArch::default()
    }
    .init(&ad, 0)
    .unwrap();
    let v = cfg
        .make_student(&Network::Vgg(vgg).valid(), &ad, 0)
        .unwrap();
    assert_eq!(v.arch().layout_name(), "2,M,4,M");
}

/// Kept sets that do not fit the network are refused rather than sliced out of range.
#[test]
fn slicing_checks_the_kept_sets() {
    let full = net(&arch("1,1", 4, Stem::Small, 16), 0);
    let mut kept = kept_channels(&full, 0.5).unwrap();
    kept.stream[1] = vec![3, 8];
    assert!(slice_resnet(&full, &kept).is_err());
    kept.stream[1] = vec![];
    assert!(slice_resnet(&full, &kept).is_err());
    assert!(prune_resnet(&full, 1.0).is_err());
}

/// Bottleneck ResNets: a contradictory block kind, explicit widths and structured pruning are
/// refused with errors that say why, before anything is built or trained.
#[test]
fn bottleneck_resnets_refuse_what_they_do_not_support() {
    use faithful::models::resnet::BlockKind;
    let resnet50 = ResNetArch::torchvision("resnet50", 10).unwrap();
    assert_eq!(resnet50.block_kind(), BlockKind::Bottleneck);
    let contradiction = ResNetArch {
        block: Some(BlockKind::Basic),
        ..resnet50.clone()
    };
    let e = format!("{:#}", contradiction.validate().unwrap_err());
    assert!(e.contains("resnet50") && e.contains("Bottleneck"), "{e}");
    let tiny = ResNetArch {
        layout: "1,1".into(),
        block: Some(BlockKind::Bottleneck),
        base_width: 4,
        ..ResNetArch::default()
    };
    let widths = ResNetArch {
        widths: Some(vec![
            StageWidths {
                out: 8,
                mid: vec![2],
            },
            StageWidths {
                out: 16,
                mid: vec![4],
            },
        ]),
        ..tiny.clone()
    };
    let e = format!("{:#}", widths.validate().unwrap_err());
    assert!(e.contains("explicit widths"), "{e}");
    let pruning = faithful::compression::structured::FilterPruning::default();
    let e = format!(
        "{:#}",
        pruning
            .check_family(&Arch::ResNet(tiny.clone()))
            .unwrap_err()
    );
    assert!(
        e.contains("not implemented") && e.contains("Bottleneck"),
        "{e}"
    );
    let net = Network::ResNet(tiny.init(&Device::flex(), 0).unwrap());
    let e = pruning.make_student(&net, &Device::flex(), 0).unwrap_err();
    assert!(format!("{e:#}").contains("not implemented"), "{e:#}");
}
