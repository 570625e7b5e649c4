//! Every network family through every stage that works on the network abstraction: these tests
//! loop over `Arch::tiny_examples`, so a family is tested by being added to the registry.

use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use faithful::compression::Compression;
use faithful::compression::kd::Distillation;
use faithful::compression::unstructured::{ConvMasks, PruneScope, prune_to, sparsity};
use faithful::data::synthetic::{SyntheticConfig, generate};
use faithful::matching;
use faithful::models::resnet::{BlockKind, Stem};
use faithful::models::{Arch, FAMILIES, Network, ResNetArch, load_model, save_model};
use faithful::training::{
    FineTuneSpec, MatchConfig, Normalization, StudentRun, TrainConfig, fine_tune_lockstep,
};

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-families-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn logits(net: &Network, side: usize) -> Vec<f32> {
    let device = net.devices()[0].clone();
    let x: Vec<f32> = (0..2 * 3 * side * side)
        .map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5)
        .collect();
    net.forward(Tensor::from_data(
        TensorData::new(x, [2, 3, side, side]),
        &device,
    ))
    .into_data()
    .try_to_vec::<f32>()
    .unwrap()
}

#[test]
fn every_family_is_listed_with_a_tiny_example() {
    let examples = Arch::tiny_examples(3, 16);
    for name in FAMILIES {
        assert!(
            examples.iter().any(|a| a.family() == *name),
            "family {name} has no tiny example"
        );
    }
    for arch in &examples {
        arch.validate().unwrap();
    }
    // every ResNet block kind is exercised
    let kinds: Vec<BlockKind> = examples
        .iter()
        .filter_map(|a| match a {
            Arch::ResNet(r) => Some(r.block_kind()),
            _ => None,
        })
        .collect();
    assert!(kinds.contains(&BlockKind::Basic) && kinds.contains(&BlockKind::Bottleneck));
}

#[test]
fn expected_tensors_are_the_ones_burn_saves_for_every_family() {
    let device = Device::flex();
    let mut archs = Arch::tiny_examples(3, 16);
    // the torchvision stem too (7x7 conv, max-pool)
    archs.push(
        ResNetArch {
            layout: "2,1".into(),
            stem: Stem::Imagenet,
            base_width: 4,
            num_classes: 3,
            input_size: 32,
            ..ResNetArch::default()
        }
        .into(),
    );
    for arch in archs {
        let net = arch.init(&device, 0).unwrap();
        let mut saved: Vec<(String, Vec<usize>)> = match &net {
            Network::Vgg(n) => n.collect(None, None, false),
            Network::ResNet(n) => n.collect(None, None, false),
            Network::Quant(n) => n.collect(None, None, false),
        }
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
        saved.sort();
        let mut expected = arch.expected_tensors().unwrap();
        expected.sort();
        assert_eq!(expected, saved, "{}", arch.describe());
    }
}

