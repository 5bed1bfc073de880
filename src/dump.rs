//! Recording what the network is fed: every input of every denoiser call, as `.npy` files named
//! `<call>_<input>.npy` (call numbered from 00000, the graph's own input names and dtypes). This is
//! the calibration data of timestep-aware post-training quantization: inputs from real sampling
//! runs, across all noise levels (`drt generate --dump-inputs DIR`).

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::backend::{Input, InputData, IoInfo};
use crate::error::{Error, Result};

pub struct InputDump {
    dir: PathBuf,
    calls: usize,
}

impl InputDump {
    /// Records into `dir`, which is created if needed.
    pub fn new(dir: &Path) -> Result<InputDump> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(InputDump { dir: dir.to_path_buf(), calls: 0 })
    }

    /// Network calls recorded so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Writes the inputs of one call.
    pub fn record(&mut self, inputs: &[Input<'_>], infos: &[IoInfo]) -> Result<()> {
        for input in inputs {
            let name = infos.get(input.index).map_or("input", |i| i.name.as_str());
            let safe: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            let path = self.dir.join(format!("{:05}_{safe}.npy", self.calls));
            write(&path, input).map_err(|e| Error::io(&path, e))?;
        }
        self.calls += 1;
        Ok(())
    }
}

fn write(path: &Path, input: &Input<'_>) -> std::io::Result<()> {
    let shape: Vec<u64> = input.shape.iter().map(|&d| d as u64).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    macro_rules! npy {
        ($data:expr) => {{
            let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd()?;
            w.extend($data.iter().copied())?;
            w.finish()
        }};
    }
    match input.data {
        InputData::F32(d) => npy!(d),
        InputData::F16(d) => npy!(d),
        InputData::I64(d) => npy!(d),
        InputData::I32(d) => npy!(d),
    }
}
