//! Sample quality as a classifier judges it: class accuracy, and the Fréchet distance between the
//! classifier's features of generated samples and reference statistics of the training data
//! (lower is better). A classifier directory holds `classifier.onnx` (input `image`, outputs
//! `logits` and `features`) and `reference_mean.npy` / `reference_cov.npy` (float64), as
//! `models/digits-classifier/` does.

use std::path::Path;

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::backend::{self, BackendOptions, Input, InputData, Runner};
use crate::error::{Error, Result};

/// Judgement of a set of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    pub samples: usize,
    /// Share of samples whose most likely class is the requested one; `None` without requested classes.
    pub class_accuracy: Option<f64>,
    pub frechet_distance: f64,
}

/// A loaded classifier and its reference statistics.
pub struct Judge {
    runner: Box<dyn Runner>,
    /// Input shape without the batch dimension.
    image_shape: Vec<usize>,
    logits: (usize, usize),
    features: (usize, usize),
    ref_mean: DVector<f64>,
    ref_cov: DMatrix<f64>,
}

/// Images per classifier call, so judging many samples needs bounded memory.
const CHUNK: usize = 256;

impl Judge {
    pub fn load(dir: &Path, opts: &BackendOptions) -> Result<Judge> {
        let graph = backend::load_graph(&dir.join("classifier.onnx"), opts)?;
        let model_err = |msg: String| Error::Model(format!("{}: {msg}", dir.join("classifier.onnx").display()));
        let input = match graph.inputs() {
            [i] if i.name == "image" => i.clone(),
            _ => return Err(model_err("a classifier takes exactly one input, `image`".into())),
        };
        let image_shape: Option<Vec<usize>> = input.shape.iter().skip(1).copied().collect();
        let image_shape = image_shape
            .filter(|s| !s.is_empty())
            .ok_or_else(|| model_err(format!("`{input}` must be [batch, fixed dims...]")))?;
        let output = |name: &str| -> Result<(usize, usize)> {
            let (i, info) = graph
                .outputs()
                .iter()
                .enumerate()
                .find(|(_, o)| o.name == name)
                .ok_or_else(|| model_err(format!("a classifier needs an output `{name}`")))?;
            match info.shape.as_slice() {
                [_, Some(n)] => Ok((i, *n)),
                _ => Err(model_err(format!("`{info}` must be [batch, n]"))),
            }
        };
        let (logits, features) = (output("logits")?, output("features")?);
        let d = features.1;
        let ref_mean = read_f64(&dir.join("reference_mean.npy"), &[d])?;
        let ref_cov = read_f64(&dir.join("reference_cov.npy"), &[d, d])?;
        Ok(Judge {
            runner: graph.runner()?,
            image_shape,
            logits,
            features,
            ref_mean: DVector::from_vec(ref_mean),
            ref_cov: DMatrix::from_row_slice(d, d, &ref_cov),
        })
    }

    /// Values per image the classifier takes.
    pub fn image_len(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// Judges `images` (`n × image_len` values in [-1, 1]; clipped like the training data); `classes`
    /// holds the requested class of each image, or is empty.
    pub fn judge(&mut self, images: &[f32], classes: &[i64]) -> Result<Quality> {
        let len = self.image_len();
        let n = images.len() / len;
        if n < 2 || images.len() != n * len {
            return Err(Error::InvalidArgument(format!(
                "judging needs at least two images of {len} values; got {} values",
                images.len()
            )));
        }
        if !classes.is_empty() && classes.len() != n {
            return Err(Error::InvalidArgument(format!("{} requested classes for {n} images", classes.len())));
        }
        let (nl, nf) = (self.logits.1, self.features.1);
        let (mut logits, mut features) = (vec![0f32; n * nl], vec![0f32; n * nf]);
        let mut shape = vec![0usize];
        shape.extend_from_slice(&self.image_shape);
        for (k, chunk) in images.chunks(CHUNK * len).enumerate() {
            let b = chunk.len() / len;
            shape[0] = b;
            let clipped: Vec<f32> = chunk.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
            let input = [Input { index: 0, shape: &shape, data: InputData::F32(&clipped) }];
            let rows = k * CHUNK..k * CHUNK + b;
            self.runner.run(&input, self.logits.0, &mut logits[rows.start * nl..rows.end * nl])?;
            self.runner.run(&input, self.features.0, &mut features[rows.start * nf..rows.end * nf])?;
        }
        let class_accuracy = (!classes.is_empty()).then(|| {
            let hits = logits.chunks(nl).zip(classes).filter(|(l, &c)| argmax(l) == c as usize).count();
            hits as f64 / n as f64
        });
        let (mean, cov) = mean_cov(&features, nf);
        let frechet_distance = frechet_distance(&mean, &cov, &self.ref_mean, &self.ref_cov);
        Ok(Quality { samples: n, class_accuracy, frechet_distance })
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// A reference statistic of `shape`; anything else is a broken classifier directory.
fn read_f64(path: &Path, shape: &[usize]) -> Result<Vec<f64>> {
    let (got, data) = crate::npy::read_f64(path).map_err(|e| match e {
        Error::InvalidArgument(msg) => Error::Model(msg),
        other => other,
    })?;
    if got != shape {
        return Err(Error::Model(format!("{}: expected shape {shape:?}, got {got:?}", path.display())));
    }
    Ok(data)
}

/// Mean and unbiased covariance (as numpy's `cov`) of `n` rows of `d` features.
pub fn mean_cov(rows: &[f32], d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = rows.len() / d;
    let x = DMatrix::from_fn(n, d, |i, j| rows[i * d + j] as f64);
    let mean = DVector::from_fn(d, |j, _| x.column(j).mean());
    let centered = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
    let cov = centered.transpose() * &centered / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// Fréchet distance between the Gaussians `N(m1, c1)` and `N(m2, c2)`:
/// `|m1 - m2|² + tr(c1 + c2 - 2 (c1 c2)^½)`, with `tr (c1 c2)^½` computed as the sum of square
/// roots of the eigenvalues of the symmetric `c1^½ c2 c1^½` (covariances may be singular).
pub fn frechet_distance(m1: &DVector<f64>, c1: &DMatrix<f64>, m2: &DVector<f64>, c2: &DMatrix<f64>) -> f64 {
    let e = SymmetricEigen::new(c1.clone());
    let root = e.eigenvalues.map(|l| l.max(0.0).sqrt());
    let sqrt_c1 = &e.eigenvectors * DMatrix::from_diagonal(&root) * e.eigenvectors.transpose();
    let m = &sqrt_c1 * c2 * &sqrt_c1;
    let m = (&m + m.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(m).eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    (m1 - m2).norm_squared() + c1.trace() + c2.trace() - 2.0 * tr_sqrt
}
