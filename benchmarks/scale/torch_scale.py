"""PyTorch side of migu's scale benchmark (see README.md).

Loads a Hugging Face checkpoint written by `migu init` and trains it for a
few optimizer steps on random token batches, the way a PyTorch user with
little memory would: LoRA through PEFT (q_proj and v_proj, r 8, alpha 32,
LoRA weights float32) on frozen weights in --dtype (bfloat16 by default),
or full fine-tuning in float32 with torch.optim.AdamW; --recompute layers
turns on transformers' gradient checkpointing, which mirrors migu's
`--recompute layers`. Prints one JSON object: per-step seconds, tokens per
step, losses, load time, and the peak resident set size of this process
after loading and at the end.

Threads come from --threads and from the environment the driver picks
(OMP_NUM_THREADS, OMP_WAIT_POLICY, an OpenBLAS on LD_LIBRARY_PATH).
"""

import argparse
import json
import sys
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def load(args):
    import transformers

    dtype = DTYPES[args.dtype] if args.method == "lora" else torch.float32
    # low_cpu_mem_usage loads the weights straight into the model instead
    # of initialising it randomly first, which would double the peak.
    model = transformers.AutoModelForCausalLM.from_pretrained(args.hf, torch_dtype=dtype, low_cpu_mem_usage=True)
    if args.recompute == "layers":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if args.method == "lora":
        import peft

        cfg = peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        # autocast_adapter_dtype keeps the adapters in float32 over
        # half-precision base weights.
        model = peft.get_peft_model(model, cfg, autocast_adapter_dtype=True)
    model.train()  # Llama has no dropout; checkpointing needs training mode
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="Hugging Face folder from migu init")
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="frozen weights' dtype for LoRA (full is float32)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--recompute", choices=["none", "layers"], default="none")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    model = load(args)
    load_s = time.perf_counter() - t
    load_rss = peak_rss_mb()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)

    times, losses = [], []
    for _ in range(args.steps):
        ids = torch.randint(3, vocab, (args.batch, args.seq), generator=gen)
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(float(loss))

    frozen = [p for p in model.parameters() if not p.requires_grad]
    out = {
        "step_s": times,
        "tokens": [args.batch * args.seq] * len(times),
        "loss": losses,
        "load_s": load_s,
        "load_rss_mb": load_rss,
        "peak_rss_mb": peak_rss_mb(),
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in params),
        "trainable_dtype": str(params[0].dtype).removeprefix("torch.") if params else "",
        "frozen_dtype": str(frozen[0].dtype).removeprefix("torch.") if frozen else "",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
