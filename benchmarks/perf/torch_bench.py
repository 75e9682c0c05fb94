"""PyTorch eager side of the migu performance benchmark (see README.md).

Trains a transformers model loaded from a Hugging Face folder for a fixed
number of optimizer steps, on the batches the Go driver wrote, the way a
PyTorch user would: forward with labels, backward, (MIGU: magnitude hooks
and a per-layer quantile mask on the gradients, as the authors' code does),
torch.optim.AdamW, zero_grad. Prints one JSON object: per-step wall times,
tokens per step and the peak resident set size of this process.

--precision bf16 runs the forward pass (and so the loss) under
torch.autocast(device, dtype=torch.bfloat16), the way a PyTorch 2.x user
fine-tunes on a CPU with bf16 hardware: float32 master weights, gradients and
AdamW state; bf16 matrix products through oneDNN. The backward pass follows
the forward's dtypes, outside the context, as PyTorch's documentation asks.

With --matmul it times the MatMul ceiling instead: the faster of a 2048^3
and a 2000^3 float32 MatMul (the Go side measures ORT the same way), under
the same autocast with --precision bf16.
Thread settings come from the environment the driver chooses
(OMP_NUM_THREADS, OMP_WAIT_POLICY, the BLAS on LD_LIBRARY_PATH) and from
--threads (torch.set_num_threads).
"""

import argparse
import contextlib
import json
import os
import resource
import sys
import time

import torch


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(args):
    """The precision's context: bf16 autocast, or nothing for fp32."""
    if args.precision == "bf16":
        return torch.autocast(args.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul(n, reps, device):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = time.perf_counter()
    a @ b
    sync(device)
    first = time.perf_counter() - t
    if first > 2:  # a reference BLAS: one run says enough
        return 2 * n**3 / first / 1e9
    a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


CEILING_SIZES = (2048, 2000)


def ceiling(reps, args):
    with autocast(args):
        return max(matmul(n, reps, args.device) for n in CEILING_SIZES)


LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "t5": ["q", "v"], "roberta": ["query", "value"]}


class Migu:
    """Per-feature L1 magnitudes of linear outputs (forward hooks), and the
    gradient mask: rows of weight[out, in] whose magnitude is below the
    layer's T-quantile get a zero gradient."""

    def __init__(self, t):
        self.t = t
        self.mags = {}  # weight tensor -> accumulated magnitudes [out]
        self.hooks = []

    def tap(self, module, weight):
        def hook(_m, _inp, out):
            with torch.no_grad():
                y = out.detach().float()  # bf16 under autocast: sum in float32
                self.mags[weight] = self.mags.get(weight, 0) + y.abs().reshape(-1, y.shape[-1]).sum(0)

        self.hooks.append(module.register_forward_hook(hook))

    def apply(self):
        with torch.no_grad():
            for w, n in self.mags.items():
                if w.grad is None:
                    continue
                keep = (n >= torch.quantile(n, self.t)).to(w.grad.dtype)
                w.grad.mul_(keep.view(-1, *([1] * (w.grad.dim() - 1))))
        self.mags.clear()


def build(args):
    import transformers

    cfg = json.load(open(os.path.join(args.hf, "config.json")))
    cls = getattr(transformers, cfg["architectures"][0])
    model = cls.from_pretrained(args.hf, torch_dtype=torch.float32).to(args.device)
    model.eval()  # no dropout: the ONNX training graphs have none
    migu = Migu(args.T) if args.migu else None
    if args.method == "lora":
        import peft

        pc = peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS[args.arch])
        model = peft.get_peft_model(model, pc)
        model.eval()
        if migu:
            from peft.tuners.lora import LoraLayer

            for m in model.modules():
                if isinstance(m, LoraLayer):
                    a, b = m.lora_A["default"], m.lora_B["default"]
                    migu.tap(a, a.weight)  # A by x·A
                    migu.tap(m, b.weight)  # B by the layer's output
    elif migu:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                migu.tap(m, m.weight)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    return model, opt, migu


def train(args):
    batches = json.load(open(args.batches))
    feeds = [{k: torch.tensor(v, dtype=torch.long, device=args.device) for k, v in b["feeds"].items()} for b in batches]
    tokens = [b["tokens"] for b in batches]
    model, opt, migu = build(args)
    times, updates, losses, tok, warm = [], [], [], [], []
    for i in range(args.warmup + args.steps):
        f = feeds[i % len(feeds)]
        sync(args.device)
        t = time.perf_counter()
        with autocast(args):
            loss = model(**f).loss
        loss.backward()
        sync(args.device)
        u = time.perf_counter()
        if migu:
            migu.apply()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
        end = time.perf_counter()
        if i >= args.warmup:
            times.append(end - t)
            updates.append(end - u)
            tok.append(tokens[i % len(feeds)])
            losses.append(float(loss))
        else:
            warm.append(float(loss))
    return {"step_s": times, "update_s": updates, "tokens": tok, "loss": losses, "warmup_loss": warm,
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf")
    ap.add_argument("--arch")
    ap.add_argument("--method", default="full")
    ap.add_argument("--migu", type=int, default=0)
    ap.add_argument("--T", type=float, default=0.7)
    ap.add_argument("--batches")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: the forward pass under torch.autocast(dtype=torch.bfloat16)")
    ap.add_argument("--matmul", action="store_true", help="time the MatMul ceiling instead of training")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.matmul:
        out = {"gflops": ceiling(5, args)}
    else:
        out = train(args)
    out["threads"] = torch.get_num_threads()
    out["torch"] = torch.__version__
    out["precision"] = args.precision
    out["peak_rss_mb"] = peak_rss_mb()
    if not args.matmul:
        # The ceiling now, in this process, after the peak RSS is read.
        out["gflops"] = ceiling(3, args)
    if args.device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
