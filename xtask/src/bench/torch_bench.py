# The PyTorch side of `cargo xtask bench`: the same workloads, printed as one
# JSON object {name: value} on the last line. Units match the Rust side.
import json, subprocess, sys, time
import torch
import torch.nn.functional as F

# The vocabulary of the bundled corpus (`--vocab N`, passed by the Rust side).
VOCAB = int(sys.argv[sys.argv.index("--vocab") + 1]) if "--vocab" in sys.argv else 96
HEADS, HEAD_DIM = 8, 64
# amp-train lm's defaults: batch 32, context 128, 4 layers, d_model 128, 4 heads, AdamW lr 3e-3.
BATCH, CONTEXT, LAYERS, D_MODEL, GPT_HEADS, LR = 32, 128, 4, 128, 4, 3e-3


class Block(torch.nn.Module):
    # Pre-LN: x + attn(norm1(x)), then x + linear2(gelu_tanh(linear1(norm2(x)))), as nanoGPT.
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(d)
        self.in_proj = torch.nn.Linear(d, 3 * d)
        self.out_proj = torch.nn.Linear(d, d)
        self.norm2 = torch.nn.LayerNorm(d)
        self.linear1 = torch.nn.Linear(d, 4 * d)
        self.linear2 = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, e = x.shape
        q, k, v = self.in_proj(self.norm1(x)).split(e, dim=2)
        q, k, v = (z.view(b, t, self.heads, e // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out_proj(y.transpose(1, 2).contiguous().view(b, t, e))
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x)), approximate="tanh"))


class Gpt(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(VOCAB, D_MODEL)
        self.wpe = torch.nn.Embedding(CONTEXT, D_MODEL)
        self.blocks = torch.nn.ModuleList(Block(D_MODEL, GPT_HEADS) for _ in range(LAYERS))
        self.ln_f = torch.nn.LayerNorm(D_MODEL)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # the tied head


def gpt_step_fn(autocast):
    torch.manual_seed(0)
    model = Gpt()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    x = torch.randint(0, VOCAB, (BATCH, CONTEXT))
    y = torch.randint(0, VOCAB, (BATCH, CONTEXT))
    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), y.reshape(-1))
        loss.backward()
        opt.step()
    return step


def attention_pass_fn(t):
    shape = (1, HEADS, t, HEAD_DIM)
    q, k, v, w = (torch.randn(shape).to(torch.bfloat16) for _ in range(4))
    for z in (q, k, v):
        z.requires_grad_(True)
    def run():
        for z in (q, k, v):
            z.grad = None
        y = F.scaled_dot_product_attention(q, k, v)
        (y * w).sum().backward()
    return run


def memory_mib():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    kb = lambda k: float(fields[k].strip().split()[0]) / 1024.0
    return kb("VmHWM"), kb("VmRSS")


if len(sys.argv) > 2 and sys.argv[1] == "rss":
    # One workload in this process: prints "peak base" in MiB (as `cargo xtask bench-rss`).
    workload = sys.argv[2]
    _, base = memory_mib()
    if workload.startswith("gpt-"):
        fn = gpt_step_fn(workload == "gpt-bf16")
    else:
        fn = attention_pass_fn(int(workload.split("-")[1]))
    for _ in range(3):
        fn()
    peak, _ = memory_mib()
    print(peak, base)
    sys.exit(0)


def rss_in_child(workload):
    out = subprocess.run([sys.executable, __file__, "rss", workload, "--vocab", str(VOCAB)],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])

def median_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]

out = {}
def conv_ms(c, hw, autocast):
    # One 3x3 convolution (padding 1), forward + backward of input and weight, batch 32.
    x = torch.randn(32, c, hw, hw, requires_grad=True)
    w = (torch.randn(c, c, 3, 3) * 0.04).requires_grad_(True)
    probe = torch.randn(32, c, hw, hw)
    def run():
        x.grad = None
        w.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = F.conv2d(x, w, padding=1)
        y.backward(probe.to(y.dtype))
    return median_time(run, 5) * 1e3
