//! The closed-form gradient of a logit with respect to the attribution layer, through a
//! [`PiecewiseLinearHead`]: with the ReLU masks and the max-pool routing taken as constants the
//! head is linear, so `d logit_t / dA` is a product of the linear layers' weights, written with
//! ordinary tracked tensor ops. A loss built on it (Grad-CAM in the loss) therefore stays
//! differentiable with first-order autodiff alone: burn has no double backprop.

use crate::models::head::{HeadDropout, HeadPooling, PiecewiseLinearHead, apply_mask};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::ops::MaxPoolOptions;

/// d(sum_n logit[n, t_n]) / d(pooled features), shaped like the pool's output (N, C, h', w')
/// (1x1 for a global pool). `target` is one-hot (N, K).
pub fn head_grad_pooled(
    head: &PiecewiseLinearHead,
    a: Tensor<4>,
    target: Tensor<2>,
    drop: &HeadDropout,
) -> Tensor<4> {
    let pooled4 = head.pool(a);
    let [n, c, hp, wp] = pooled4.dims();
    // Forward through the hidden layers, remembering each layer's ReLU mask and, in a
    // quantized head, where each layer's input lies inside its quantization range (the
    // straight-through derivative of the fake quantization: 1 inside, 0 where clipped).
    let mut relu_masks = Vec::new();
    let mut clip_masks = Vec::new();
    let mut z: Tensor<2> = pooled4.flatten(1, 3);
    let last = head.hidden.len();
    for i in 0..=last {
        let z_in = apply_mask(z.clone(), &drop.masks[i]);
        clip_masks.push(head.input_clip_mask(i, z_in.clone().detach()));
        if i == last {
            break;
        }
        let pre = head.linear(i, z_in, false);
        relu_masks.push(pre.clone().detach().greater_elem(0.0).float());
        z = relu(pre);
    }
    // Backward: dy/dz_in = (dy/dz_out) W^T, times the clip mask of z_in and the dropout mask
    // that scaled it.
    let through = |grad: Tensor<2>, i: usize| {
        let g = grad.matmul(head.weight(i).transpose());
        let g = match &clip_masks[i] {
            Some(m) => g * m.clone(),
            None => g,
        };
        apply_mask(g, &drop.masks[i])
    };
    let mut grad = through(target, last);
    for i in (0..last).rev() {
        grad = grad * relu_masks[i].clone();
        grad = through(grad, i);
    }
    grad.reshape([n, c, hp, wp])
}

/// Closed-form Grad-CAM channel weights U (N, C): the spatial SUM of d logit_t / dA.
/// A max-pool sends each pooled gradient to exactly one position of A and a global average
/// spreads it evenly, so in both cases the spatial sum over A equals the sum over the pooled
/// map and no routing is needed.
pub fn gradcam_weights(
    head: &PiecewiseLinearHead,
    a: Tensor<4>,
    target: Tensor<2>,
    drop: &HeadDropout,
) -> Tensor<2> {
    head_grad_pooled(head, a, target, drop)
        .sum_dims(&[2, 3])
        .flatten(1, 3)
}

/// The full closed-form d logit_t / dA (N, C, h, w): a max-pool routes each pooled gradient to
/// the argmax of its window (first maximum on ties, as PyTorch and burn do); a global average
/// spreads it evenly over the h*w positions.
pub fn head_grad(
    head: &PiecewiseLinearHead,
    a: Tensor<4>,
    target: Tensor<2>,
    drop: &HeadDropout,
) -> Tensor<4> {
    let [n, c, h, w] = a.dims();
    let gp = head_grad_pooled(head, a.clone(), target, drop);
    match head.pool {
        HeadPooling::GlobalAverage => gp.expand([n, c, h, w]).div_scalar((h * w) as f64),
        HeadPooling::Max { kernel: k } => {
            let (h2, w2) = (h / k, w / k);
            let (_, idx) = burn::tensor::module::max_pool2d_with_indices(
                a.clone().detach(),
                MaxPoolOptions::new([k, k]),
            );
            let up: Tensor<4> = gp
                .reshape([n, c, h2, 1, w2, 1])
                .expand([n, c, h2, k, w2, k])
                .reshape([n, c, h, w]);
            let idx_up: Tensor<4, Int> = idx
                .reshape([n, c, h2, 1, w2, 1])
                .expand([n, c, h2, k, w2, k])
                .reshape([n, c, h, w]);
            let pos: Tensor<4, Int> = Tensor::<1, Int>::arange(0..(h * w) as i64, &a.device())
                .reshape([1, 1, h, w])
                .expand([n, c, h, w]);
            up * pos.equal(idx_up).float()
        }
    }
}
