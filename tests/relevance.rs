//! Relevance propagation (LRP, Excitation Backprop, RAP): each method's defining property on
//! every network family, against independent references (burn's autodiff, conservation laws,
//! a hand formula), with random BatchNorm statistics so that the BatchNorm fold is exercised.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use faithful::attribution::excitation_backprop::{
    Excitation, contrastive_probabilities, map_layer, winning_probabilities,
};
use faithful::attribution::lrp::{Composite, Rule};
use faithful::attribution::propagation::{one_hot_relevance, propagate};
use faithful::attribution::rap;
use faithful::models::layers::{Layer, LayerGraph};
use faithful::models::{Arch, Network};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Per-image sums of a (N, ...) tensor.
fn sums(t: Tensor<4>) -> Vec<f32> {
    values(t.sum_dims(&[1, 2, 3]))
}

/// Random BatchNorm statistics and affine parameters and random biases, in the ranges of a
/// trained network: a fresh network's BatchNorm is the identity, which would hide a wrong fold.
#[derive(Default)]
struct RandomVectors {
    path: Vec<String>,
    draw: u64,
}

impl ModuleMapper for RandomVectors {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.into());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (lo, hi) = match self.path.last().map(String::as_str) {
            Some("gamma" | "running_var") => (0.5, 1.5),
            Some("beta") => (-0.3, 0.3),
            Some("running_mean") => (-0.2, 0.2),
            Some("bias") => (-0.1, 0.1),
            _ => return param,
        };
        self.draw += 1;
        let (id, tensor, _) = param.consume();
        let fresh = faithful::util::seeded_random(
            tensor.dims(),
            Distribution::Uniform(lo, hi),
            &tensor.device(),
            self.draw,
        );
        Param::initialized(id, fresh)
    }
}

/// Every family's tiny examples, plus a ResNet with the ImageNet stem (stride-2 conv and a
/// padded 3x3 max-pool, which the tiny examples do not have).
fn networks(side: usize) -> Vec<Network> {
    let device = Device::flex();
    let imagenet_stem = faithful::models::ResNetArch {
        layout: "1,1".into(),
        stem: faithful::models::resnet::Stem::Imagenet,
        base_width: 4,
        num_classes: 3,
        input_size: side,
        ..faithful::models::ResNetArch::default()
    };
    Arch::tiny_examples(3, side)
        .into_iter()
        .chain([Arch::from(imagenet_stem)])
        .map(|arch| {
            let net = arch.init(&device, 11).unwrap();
            net.map(&mut RandomVectors::default())
        })
        .collect()
}

fn input(n: usize, side: usize, seed: u64) -> Tensor<4> {
    faithful::util::seeded_random(
        [n, 3, side, side],
        Distribution::Uniform(-1.0, 1.0),
        &Device::flex(),
        seed,
    )
}

fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

/// The graph with every bias removed (LRP-0 is exact only without biases).
fn without_biases(layers: &[Layer]) -> Vec<Layer> {
    layers
        .iter()
        .map(|l| match l {
            Layer::Weighted(w) => {
                let mut w = w.clone();
                w.bias = None;
                Layer::Weighted(w)
            }
            Layer::Residual { branch, shortcut } => Layer::Residual {
                branch: without_biases(branch),
                shortcut: without_biases(shortcut),
            },
            other => other.clone(),
        })
        .collect()
}

#[test]
fn canonical_layer_lists_compute_the_networks_logits() {
    let side = 16;
    for net in networks(side) {
        let x = input(2, side, 1);
        let graph = net.layer_graph().unwrap();
        let expected = values(net.forward(x.clone()));
        let got = values(graph.forward(x.clone()));
        for (e, g) in expected.iter().zip(&got) {
            assert!(close(*e, *g, 1e-4), "{}: {e} vs {g}", net.arch().describe());
        }
        // the attribution layer sits where the list says
        let acts = graph.activations(x.clone());
        let features = values(net.features(x));
        let at = values(acts[graph.features_at].clone());
        assert_eq!(features.len(), at.len());
        for (e, g) in features.iter().zip(&at) {
            assert!(close(*e, *g, 1e-4));
        }
    }
}

