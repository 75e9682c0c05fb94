"""transformers side of migu's evaluation throughput benchmark (main.go).

Scores pre-tokenized (context, continuation) requests the way
lm-evaluation-harness's HFLM does: requests sorted by total length, longest
first, right-padded batches, one forward per batch, log_softmax over the
logits, the continuation tokens gathered. Causal models read
context + continuation without the last token; seq2seq models read the
context in the encoder and the continuation as labels. Prints JSON: the
median time of the timed passes (after one warm-up pass) and the
log-likelihoods in request order.

Usage: python torch_score.py SPEC.json with
  {"hf": DIR, "seq2seq": bool, "batch": N, "threads": N, "repeats": N,
   "pairs": [[ctx_ids, cont_ids], ...]}
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import transformers

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
seq2seq = spec["seq2seq"]
cls = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
model = cls.from_pretrained(spec["hf"], torch_dtype=torch.float32).eval()
pairs = spec["pairs"]
batch = spec["batch"]
order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))


def pad(seqs):
    n = max(len(s) for s in seqs)
    return torch.tensor([s + [0] * (n - len(s)) for s in seqs], dtype=torch.long)


@torch.no_grad()
def score():
    out = [0.0] * len(pairs)
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        if seq2seq:
            encs = [pairs[i][0] for i in idx]
            conts = [pairs[i][1] for i in idx]
            mask = pad([[1] * len(e) for e in encs])
            logp = F.log_softmax(model(input_ids=pad(encs), attention_mask=mask, labels=pad(conts)).logits, dim=-1)
            for r, i in enumerate(idx):
                cont = torch.tensor(pairs[i][1])
                out[i] = float(logp[r, : len(cont)].gather(1, cont.unsqueeze(1)).sum())
        else:
            inps = [(pairs[i][0] + pairs[i][1])[:-1] for i in idx]
            logp = F.log_softmax(model(pad(inps)).logits, dim=-1)
            for r, i in enumerate(idx):
                cont = torch.tensor(pairs[i][1])
                n = len(inps[r])
                out[i] = float(logp[r, n - len(cont) : n].gather(1, cont.unsqueeze(1)).sum())
    return out


score()  # warm-up
times, lls = [], None
for _ in range(spec["repeats"]):
    start = time.perf_counter()
    lls = score()
    times.append(time.perf_counter() - start)
json.dump({"seconds": statistics.median(times), "logliks": lls}, sys.stdout)