#[test]
fn every_family_saves_and_loads_to_the_same_predictions() {
    let device = Device::flex();
    let dir = tmp("save");
    for arch in Arch::tiny_examples(3, 16) {
        let net = arch.init(&device, 4).unwrap();
        let path = dir.join(format!("{}.safetensors", arch.family()));
        save_model(&net, &path).unwrap();
        let loaded = load_model(&path, &device).unwrap();
        assert_eq!(loaded.arch(), arch);
        assert_eq!(logits(&loaded, 16), logits(&net, 16), "{}", arch.family());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// torchvision's published sizes of its ResNets (the model docs' "Params" and "GFLOPS"
/// columns; the latter are multiply-accumulates of the convs and the linear layer on one
/// 224 px image): an independent check of the block structure, the bottleneck's expansion and
/// stride placement, the stem and the shortcut placement, computed without torch.
#[test]
fn torchvision_resnets_have_torchvisions_parameter_and_mac_counts() {
    let published = [
        ("resnet18", 11_689_512, 1.81),
        ("resnet34", 21_797_672, 3.66),
        ("resnet50", 25_557_032, 4.09),
        ("resnet101", 44_549_160, 7.80),
        ("resnet152", 60_192_808, 11.51),
    ];
    for (name, params, _) in published {
        let arch = ResNetArch::torchvision(name, 1000).unwrap();
        let count: usize = arch
            .expected_tensors()
            .unwrap()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(count, params, "{name} parameters");
    }
    // the MAC count needs a built network: one of each block kind
    for (name, params, gmacs) in [published[0], published[2]] {
        let net = ResNetArch::torchvision(name, 1000)
            .unwrap()
            .init(&Device::flex(), 0)
            .unwrap();
        assert_eq!(net.params(), params, "{name}");
        let ours = net.macs() as f64 / 1e9;
        assert!(
            (ours - gmacs).abs() < 0.006,
            "{name}: {ours} GMACs, torchvision {gmacs}"
        );
    }
}

/// Hand count of a ResNet "1,1" with base width 4, 3 classes, small stem, on 16x16 inputs:
/// stem conv 4*3*9 + BN 2*4; stage 0 (4->4, identity): 2 convs 4*4*9 + 2 BN 2*4;
/// stage 1 (4->8, stride 2, projection): conv 8*4*9 + conv 8*8*9 + 1x1 8*4 + 3 BN 2*8;
/// fc 8*3 + 3.
#[test]
fn resnet_parameter_and_mac_counts_match_a_hand_count() {
    let arch = ResNetArch {
        layout: "1,1".into(),
        base_width: 4,
        num_classes: 3,
        input_size: 16,
        ..ResNetArch::default()
    };
    let net = arch.init(&Device::flex(), 0).unwrap();
    let params = (4 * 3 * 9 + 8)
        + 2 * (4 * 4 * 9 + 8)
        + (8 * 4 * 9 + 8 * 8 * 9 + 8 * 4 + 3 * 16)
        + (8 * 3 + 3);
    assert_eq!(net.params(), params);
    // convs at 16x16 (stem, stage 0) and 8x8 (stage 1), then the linear head
    let macs =
        16 * 16 * (4 * 3 * 9 + 2 * 4 * 4 * 9) + 8 * 8 * (8 * 4 * 9 + 8 * 8 * 9 + 8 * 4) + 8 * 3;
    assert_eq!(net.macs(), macs);
    assert_eq!(arch.attribution_shape().unwrap(), (8, 8));
}

/// Unstructured pruning finds every conv kernel of any family (including ResNet's projection
/// shortcuts) and keeps the pruned weights at zero; the masks reproduce the pruned network.
#[test]
fn unstructured_pruning_works_on_every_family() {
    let device = Device::flex();
    for arch in Arch::tiny_examples(3, 16) {
        let net = arch.init(&device, 1).unwrap();
        let pruned = prune_to(net.clone(), 0.5, PruneScope::Global).unwrap();
        let s = sparsity(&pruned);
        assert!((s - 0.5).abs() < 0.01, "{}: sparsity {s}", arch.family());
        let masked = ConvMasks::from_zeros(&pruned).apply(net);
        assert_eq!(
            logits(&masked, 16),
            logits(&pruned, 16),
            "{}",
            arch.family()
        );
    }
}

/// What the KD fine-tuning tests share: `n_train` 32 px training images of 3 classes, their
/// normalisation, the autodiff device, /2 distillation and `epochs` of clipped SGD.
fn kd_setup(
    n_train: usize,
    epochs: usize,
) -> (
    faithful::data::Dataset,
    Normalization,
    Device,
    Distillation,
    TrainConfig,
) {
    let data = generate(&SyntheticConfig {
        size: 32,
        num_classes: 3,
        n_train,
        n_val: 1,
        n_test: 1,
        ..SyntheticConfig::default()
    })
    .unwrap()
    .train;
    let norm = Normalization::of(&data);
    (
        data,
        norm,
        Device::flex().autodiff(),
        Distillation {
            width_divisor: 2,
            ..Distillation::default()
        },
        TrainConfig {
            epochs,
            batch_size: 8,
            lr: 0.05,
            grad_clip: 1.0,
            ..TrainConfig::default()
        },
    )
}

/// A KD student of every family fine-tunes with every regularizer: finite losses, weights that
/// move, and the student is thinner than its teacher.
#[test]
fn every_family_distils_with_every_regularizer() {
    let (data, norm, ad, kd, train) = kd_setup(16, 1);
    let dir = tmp("kd");
    for arch in Arch::tiny_examples(3, 32) {
        let teacher = arch.init(&ad, 2).unwrap().valid();
        let student = kd.make_student(&teacher, &ad, 3).unwrap();
        assert!(student.params() < teacher.params(), "{}", arch.family());
        let matching_cfg = MatchConfig::default();
        let names = matching::names();
        let regs: Vec<_> = names
            .iter()
            .map(|r| matching::by_name(r, &matching_cfg).unwrap())
            .collect();
        let runs = names
            .iter()
            .zip(&regs)
            .map(|(name, reg)| StudentRun {
                model: student.clone(),
                spec: FineTuneSpec {
                    compression: &kd,
                    regularizer: reg.as_ref(),
                    matching: &matching_cfg,
                    train: &train,
                    seed: 0,
                    label: name,
                },
                dir: dir.join(arch.family()).join(name),
                upstream: String::new(),
            })
            .collect();
        let tuned = fine_tune_lockstep(runs, &teacher, &data, &norm, None).unwrap();
        let before = logits(&student.valid(), 32);
        for ((net, history), name) in tuned.iter().zip(&names) {
            let record = &history[0];
            assert!(record.task_loss.is_finite(), "{} {name}", arch.family());
            if *name != "none" {
                let m = record.match_loss.unwrap();
                assert!(
                    m.is_finite() && m > 0.0,
                    "{} {name}: match loss {m}",
                    arch.family()
                );
            }
            assert_ne!(logits(&net.valid(), 32), before, "{} {name}", arch.family());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every float a network holds, parameters and running statistics (BatchNorm), in visit order.
fn all_floats(net: &Network) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0
                .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    net.visit(&mut collect);
    collect.0
}

/// Lockstep students take their steps on rayon's threads, a student's steps on whichever
/// thread is free. Each must come out bit-identical to the same student trained alone: the
/// same weights and the same BatchNorm running statistics (which burn keeps per thread until
/// synced), so the thread schedule never changes a number.
#[test]
fn lockstep_students_on_threads_match_students_trained_alone() {
    let (data, norm, ad, kd, train) = kd_setup(48, 2);
    let matching_cfg = MatchConfig::default();
    let names = ["none", "ewa", "swa", "sswa"];
    let regs: Vec<_> = names
        .iter()
        .map(|r| matching::by_name(r, &matching_cfg).unwrap())
        .collect();
    let dir = tmp("lockstep-threads");
    for arch in Arch::tiny_examples(3, 32) {
        let teacher = arch.init(&ad, 2).unwrap().valid();
        let runs = |tag: &str, which: &[usize]| -> Vec<StudentRun> {
            which
                .iter()
                .map(|&i| StudentRun {
                    // a fresh student each time (same weights): clones would share their
                    // BatchNorm running state
                    model: kd.make_student(&teacher, &ad, 3).unwrap(),
                    spec: FineTuneSpec {
                        compression: &kd,
                        regularizer: regs[i].as_ref(),
                        matching: &matching_cfg,
                        train: &train,
                        seed: 0,
                        label: names[i],
                    },
                    dir: dir.join(arch.family()).join(tag).join(names[i]),
                    upstream: String::new(),
                })
                .collect()
        };
        let all: Vec<usize> = (0..names.len()).collect();
        let together =
            fine_tune_lockstep(runs("together", &all), &teacher, &data, &norm, None).unwrap();
        let start = all_floats(&kd.make_student(&teacher, &ad, 3).unwrap());
        for (i, (net, _)) in together.iter().enumerate() {
            let (alone, _) = fine_tune_lockstep(runs("alone", &[i]), &teacher, &data, &norm, None)
                .unwrap()
                .remove(0);
            let (a, b) = (all_floats(net), all_floats(&alone));
            assert_eq!(a.len(), start.len());
            assert_ne!(a, start, "{} {}: nothing trained", arch.family(), names[i]);
            assert!(
                a == b,
                "{} {}: {} of {} floats differ between lockstep and alone",
                arch.family(),
                names[i],
                a.iter().zip(&b).filter(|(x, y)| x != y).count(),
                a.len()
            );
            assert_eq!(logits(&net.valid(), 32), logits(&alone.valid(), 32));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole grid on a tiny network of every family: every compression method x every
/// regularizer, through evaluation and the report. A new family, method or regularizer is
/// covered by being registered.
#[test]
fn every_family_runs_every_compression_with_every_regularizer() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ci.toml");
    let base = faithful::config::ExperimentConfig::load(&path).unwrap();
    let (side, classes) = (base.data.size, base.data.num_classes);
    for (i, arch) in Arch::tiny_examples(classes, side).into_iter().enumerate() {
        let mut cfg = base.clone();
        cfg.teacher.arch = arch.clone();
        cfg.regularizers = matching::names().iter().map(|s| s.to_string()).collect();
        // every method the family supports; one it does not is refused before any training,
        // by the config check, with a message saying so
        let mut supported = Vec::new();
        for method in cfg.method_names() {
            let mut one = cfg.clone();
            one.compressions = vec![method.to_string()];
            match one.validate() {
                Ok(()) => supported.push(method.to_string()),
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(
                        e.contains("not implemented"),
                        "{}: {method}: {e}",
                        arch.describe()
                    );
                }
            }
        }
        assert!(supported.contains(&"kd".to_string()), "{}", arch.describe());
        cfg.compressions = supported;
        let dir = tmp(&format!("grid-{}-{i}", arch.family()));
        let outcome = faithful::experiment::run(&cfg, &dir, &Device::flex())
            .unwrap_or_else(|e| panic!("{}: {e:#}", arch.family()));
        let regs = cfg.regularizers.len();
        // the teacher, one network per method and regularizer, and the earlier pruning rounds
        let expected = 1 + regs * (cfg.compressions.len() + cfg.unstructured.rounds - 1);
        assert_eq!(outcome.rows.len(), expected, "{}", arch.family());
        for c in &cfg.compressions {
            for r in &cfg.regularizers {
                assert!(
                    outcome
                        .rows
                        .iter()
                        .any(|row| &row.compression == c && &row.regularizer == r),
                    "{}: no row for {c} + {r}",
                    arch.family()
                );
            }
        }
        assert!(dir.join("report.html").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every family exports to ONNX and to PyTorch (both checked against independent forwards in
/// `tests/interop.rs`); a family without a PyTorch export (the quantized one, deployed as int8
/// ONNX) says so.
#[test]
fn every_family_exports_to_onnx_and_pytorch() {
    let device = Device::flex();
    let dir = tmp("export");
    for (i, arch) in Arch::tiny_examples(3, 16).into_iter().enumerate() {
        let net = arch.init(&device, 2).unwrap();
        let onnx = dir.join(format!("{}-{i}.onnx", arch.family()));
        faithful::export::export_onnx(&net, &onnx, None).unwrap();
        assert!(std::fs::metadata(&onnx).unwrap().len() > 100);
        let torch = dir.join(format!("{}-{i}-torch", arch.family()));
        match faithful::export::export_torch_network(&net, &torch, None, None) {
            Ok(()) => assert!(std::fs::metadata(torch.with_extension("json")).is_ok()),
            Err(e) if matches!(arch, Arch::Quant(_)) => {
                assert!(format!("{e:#}").contains("not implemented"), "{e:#}")
            }
            Err(e) => panic!("{}: {e:#}", arch.describe()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kd.student_dropout` sets the student's head dropout and nothing else, for every family: the
/// student is the teacher's layout made thinner (with the teacher's dropout when the setting is
/// absent), and with dropout 0 no head mask is drawn in training.
#[test]
fn kd_students_take_their_own_head_dropout_in_every_family() {
    use faithful::training::draw_dropout;
    use rand::SeedableRng;
    let device = Device::flex();
    for arch in Arch::tiny_examples(3, 16) {
        let teacher = arch.with_dropout(0.5).init(&device, 0).unwrap();
        assert_eq!(teacher.arch().dropout(), 0.5, "{}", arch.family());
        let default_student = Distillation {
            width_divisor: 2,
            ..Distillation::default()
        }
        .make_student(&teacher, &device, 1)
        .unwrap();
        assert_eq!(default_student.arch(), teacher.arch().thinner(2));
        for p in [0.0, 0.25] {
            let kd = Distillation {
                width_divisor: 2,
                student_dropout: Some(p),
                ..Distillation::default()
            };
            let student = kd.make_student(&teacher, &device, 1).unwrap();
            assert_eq!(student.arch().dropout(), p, "{}", arch.family());
            assert_eq!(
                student.arch(),
                teacher.arch().thinner(2).with_dropout(p),
                "{}",
                arch.family()
            );
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let drop = draw_dropout(&student, 2, &mut rng, &device);
            assert_eq!(
                drop.masks.iter().all(|m| m.is_none()),
                p == 0.0,
                "{}: masks drawn at dropout {p}",
                arch.family()
            );
        }
    }
    let bad = Distillation {
        student_dropout: Some(1.0),
        ..Distillation::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("kd.student_dropout"), "{err}");
}