/// On a bias-free ReLU network LRP-0 (ε -> 0) equals gradient x input at every pixel (Ancona
/// et al. 2018): the gradient comes from burn's autodiff through the list's forward pass,
/// independently of the transposed convolutions and pool routing the propagation uses. The
/// input layer's relevance therefore also sums to the logit.
#[test]
fn lrp_zero_equals_gradient_times_input_on_bias_free_networks() {
    let side = 16;
    let eps = Rule::Epsilon(1e-9);
    let lrp0 = Composite {
        input: eps,
        conv: eps,
        dense: eps,
    };
    for net in networks(side) {
        let graph = net.layer_graph().unwrap();
        let graph = LayerGraph {
            layers: without_biases(&graph.layers),
            features_at: graph.features_at,
        };
        let x = input(2, side, 2);
        let classes = [0usize, 2];
        let top = one_hot_relevance(&classes, 3, &x.device());
        let acts = graph.activations(x.clone());
        let n = graph.layers.len();
        // LRP explains the logit itself here: relevance starts at its value
        let start = acts[n].clone() * top.clone();
        let logit = sums(start.clone());
        let r = propagate(&graph, &acts, start, n, 0, &lrp0).unwrap();
        let tracked = x.clone().autodiff().require_grad();
        let selected = sum_selected(&graph, tracked.clone(), top.clone());
        let grad = tracked.grad(&selected.backward()).unwrap();
        let reference = values(x * grad);
        let got = values(r[0].clone());
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (e, g) in reference.iter().zip(&got) {
            assert!(
                (e - g).abs() <= 1e-3 * scale,
                "{}: {e} vs {g}",
                net.arch().describe()
            );
        }
        // conservation at every layer's input, down to the image
        for (k, level) in r.iter().enumerate() {
            for (s, l) in sums(level.clone()).iter().zip(&logit) {
                assert!(close(*s, *l, 1e-3), "layer {k}: {s} vs logit {l}");
            }
        }
    }
}

fn sum_selected(graph: &LayerGraph, x: Tensor<4>, top: Tensor<4>) -> Tensor<1> {
    let mut y = x;
    for l in &graph.layers {
        y = l.forward(y);
    }
    (y * top).sum()
}

/// α1β0 passes only positive shares, so relevance is non-negative at every layer. Biases take
/// no share, so on a bias-free network (where every unit holding relevance has a positive
/// contribution) it also sums to the starting 1 at every layer. Both the paper's composite
/// (z^B input layer) and α1β0 on the signed input itself.
#[test]
fn alpha1_beta0_relevance_is_positive_and_conserved() {
    let side = 16;
    let pure = Composite {
        input: Rule::AlphaBeta {
            alpha: 1.0,
            beta: 0.0,
        },
        ..Composite::ALPHA1_BETA0
    };
    for composite in [Composite::ALPHA1_BETA0, pure] {
        for net in networks(side) {
            let graph = net.layer_graph().unwrap();
            let bias_free = LayerGraph {
                layers: without_biases(&graph.layers),
                features_at: graph.features_at,
            };
            for (g, conserves) in [(graph, false), (bias_free, true)] {
                let x = input(2, side, 3);
                let top = one_hot_relevance(&[1, 2], 3, &x.device());
                let acts = g.activations(x);
                let n = g.layers.len();
                let r = propagate(&g, &acts, top, n, 0, &composite).unwrap();
                for (k, level) in r.iter().enumerate() {
                    let v = values(level.clone());
                    let min = v.iter().fold(0f32, |m, x| m.min(*x));
                    assert!(min >= -1e-6, "layer {k}: negative relevance {min}");
                    for s in sums(level.clone()).into_iter().filter(|_| conserves) {
                        assert!(
                            close(s, 1.0, 1e-3),
                            "{}: layer {k} sums to {s}",
                            net.arch().describe()
                        );
                    }
                }
            }
        }
    }
}

