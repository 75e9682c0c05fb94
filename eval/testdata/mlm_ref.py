# Independent reference for eval's masked-LM scoring (mlm.go): the
# pseudo-log-likelihood of Salazar et al. 2020 computed with transformers'
# RobertaForMaskedLM directly. It never calls migu. Usage:
#   python mlm_ref.py SPEC.json, SPEC = {"hf": HF_DIR, "labels": N,
#     "requests": [{"ids": [...], "positions": [...]}, ...]}  (row-major, N per row)
# For each request it replaces one position at a time by <mask>, runs the
# unpadded sequence alone and sums log softmax at that position for the
# true token. Prints {"scores": [...], "best": [...]} (best: per row, the
# index of the first highest score).
import json
import sys

import torch
import transformers

spec = json.load(open(sys.argv[1]))
tok = transformers.PreTrainedTokenizerFast(tokenizer_file=spec["hf"] + "/tokenizer.json")
mask_id = tok.get_vocab()["<mask>"]
model = transformers.RobertaForMaskedLM.from_pretrained(spec["hf"], torch_dtype=torch.float32).eval()
scores = []
with torch.no_grad():
    for req in spec["requests"]:
        total = 0.0
        for p in req["positions"]:
            ids = torch.tensor([req["ids"]])
            ids[0, p] = mask_id
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, p].double()
            total += (logits.log_softmax(-1)[req["ids"][p]]).item()
        scores.append(total)
n = spec["labels"]
best = []
for r in range(len(scores) // n):
    row = scores[r * n:(r + 1) * n]
    best.append(row.index(max(row)))
print(json.dumps({"scores": scores, "best": best}))
