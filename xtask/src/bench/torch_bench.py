# The PyTorch side of `cargo xtask bench`: the same workloads, printed as one
# JSON object {name: value} on the last line. Units match the Rust side.
import json, sys, time
import torch

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
torch.manual_seed(0)
for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
    for (m, k, n) in [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (256, 1024, 4096), (256, 4096, 4096), (256, 4096, 10)]:
        a = torch.randn(m, k, dtype=dtype)
        b = torch.randn(k, n, dtype=dtype)
        s = median_time(lambda: torch.matmul(a, b), 7 if m * k * n > 1 << 30 else 15)
        out[f"gemm_{tag}_{m}x{k}x{n}"] = 2 * m * k * n / s / 1e9

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

out["step_f32_ms"] = mlp_step(False)
out["step_bf16_ms"] = mlp_step(True)

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
dst = torch.empty(n)
out["copy_gbs"] = n * 8 / median_time(lambda: dst.copy_(x), 9) / 1e9

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
