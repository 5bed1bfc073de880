"""Success of the point-task policy against network passes per plan, from noise (cold) and warm
started from the previous plan, with the regression baseline beside them: one `drt policy-eval`
process per configuration, one after another, and a Markdown table of the results.

  cargo build --release
  python3 benches/policy_study.py [--backend ort] [--episodes 200] [--cold 1,2,4,8,16] \
      [--warm-steps 8] [--warm 0.125,0.25,0.5] [--json OUT.json]

Needs only the standard library and the release build of drt.
"""
import argparse
import json
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRT = REPO / "target" / "release" / "drt"


def run(model, backend, episodes, extra, task):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [str(DRT), "policy-eval", "--model", str(model), "--backend", backend, "--threads", "1",
               "--episodes", str(episodes), "--task", str(task), "--json", out.name, *extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="ort")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--cold", default="1,2,4,8,16", help="steps per plan from noise")
    p.add_argument("--warm-steps", type=int, default=8, help="the schedule warm starts run part of")
    p.add_argument("--warm", default="0.125,0.25,0.5", help="fractions of it run per warm-started plan")
    p.add_argument("--json")
    a = p.parse_args()
    policy = REPO / "models" / "point-policy"
    task = policy / "task.json"
    rows = [("regression baseline", run(REPO / "models" / "point-policy-regression", a.backend, a.episodes, [], task))]
    for steps in a.cold.split(","):
        rows.append((f"cold, {steps} steps", run(policy, a.backend, a.episodes, ["--steps", steps], task)))
    for f in a.warm.split(","):
        extra = ["--steps", str(a.warm_steps), "--warm-start", f]
        rows.append((f"warm, {f} of {a.warm_steps} steps", run(policy, a.backend, a.episodes, extra, task)))
    print("| | success | collisions | left / right | passes per plan | per control step | plan p50 | plan p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {100 * r['success_rate']:.1f} % | {r['collisions']} | "
              f"{100 * r['left_share']:.0f} / {100 * r['right_share']:.0f} % | {r['passes_per_plan']:.2f} | "
              f"{r['passes_per_control_step']:.3f} | {r['plan_us_p50']:.0f} µs | {r['plan_us_p99']:.0f} µs |")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