class BasicBlock(torch.nn.Module):
    # torchvision's BasicBlock.
    def __init__(self, a, b, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(a, b, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(b)
        self.conv2 = torch.nn.Conv2d(b, b, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(b)
        self.downsample = None
        if stride != 1 or a != b:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(a, b, 1, stride, bias=False), torch.nn.BatchNorm2d(b))
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return F.relu(out)
def resnet_step_ms(autocast):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        BasicBlock(64, 64, 1), BasicBlock(64, 64, 1), BasicBlock(64, 128, 2), BasicBlock(128, 128, 1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(32, 3, 32, 32)
    y = torch.randint(0, 10, (32,))
    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return median_time(step, 3) * 1e3
def memory_rows():
    """Casts, elementwise ops, unscale, AdamW and copy over 16 Mi elements (`--only memory`)."""
    n = 1 << 24
    x = torch.randn(n)
    out["cast_f32_bf16_gbs"] = n * 6 / median_time(lambda: x.to(torch.bfloat16), 9) / 1e9
    out["cast_f32_f16_gbs"] = n * 6 / median_time(lambda: x.to(torch.float16), 9) / 1e9
    xb = x.to(torch.bfloat16)
    out["cast_bf16_f32_gbs"] = n * 6 / median_time(lambda: xb.to(torch.float32), 9) / 1e9
    found = torch.zeros(1)
    inv = torch.full((1,), 1.0 / 65536)
    g = torch.randn(n)
    out["unscale_gbs"] = n * 8 / median_time(lambda: torch._amp_foreach_non_finite_check_and_unscale_([g], found, inv), 9) / 1e9
    y = torch.randn(n)
    out["relu_f32_gbs"] = n * 8 / median_time(lambda: torch.relu(x), 9) / 1e9
    out["add_f32_gbs"] = n * 12 / median_time(lambda: x + y, 9) / 1e9
    yb = y.to(torch.bfloat16)
    out["add_bf16_gbs"] = n * 6 / median_time(lambda: xb + yb, 9) / 1e9
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=1e-2, fused=True)
    out["adamw_f32_gbs"] = n * 28 / median_time(opt.step, 9) / 1e9
    dst = torch.empty(n)
    out["copy_gbs"] = n * 8 / median_time(lambda: dst.copy_(x), 9) / 1e9


def transformer_rows():
    """Attention forward + backward, its memory, and the GPT step (`--only transformer`)."""
    for t in (512, 1024, 2048):
        out[f"attn_bf16_T{t}_ms"] = median_time(attention_pass_fn(t), 5 if t >= 2048 else 9) * 1e3
    for t in (512, 1024, 2048):
        peak, base = rss_in_child(f"attn-{t}")
        out[f"attn_bf16_T{t}_rss_mib"] = peak - base
    out["gpt_step_f32_tok_s"] = BATCH * CONTEXT / median_time(gpt_step_fn(False), 5)
    out["gpt_step_bf16_tok_s"] = BATCH * CONTEXT / median_time(gpt_step_fn(True), 5)
    for workload, key in (("gpt-f32", "gpt_f32"), ("gpt-bf16", "gpt_bf16")):
        peak, base = rss_in_child(workload)
        out[f"{key}_peak_rss_mib"] = peak
        out[f"{key}_step_rss_mib"] = peak - base


def gemm_rows():
    """The GEMM rows and the MLP training step (`--only gemm`)."""
    torch.manual_seed(0)
    for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
        for (m, k, n) in [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (256, 1024, 4096), (256, 4096, 4096), (256, 4096, 10)]:
            a = torch.randn(m, k, dtype=dtype)
            b = torch.randn(k, n, dtype=dtype)
            s = median_time(lambda: torch.matmul(a, b), 7 if m * k * n > 1 << 30 else 15)
            out[f"gemm_{tag}_{m}x{k}x{n}"] = 2 * m * k * n / s / 1e9
    out["step_f32_ms"] = mlp_step(False)
    out["step_bf16_ms"] = mlp_step(True)


def mlp_step(autocast):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(256, 1024)
    y = torch.randint(0, 10, (256,))
    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return median_time(step, 5) * 1e3


# `--only cnn` / `--only gemm` / `--only memory` / `--only transformer`: those rows alone (as `cargo xtask bench --only ...`).
ONLY = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
if ONLY == "memory":
    memory_rows()
    print(json.dumps(out))
    sys.exit(0)
if ONLY == "transformer":
    transformer_rows()
    print(json.dumps(out))
    sys.exit(0)
if ONLY == "gemm":
    gemm_rows()
    print(json.dumps(out))
    sys.exit(0)
for tag, c, hw in (("64c56", 64, 56), ("128c28", 128, 28)):
    out[f"conv_f32_{tag}_ms"] = conv_ms(c, hw, False)
    out[f"conv_bf16_{tag}_ms"] = conv_ms(c, hw, True)
out["resnet_step_f32_ms"] = resnet_step_ms(False)
out["resnet_step_bf16_ms"] = resnet_step_ms(True)
if ONLY == "cnn":
    print(json.dumps(out))
    sys.exit(0)
gemm_rows()

transformer_rows()

memory_rows()

a = torch.randn(8)
b = torch.randn(8)
reps = 20000
t = time.perf_counter()
for _ in range(reps):
    torch.add(a, b)
out["tiny_add_us"] = (time.perf_counter() - t) / reps * 1e6

def digits_like(autocast):
    # The digits MLP (64-256-256-10, batch 64, 23 steps/epoch, 30 epochs) on random data of the same shape.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(1437, 64)
    y = torch.randint(0, 10, (1437,))
    t = time.perf_counter()
    for _ in range(30):
        perm = torch.randperm(1437)
        for i in range(0, 1437, 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return time.perf_counter() - t

out["digits_f32_s"] = digits_like(False)
out["digits_bf16_s"] = digits_like(True)
print(json.dumps(out))
