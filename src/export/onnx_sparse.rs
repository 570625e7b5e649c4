//! Sparse storage of an ONNX export: weight tensors that are mostly zero (an unstructured-pruned
//! network's) move from `initializer` to `sparse_initializer` as `SparseTensorProto`s (the
//! non-zero values and their int64 row-major linear indices). onnxruntime loads such a file
//! (it densifies the tensors at load); faithful's own runtime ([`crate::runtime`]) keeps them
//! sparse and skips the zeros.

use super::onnx::{DATA_TYPE_FLOAT, ModelProto, SparseTensorProto, TensorProto};
use anyhow::{Result, bail, ensure};

/// `TensorProto.DataType.INT64`.
pub const DATA_TYPE_INT64: i32 = 7;

/// What [`sparsify`] moved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseSummary {
    /// Tensors stored sparse.
    pub tensors: usize,
    /// Their elements, dense.
    pub elements: usize,
    /// Their non-zero elements.
    pub nonzero: usize,
    /// Weight tensors (rank >= 2) left dense.
    pub dense_tensors: usize,
}

/// Writes `model` as ONNX at `out` (atomically) with every weight tensor at most 1/3 non-zero
/// stored sparse; returns what moved and the file sizes dense and sparse, in bytes.
pub fn export_onnx_sparse(
    model: &crate::models::Network,
    out: &std::path::Path,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<(SparseSummary, usize, usize)> {
    use anyhow::Context;
    use prost::Message;
    let mut proto = super::onnx::network_onnx_model(model, normalization)
        .with_context(|| format!("cannot export {}", out.display()))?;
    let dense = proto.encoded_len();
    let summary = sparsify(&mut proto, 1.0 / 3.0)?;
    let bytes = proto.encode_to_vec();
    crate::util::write_atomic(out, &bytes)?;
    Ok((summary, dense, bytes.len()))
}

/// Moves every float initializer of rank ≥ 2 whose fraction of non-zeros is at most
/// `max_density` into `sparse_initializer`. A sparse entry costs 12 bytes (value and index)
/// against 4 dense, so only tensors under 1/3 non-zero shrink the file; `max_density` above
/// 1/3 is refused.
pub fn sparsify(model: &mut ModelProto, max_density: f64) -> Result<SparseSummary> {
    ensure!(
        (0.0..=1.0 / 3.0).contains(&max_density),
        "sparse ONNX: max density {max_density} is outside [0, 1/3] (a sparse entry costs 12 \
         bytes against 4 dense)"
    );
    let Some(graph) = model.graph.as_mut() else {
        bail!("sparse ONNX: the model has no graph");
    };
    let mut summary = SparseSummary::default();
    let mut dense = Vec::new();
    for t in std::mem::take(&mut graph.initializer) {
        if t.dims.len() < 2 || t.data_type != DATA_TYPE_FLOAT {
            dense.push(t);
            continue;
        }
        let values = float_values(&t)?;
        let nonzero: Vec<(usize, f32)> = values
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, v)| *v != 0.0)
            .collect();
        if nonzero.len() as f64 > max_density * values.len() as f64 {
            summary.dense_tensors += 1;
            dense.push(t);
            continue;
        }
        summary.tensors += 1;
        summary.elements += values.len();
        summary.nonzero += nonzero.len();
        graph.sparse_initializer.push(SparseTensorProto {
            values: Some(TensorProto {
                dims: vec![nonzero.len() as i64],
                data_type: DATA_TYPE_FLOAT,
                name: t.name.clone(),
                raw_data: nonzero.iter().flat_map(|(_, v)| v.to_le_bytes()).collect(),
            }),
            indices: Some(TensorProto {
                dims: vec![nonzero.len() as i64],
                data_type: DATA_TYPE_INT64,
                name: String::new(),
                raw_data: nonzero
                    .iter()
                    .flat_map(|(i, _)| (*i as i64).to_le_bytes())
                    .collect(),
            }),
            dims: t.dims.clone(),
        });
    }
    graph.initializer = dense;
    Ok(summary)
}

/// The values of a float tensor stored as raw little-endian bytes.
pub fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    ensure!(
        t.data_type == DATA_TYPE_FLOAT,
        "tensor `{}` is not float (data type {})",
        t.name,
        t.data_type
    );
    let n: i64 = t.dims.iter().product();
    ensure!(
        t.raw_data.len() as i64 == 4 * n,
        "tensor `{}`: {} bytes of raw data for {n} floats (values outside raw_data are not read)",
        t.name,
        t.raw_data.len()
    );
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// A sparse tensor read back: its name, dense extents, ascending row-major positions of its
/// non-zeros and their values.
pub struct SparseParts {
    /// The tensor's name.
    pub name: String,
    /// Dense extents.
    pub dims: Vec<usize>,
    /// Ascending linear positions.
    pub positions: Vec<usize>,
    /// The values at those positions.
    pub values: Vec<f32>,
}

/// A sparse tensor's parts, checked (positions in range and ascending).
pub fn sparse_parts(s: &SparseTensorProto) -> Result<SparseParts> {
    let (Some(values), Some(indices)) = (&s.values, &s.indices) else {
        bail!("a sparse initializer lacks its values or indices");
    };
    let name = values.name.clone();
    let vals = float_values(values)?;
    ensure!(
        indices.data_type == DATA_TYPE_INT64 && indices.dims.len() == 1,
        "sparse tensor `{name}`: indices must be a 1-D int64 tensor of linear positions"
    );
    ensure!(
        indices.raw_data.len() == 8 * vals.len(),
        "sparse tensor `{name}`: {} index bytes for {} values",
        indices.raw_data.len(),
        vals.len()
    );
    let dims: Vec<usize> = s.dims.iter().map(|&d| d.max(0) as usize).collect();
    let total: usize = dims.iter().product();
    let mut idx = Vec::with_capacity(vals.len());
    for b in indices.raw_data.chunks_exact(8) {
        let i = i64::from_le_bytes(b.try_into().expect("chunks of 8"));
        ensure!(
            i >= 0 && (i as usize) < total && idx.last().is_none_or(|&p| p < i as usize),
            "sparse tensor `{name}`: index {i} is out of range [0, {total}) or not ascending"
        );
        idx.push(i as usize);
    }
    Ok(SparseParts {
        name,
        dims,
        positions: idx,
        values: vals,
    })
}