/// A wrong rule shows here: β > 0 subtracts the negative shares, so the same networks get
/// negative relevance somewhere (the positivity above is a property of β = 0, not of the walk).
#[test]
fn alpha2_beta1_gives_negative_relevance() {
    let side = 16;
    let a2b1 = Rule::AlphaBeta {
        alpha: 2.0,
        beta: 1.0,
    };
    let composite = Composite {
        input: a2b1,
        conv: a2b1,
        dense: a2b1,
    };
    for net in networks(side) {
        let graph = net.layer_graph().unwrap();
        let x = input(2, side, 3);
        let top = one_hot_relevance(&[1, 2], 3, &x.device());
        let acts = graph.activations(x);
        let n = graph.layers.len();
        let r = propagate(&graph, &acts, top, n, 0, &composite).unwrap();
        assert!(values(r[0].clone()).iter().any(|v| *v < -1e-6));
    }
}

/// Excitation Backprop's marginal winning probabilities are non-negative at every layer, and
/// on a bias-free network (where every unit holding probability has an excitatory input) they
/// are a distribution at every layer from the logits down to the image's first layer.
#[test]
fn excitation_backprop_conserves_probability_at_every_layer() {
    let side = 16;
    let mut contrast_bites = false;
    for net in networks(side) {
        let x = input(2, side, 4);
        let graph = net.layer_graph().unwrap();
        let acts = graph.activations(x.clone());
        let at = map_layer(&graph, &acts);
        assert!(at >= 1 && at <= graph.features_at);
        assert!(4 * acts[at].dims()[2] <= side || at == graph.features_at);
        let (levels, to) = winning_probabilities(&net, x.clone(), &[0, 1], None).unwrap();
        assert_eq!(to, at);
        for level in &levels {
            let min = values(level.clone()).iter().fold(0f32, |m, x| m.min(*x));
            assert!(min >= -1e-7, "{}: min {min}", net.arch().describe());
        }
        let bias_free = LayerGraph {
            layers: without_biases(&graph.layers),
            features_at: graph.features_at,
        };
        let acts = bias_free.activations(x.clone());
        let n = bias_free.layers.len();
        let top = one_hot_relevance(&[0, 1], 3, &x.device());
        // down to the input of the second layer (z+ at the first layer sees signed pixels); the
        // contrastive dual (negated output weights) is a distribution too
        for negate_output in [false, true] {
            let step = Excitation { negate_output };
            let levels = propagate(&bias_free, &acts, top.clone(), n, 1, &step).unwrap();
            for (k, level) in levels.iter().enumerate() {
                for s in sums(level.clone()) {
                    assert!(
                        close(s, 1.0, 1e-3),
                        "{}: layer {k} sums to {s}",
                        net.arch().describe()
                    );
                }
            }
        }
        // contrastive: the class's probabilities minus the dual's (non-negative) ones, both
        // passed down the same way, so never above EBP's own probabilities at the map layer
        let c = values(contrastive_probabilities(&net, x.clone(), &[0, 1]).unwrap());
        let (p, _) = winning_probabilities(&net, x, &[0, 1], None).unwrap();
        let p = values(p[0].clone());
        assert!(c.iter().zip(&p).all(|(c, p)| *c <= p + 1e-6));
        contrast_bites |= c.iter().zip(&p).any(|(c, p)| *c < p - 1e-4);
    }
    assert!(contrast_bites, "the dual never took anything away");
}

