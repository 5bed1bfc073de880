"""How far optimum's own pipeline moves when its input latents move by one float32 ulp, for the
float32 and float16 exports of tests/fixtures/sd-tiny: the floor under any comparison with its images that is
not bit for bit (tests/sd.rs, float16_export_equals_optimums_pipeline).

    .venv-sd/bin/python benches/peer/sd_sensitivity.py
"""
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler
from optimum.onnxruntime import ORTStableDiffusionPipeline

HERE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "sd-tiny"
SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpmpp2m": DPMSolverMultistepScheduler,
              "lcm_1step": LCMScheduler}


def main() -> None:
    for prefix, export in [("", "export"), ("fp16_", "export-fp16")]:
        for name, cls in SCHEDULERS.items():
            case = json.loads((HERE / "reference" / f"{prefix}{name}.json").read_text())
            pipe = ORTStableDiffusionPipeline.from_pretrained(HERE / export)
            pipe.scheduler = cls.from_config(pipe.scheduler.config, **case["config"])
            pipe.set_progress_bar_config(disable=True)
            latents = np.load(HERE / "reference" / f"{prefix}{name}_latents.npy")

            def run(lat):
                return pipe(prompt=case["prompts"], negative_prompt=case["negative_prompts"],
                            latents=torch.from_numpy(lat), num_inference_steps=case["steps"],
                            guidance_scale=case["guidance"], height=case["height"], width=case["width"],
                            output_type="np", generator=torch.Generator().manual_seed(0)).images

            a, b = run(latents), run(np.nextafter(latents, np.float32(np.inf)).astype(np.float32))
            print(f"{export} {name}: one ulp moves the images by rel. L2 {np.linalg.norm(a - b) / np.linalg.norm(a):.2e}")


if __name__ == "__main__":
    main()
