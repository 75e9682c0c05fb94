# Independent reference for package eval's tests: lm-evaluation-harness's
# published request-building and scoring rules, written here from its task
# definitions (hellaswag, arc_challenge, winogrande) and its HFLM
# log-likelihood code, running the model with transformers/PyTorch directly.
# It never calls migu. Usage: python lmeval_ref.py SPEC.json, where SPEC is
#   {"hf": HF_DIR, "seq2seq": bool, "adapter": PEFT_DIR (optional),
#    "jobs": [{"max_length": N or null, "batch": N,
#              "requests": [[context, continuation], ...],          (optional)
#              "tasks": {"hellaswag": FILE, ...}, "limit": N,       (optional)
#              "perplexity": {"file": FILE, "strides": [N or null, ...]}}]}
# The model loads once; each job sets the context length and batch size.
# It prints {"jobs": [...]} with the per-request and per-document results.
import json
import math
import re
import sys

import torch
import torch.nn.functional as F
import transformers

torch.manual_seed(0)
spec = json.load(open(sys.argv[1]))
seq2seq = spec["seq2seq"]
tok = transformers.PreTrainedTokenizerFast(tokenizer_file=spec["hf"] + "/tokenizer.json")
cls = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
model = cls.from_pretrained(spec["hf"], torch_dtype=torch.float32).eval()
if spec.get("adapter"):
    import peft

    model = peft.PeftModel.from_pretrained(model, spec["adapter"]).merge_and_unload().eval()
config = model.config