/// RAP conserves relevance by construction, biases included: the input relevance sums to the
/// explained logit. Its first step is the authors' "relative influence": each last-layer input
/// gets |a_i w_it| of the logit, whatever the contribution's sign (a hand formula on the
/// layer's own weights and inputs).
#[test]
fn rap_conserves_the_logit_and_weighs_contributions_by_magnitude() {
    let side = 16;
    for net in networks(side) {
        let x = input(2, side, 5);
        let classes = [2usize, 0];
        let logits = values(net.forward(x.clone()));
        let r = rap::input_relevance(&net, x.clone(), &classes).unwrap();
        for (n, s) in sums(r).iter().enumerate() {
            let logit = logits[n * 3 + classes[n]];
            assert!(
                close(*s, logit, 2e-3),
                "{}: {s} vs logit {logit}",
                net.arch().describe()
            );
        }
        // the first step, by hand
        let graph = net.layer_graph().unwrap();
        let acts = graph.activations(x);
        let n_layers = graph.layers.len();
        let Layer::Weighted(last) = &graph.layers[n_layers - 1] else {
            panic!("the list ends with the classifier")
        };
        let top = one_hot_relevance(&classes, 3, &acts[0].device());
        let step = propagate(&graph, &acts, top, n_layers, n_layers - 1, &rap_step())
            .unwrap()
            .swap_remove(0);
        let got = values(step);
        let a = values(acts[n_layers - 1].clone());
        let w = values(last.weight.clone()); // (K, D, 1, 1)
        let d = a.len() / 2;
        for (n, &t) in classes.iter().enumerate() {
            let contrib: Vec<f32> = (0..d)
                .map(|i| (a[n * d + i] * w[t * d + i]).abs())
                .collect();
            let total: f32 = contrib.iter().sum();
            let logit = logits[n * 3 + t];
            for i in 0..d {
                let expected = contrib[i] / total * logit;
                assert!((got[n * d + i] - expected).abs() < 1e-4 * logit.abs().max(1.0));
            }
        }
    }
}

fn rap_step() -> impl faithful::attribution::propagation::WeightedStep {
    rap::RapStep
}

/// The flat rule (zennit's, for the first layer of EpsilonPlusFlat) ignores weights and inputs:
/// a unit's relevance is shared equally among the inputs in its receptive field. By hand: a
/// 3x3 conv with padding 1 on a 4x4, 2-channel input; relevance 1 at the corner unit (0, 0)
/// reaches its 2x2 real pixels x 2 channels, 1/8 each; at the interior unit (1, 1), 3x3 x 2
/// inputs, 1/18 each.
#[test]
fn flat_rule_shares_equally_over_the_receptive_field() {
    use faithful::attribution::lrp::apply_rule;
    use faithful::models::layers::{WeightKind, WeightLayer};
    let device = Device::flex();
    let layer = WeightLayer {
        weight: faithful::util::seeded_random(
            [1, 2, 3, 3],
            Distribution::Uniform(-1.0, 1.0),
            &device,
            1,
        ),
        bias: None,
        stride: [1, 1],
        padding: [1, 1],
        kind: WeightKind::Conv,
    };
    let a = input(1, 4, 7).slice([0..1, 0..2, 0..4, 0..4]);
    for ((y, x), share, field) in [
        ((0, 0), 1.0 / 8.0, (0..2, 0..2)),
        ((1, 1), 1.0 / 18.0, (0..3, 0..3)),
    ] {
        let mut r = vec![0f32; 16];
        r[y * 4 + x] = 1.0;
        let r = Tensor::<4>::from_data(TensorData::new(r, [1, 1, 4, 4]), &device);
        let got = values(apply_rule(Rule::Flat, &layer, &a, r));
        for c in 0..2 {
            for i in 0..4 {
                for j in 0..4 {
                    let inside = field.0.contains(&i) && field.1.contains(&j);
                    let expected = if inside { share } else { 0.0 };
                    let v = got[c * 16 + i * 4 + j];
                    assert!(
                        (v - expected).abs() < 1e-6,
                        "unit ({y},{x}) input ({c},{i},{j}): {v}"
                    );
                }
            }
        }
    }
}
