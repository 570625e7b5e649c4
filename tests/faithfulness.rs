//! The faithfulness metrics on a hand-built network whose decision is known: its logit is
//! `10 · max over pixels of the mean colour − 5`, so only the bright object matters. A map that
//! ranks the object first must beat a random map on deletion, insertion and ROAD, and the
//! randomisation sanity check must see Grad-CAM's maps change.

use burn::module::Param;
use burn::prelude::*;
use faithful::data::Dataset;
use faithful::evaluation::faithfulness::{
    FaithfulnessConfig, cascading_randomization, perturbation_scores,
};
use faithful::models::vgg::HeadPool;
use faithful::models::{Network, VggArch};
use faithful::training::Normalization;

const SIDE: usize = 8;

/// One 3x3 conv to one channel taking the colour mean at the centre tap, global max-pool,
/// linear 1 -> 1 with weight 10 and bias -5.
fn object_detector() -> Network {
    let device = Device::flex();
    let arch = VggArch {
        layout: "1,M".into(),
        num_classes: 1,
        input_size: SIDE,
        head_pool: HeadPool::GlobalMax,
        ..VggArch::default()
    };
    let mut net = arch.init(&device, 0).unwrap();
    let mut w = vec![0f32; 3 * 9];
    for c in 0..3 {
        w[c * 9 + 4] = 1.0 / 3.0;
    }
    net.blocks[0].conv.weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(w, [1, 3, 3, 3]), &device));
    net.blocks[0].conv.bias = Some(Param::from_tensor(Tensor::zeros([1], &device)));
    net.classifier.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![10f32], [1, 1]),
        &device,
    ));
    net.classifier.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![-5f32], [1]),
        &device,
    )));
    Network::Vgg(net)
}

/// One image: a 2x2 object of value 1 at rows/cols 2..4 on a zero background.
fn image() -> (Dataset, Vec<usize>) {
    let mut d = Dataset::empty("hand", vec!["object".into()], SIDE, SIDE);
    let object: Vec<usize> = [(2, 2), (2, 3), (3, 2), (3, 3)]
        .iter()
        .map(|(y, x)| y * SIDE + x)
        .collect();
    let mut img = vec![0f32; 3 * SIDE * SIDE];
    let mut seg = vec![0u8; SIDE * SIDE];
    for &p in &object {
        for c in 0..3 {
            img[c * SIDE * SIDE + p] = 1.0;
        }
        seg[p] = 1;
    }
    d.push(&img, &[1], &seg);
    (d, object)
}

fn identity_norm() -> Normalization {
    Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

#[test]
fn a_map_on_the_object_beats_a_random_map_on_deletion_insertion_and_road() {
    let net = object_detector();
    let (data, object) = image();
    let norm = identity_norm();
    // the network sees the object: sigma(10 * 1 - 5)
    let mut on_object = vec![0.01f32; SIDE * SIDE];
    for &p in &object {
        on_object[p] = 1.0;
    }
    // "random": a fixed scramble that puts the object last
    let mut object_last: Vec<f32> = (0..SIDE * SIDE).map(|p| 1.0 + p as f32).collect();
    for &p in &object {
        object_last[p] = 0.0;
    }
    let cfg = FaithfulnessConfig::default();
    let score = |map: &Vec<f32>| {
        perturbation_scores(
            &net,
            &data,
            &norm,
            &[(0, 0)],
            std::slice::from_ref(map),
            &cfg,
            64,
            1,
        )
        .unwrap()
    };
    let good = score(&on_object);
    let bad = score(&object_last);
    // by hand: the object's 4 pixels go at the first step (1/16 of 64 = 4 pixels), so the
    // deletion curve is sigma(5) then sigma(-5) for 16 steps: area (0.9933 + 0.0067)/32 +
    // 15 * 0.0067 / 16
    let s5 = 1.0 / (1.0 + (-5f64).exp());
    let expected = (s5 + (1.0 - s5)) / 32.0 + 15.0 * (1.0 - s5) / 16.0;
    assert!(
        (good.deletion - expected).abs() < 1e-6,
        "{} vs {expected}",
        good.deletion
    );
    assert!(
        good.deletion < 0.05 && bad.deletion > 0.9,
        "{good:?} {bad:?}"
    );
    assert!(
        good.insertion > 0.9 && bad.insertion < 0.1,
        "{good:?} {bad:?}"
    );
    // ROAD with the map's order removes the object at every percentage (10% = 6 pixels)
    assert!(good.road.iter().all(|(_, p)| *p < 0.05), "{good:?}");
    assert!(
        good.road
            .iter()
            .zip(&good.road_random)
            .all(|(m, r)| m.1 <= r.1)
    );
}

#[test]
fn randomising_the_network_changes_grad_cam_maps() {
    let net = object_detector();
    let (data, _) = image();
    let steps = cascading_randomization(
        &net,
        &faithful::attribution::gradcam::GradCam,
        &data,
        &identity_norm(),
        &[(0, 0)],
        8,
        3,
    )
    .unwrap();
    // groups: the conv, its BatchNorm, the classifier; the trained map is the object
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps.last().unwrap().spearman < 0.9, "{steps:?}");
    // the network itself is untouched by the check
    let x = Tensor::<4>::from_data(
        TensorData::new(data.images.clone(), [1, 3, SIDE, SIDE]),
        &Device::flex(),
    );
    let logit = net.forward(x).into_data().try_to_vec::<f32>().unwrap()[0];
    assert!((logit - 5.0).abs() < 1e-3, "{logit}");
}
