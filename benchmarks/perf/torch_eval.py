"""PyTorch side of the evaluation throughput benchmark (BENCH_EVAL=1, see
README.md).

Scores multiple-choice log-likelihood requests with a transformers model
loaded from a Hugging Face folder, on the token ids the Go driver wrote
(items of one context and several continuations). Two ways:

- hflm: as lm-evaluation-harness's HFLM scores loglikelihood requests:
  every request whole, sorted longest first, in batches of --batch,
  right-padded, one forward without an attention mask, log_softmax over
  the vocabulary at every position, the continuation's tokens gathered.
- shared: the trick migu uses (eval/loglik_shared.go) done in
  transformers: each item's context runs once with use_cache, its keys
  and values are repeated for the continuations, which run as one batch
  after it (all but their last token).

Prints one JSON object: the seconds of each timed pass over all items,
the request tokens scored per pass (context + continuation - 1 per
request, the same count on both sides), each request's log-likelihood
(the driver compares them with migu's), torch's version and the peak RSS.
Threads come from --threads and the environment the driver chooses.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

from torch_bench import peak_rss_mb


def hflm(model, reqs, batch):
    """Scores (ctx, cont) pairs HFLM's way; returns the log-likelihoods in
    request order."""
    order = sorted(range(len(reqs)), key=lambda i: -(len(reqs[i][0]) + len(reqs[i][1])))
    out = [0.0] * len(reqs)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        inps = [(reqs[i][0] + reqs[i][1])[:-1] for i in idx]
        seq = max(len(x) for x in inps)
        ids = torch.zeros(len(idx), seq, dtype=torch.long)
        for r, x in enumerate(inps):
            ids[r, :len(x)] = torch.tensor(x)
        logp = F.log_softmax(model(ids).logits, dim=-1)
        for r, i in enumerate(idx):
            cont = reqs[i][1]
            first = len(inps[r]) - len(cont)
            rows = logp[r, first:first + len(cont)]
            out[i] = rows.gather(1, torch.tensor(cont).unsqueeze(1)).sum().item()
    return out


def shared(model, items):
    """Scores each item's context once and its continuations after it;
    returns the log-likelihoods item by item, continuation by
    continuation."""
    out = []
    for ctx, conts in items:
        o = model(torch.tensor([ctx]), use_cache=True)
        first = F.log_softmax(o.logits[0, -1], dim=-1)
        lls = [first[c[0]].item() for c in conts]
        rest = max(len(c) for c in conts) - 1
        if rest > 0:
            n = len(conts)
            # transformers 4.46 returns the legacy tuple of (key, value)
            # per layer when no cache was passed in.
            cache = tuple((k.expand(n, -1, -1, -1).contiguous(), v.expand(n, -1, -1, -1).contiguous())
                          for k, v in o.past_key_values)
            ids = torch.zeros(n, rest, dtype=torch.long)
            for r, c in enumerate(conts):
                ids[r, :len(c) - 1] = torch.tensor(c[:-1])
            mask = torch.ones(n, len(ctx) + rest, dtype=torch.long)
            logp = F.log_softmax(model(ids, past_key_values=cache, attention_mask=mask).logits, dim=-1)
            for r, c in enumerate(conts):
                if len(c) > 1:
                    lls[r] += logp[r, :len(c) - 1].gather(1, torch.tensor(c[1:]).unsqueeze(1)).sum().item()
        out.extend(lls)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--items", required=True, help="JSON: [[ctx ids, [cont ids, ...]], ...]")
    p.add_argument("--mode", choices=["hflm", "shared"], default="hflm")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1, help="items scored once, untimed")
    p.add_argument("--passes", type=int, default=1, help="timed passes over all items")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.hf, torch_dtype=torch.float32)
    model.eval()
    with open(args.items) as f:
        items = json.load(f)
    reqs = [(ctx, cont) for ctx, conts in items for cont in conts]
    tokens = sum(len(c) + len(k) - 1 for c, k in reqs)

    def score(its):
        if args.mode == "shared":
            return shared(model, its)
        return hflm(model, [(ctx, cont) for ctx, conts in its for cont in conts], args.batch)

    times, lls = [], []
    with torch.no_grad():
        score(items[:args.warmup])
        for _ in range(args.passes):
            t = time.perf_counter()
            lls = score(items)
            times.append(time.perf_counter() - t)
    print(json.dumps({"pass_s": times, "tokens": tokens, "ll": lls, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
