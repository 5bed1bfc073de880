//! Bit-faithful re-implementations of the handful of numpy/torch array routines diffusers builds its
//! schedules with. Timestep grids are rounded and sigma tables interpolated, so an "equivalent" formula
//! that differs in the last bit can move a rounded timestep by one or a grid point by 1e-7; these
//! follow the libraries' own evaluation order instead (checked against numpy 2.4 / torch 2.x output
//! by `tests/samplers_analytic.rs`).

/// `numpy.linspace(start, stop, num)` (float64, endpoint included): `i * step + start`, last = `stop`.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| if step == 0.0 { (i as f64 / div) * delta + start } else { i as f64 * step + start })
        .collect();
    y[num - 1] = stop;
    y
}

/// `numpy.linspace(start, stop, num, endpoint=False)`.
pub fn np_linspace_open(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let div = num as f64;
    let step = (stop - start) / div;
    (0..num).map(|i| i as f64 * step + start).collect()
}

/// `numpy.arange(start, stop, step)` for floats: numpy fills `start + i * delta` with
/// `delta = (start + step) - start`, which is not always `step` bit for bit.
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if !len.is_finite() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `numpy.round`: halves go to the even neighbour (Rust's `round` goes away from zero).
pub fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `numpy.interp(x, arange(len(fp)), fp)` with float32 table values promoted to float64.
/// Exact grid points return the table value untouched, as numpy does.
pub fn np_interp_index(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return f64::NAN;
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1] as f64;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = (y1 - y0) / 1.0;
    slope * (x - j as f64) + y0
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU: the step is computed in float32
/// and each half of the range is measured from its own end point; the product-and-add is rounded
/// once (matched here by evaluating it in float64). Beta tables built this way differ from a
/// float64 linspace in about a third of their entries.
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / ((steps - 1) as f32);
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                (s as f64 + step as f64 * i as f64) as f32
            } else {
                (e as f64 - step as f64 * (steps - i - 1) as f64) as f32
            }
        })
        .collect()
}

/// `torch.linspace(start, end, steps, dtype=torch.float64)`.
pub fn torch_linspace_f64(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f64;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { start + step * i as f64 } else { end - step * (steps - i - 1) as f64 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_hits_both_ends() {
        let y = np_linspace(0.0, 999.0, 7);
        assert_eq!(y[0], 0.0);
        assert_eq!(y[6], 999.0);
        assert_eq!(np_linspace(3.0, 5.0, 1), vec![3.0]);
        assert!(np_linspace(0.0, 1.0, 0).is_empty());
    }

    #[test]
    fn arange_counts_like_numpy() {
        // numpy.arange(1000, 0, -1000/30) has 30 entries, the last one 33.33...
        let a = np_arange(1000.0, 0.0, -1000.0 / 30.0);
        assert_eq!(a.len(), 30);
        assert!((a[29] - 33.333333333333).abs() < 1e-9);
        assert!(np_arange(0.0, 10.0, -1.0).is_empty());
    }

    #[test]
    fn round_half_even() {
        assert_eq!(np_round(2.5), 2.0);
        assert_eq!(np_round(3.5), 4.0);
        assert_eq!(np_round(-0.5), -0.0);
    }

    #[test]
    fn interp_returns_table_values_on_grid() {
        let fp = [1.0f32, 2.0, 4.0];
        assert_eq!(np_interp_index(1.0, &fp), 2.0);
        assert_eq!(np_interp_index(1.5, &fp), 3.0);
        assert_eq!(np_interp_index(7.0, &fp), 4.0);
        assert_eq!(np_interp_index(-1.0, &fp), 1.0);
    }

    #[test]
    fn torch_linspace_is_symmetric_at_the_ends() {
        let v = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(v[0], 0.0001f32);
        assert_eq!(v[999], 0.02f32);
    }
}