def default_max_length():
    """The config's position limit, else 2048 (HFLM's rule; these
    tokenizers declare no model_max_length)."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None):
            return getattr(config, attr)
    return 2048


max_length = default_max_length()
batch_size = 1

bos = config.bos_token_id
eos = config.eos_token_id
prefix_token = bos if bos is not None else eos


def encode(text, special):
    return tok.encode(text, add_special_tokens=special)


def encode_pair(context, continuation):
    if context == "":
        cont = encode(continuation, False)
        if cont and cont[0] == prefix_token:
            return cont[:1], cont[1:]
        return [prefix_token], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if seq2seq:
        return encode(context, True), encode(continuation, False)
    whole = encode(context + continuation, False)
    ctx_len = len(encode(context, False))
    return whole[:ctx_len], whole[ctx_len:]


def pad_right(seqs, length):
    return torch.tensor([s + [0] * (length - len(s)) for s in seqs], dtype=torch.long)


@torch.no_grad()
def loglikelihood_tokens(pairs):
    """pairs: [(ctx_ids, cont_ids)] -> [(logprob, greedy, truncated)]."""
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out = [None] * len(pairs)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        if seq2seq:
            encs = [pairs[i][0][-max_length:] for i in idx]
            conts = [pairs[i][1][-max_length:] for i in idx]
            el = max(len(e) for e in encs)
            cl = max(len(c) for c in conts)
            inp = pad_right(encs, el)
            mask = pad_right([[1] * len(e) for e in encs], el)
            labels = pad_right(conts, cl)
            logits = model(input_ids=inp, attention_mask=mask, labels=labels).logits
            logp = F.log_softmax(logits.double(), dim=-1)
            for r, i in enumerate(idx):
                cont = pairs[i][1]
                lp = logp[r, : len(cont)]
                out[i] = (
                    float(lp.gather(1, torch.tensor(cont).unsqueeze(1)).sum()),
                    bool((lp.argmax(-1) == torch.tensor(cont)).all()),
                    len(pairs[i][0]) > max_length,
                )
        else:
            inps = [(pairs[i][0] + pairs[i][1])[-(max_length + 1) :][:-1] for i in idx]
            sl = max(len(x) for x in inps)
            logits = model(pad_right(inps, sl)).logits
            logp = F.log_softmax(logits.double(), dim=-1)
            for r, i in enumerate(idx):
                cont = pairs[i][1]
                n = len(inps[r])
                lp = logp[r, n - len(cont) : n]
                out[i] = (
                    float(lp.gather(1, torch.tensor(cont).unsqueeze(1)).sum()),
                    bool((lp.argmax(-1) == torch.tensor(cont)).all()),
                    len(pairs[i][0]) + len(pairs[i][1]) - 1 > max_length,
                )
    return out


def loglikelihood(requests):
    return loglikelihood_tokens([encode_pair(c, k) for c, k in requests])


# --- tasks, from lm-eval's task definitions ---------------------------------


def hs_preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag(doc):
    if "ctx_a" in doc:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    else:
        ctx = doc["ctx"]
    query = hs_preprocess(doc["activity_label"] + ": " + ctx)
    choices = [hs_preprocess(e) for e in doc["endings"]]
    return [(query, " " + c) for c in choices], choices, int(doc["label"])


def arc(doc):
    query = "Question: " + doc["question"] + "\nAnswer:"
    choices = doc["choices"]["text"]
    gold = doc["choices"]["label"].index(doc["answerKey"])
    return [(query, " " + c) for c in choices], choices, gold


def winogrande(doc):
    i = doc["sentence"].index("_")
    target = doc["sentence"][i + 1 :].strip()
    options = [doc["option1"], doc["option2"]]
    reqs = [(doc["sentence"][:i] + o, " " + target) for o in options]
    return reqs, None, {"1": 0, "2": 1}[doc["answer"]]


def argmax(xs):
    best = 0
    for j, x in enumerate(xs):
        if x > xs[best]:
            best = j
    return best


TASKS = {"hellaswag": hellaswag, "arc_challenge": arc, "winogrande": winogrande}


def run_task(name, path, limit):
    docs = [json.loads(l) for l in open(path) if l.strip()]
    if limit:
        docs = docs[:limit]
    built = [TASKS[name](d) for d in docs]
    flat = [r for reqs, _, _ in built for r in reqs]
    res = loglikelihood(flat)
    out, k = [], 0
    for reqs, choices, gold in built:
        lls = [res[k + j][0] for j in range(len(reqs))]
        greedy = [res[k + j][1] for j in range(len(reqs))]
        k += len(reqs)
        d = {"requests": [list(r) for r in reqs], "lls": lls, "greedy": greedy, "gold": gold,
             "acc": 1.0 if argmax(lls) == gold else 0.0}
        if choices is not None:
            norm = [ll / len(c) for ll, c in zip(lls, choices)]
            d["acc_norm"] = 1.0 if argmax(norm) == gold else 0.0
        out.append(d)
    return out


# --- perplexity: lm-eval's rolling windows ------------------------------------


def rolling_windows(tokens, max_len, pred_len):
    """Windows (ctx, cont): every token predicted once; the first window
    starts from the prefix token; later ones predict pred_len tokens with
    up to max_len - pred_len tokens of left context."""
    first = min(max_len, len(tokens))
    window, cont = [prefix_token] + tokens[: first - 1], tokens[:first]
    # lm-eval's make_disjoint_window: drop the overlap with the predictions
    yield window[: len(window) - (len(cont) - 1)], cont
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, pred_len)
        end = done + n
        window = tokens[max(0, end - max_len - 1) : end - 1]
        cont = tokens[end - n : end]
        # disjoint: the context is the window minus the predicted part
        yield window[: len(window) - (n - 1)], cont
        done = end


def perplexity(path, stride):
    text = open(path, encoding="utf-8").read()
    ids = encode(text, seq2seq)
    pred = stride or max_length
    pairs = list(rolling_windows(ids, max_length, pred))
    res = loglikelihood_tokens(pairs)
    ll = sum(r[0] for r in res)
    words = len(re.split(r"\s+", text))
    nbytes = len(text.encode("utf-8"))
    return {"loglik": ll, "tokens": len(ids), "words": words, "bytes": nbytes,
            "token_perplexity": math.exp(-ll / len(ids)),
            "word_perplexity": math.exp(-ll / words),
            "byte_perplexity": math.exp(-ll / nbytes),
            "bits_per_byte": -ll / nbytes / math.log(2)}


def run_job(job):
    global max_length, batch_size
    max_length = job.get("max_length") or default_max_length()
    batch_size = job.get("batch") or 1
    result = {"max_length": max_length}
    if job.get("requests"):
        result["requests"] = [list(r) for r in loglikelihood(job["requests"])]
    for name, path in (job.get("tasks") or {}).items():
        result[name] = run_task(name, path, job.get("limit"))
    if job.get("perplexity"):
        pp = job["perplexity"]
        result["perplexity"] = [perplexity(pp["file"], s) for s in pp["strides"]]
    return result


json.dump({"jobs": [run_job(job) for job in spec["jobs"]]}, sys.stdout)
