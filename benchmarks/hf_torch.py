"""The Hugging Face transformers + PyTorch (CPU) contender of `benchmarks/speed.py`.

Runs in its own venv, `benchmarks/cache/torch-venv` (torch and transformers
are benchmark-only: they are not kerasbert dependencies), on the inputs that
`speed.py --worker setup` wrote: the same training texts, the same batch
orders, the same MiniLM directory. Training is what `transformers.Trainer`
does per step, without its bookkeeping: texts tokenized once up front (as
`datasets.map` would), each batch padded to its longest text by
`DataCollatorWithPadding`, forward, backward, `torch.optim.AdamW` step.
Inference tokenizes each batch with the fast (Rust) tokenizer and runs the
model under `torch.inference_mode()`.

Prints one line, `RESULT {json}`, for speed.py to read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def load(inputs):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(inputs["model_dir"])
    model = AutoModelForSequenceClassification.from_pretrained(inputs["model_dir"], num_labels=2)
    return tokenizer, model.to(torch.float32)


def nonembedding_params(model):
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.base_model.embeddings
    tables = (
        embeddings.word_embeddings,
        embeddings.position_embeddings,
        embeddings.token_type_embeddings,
    )
    return total, total - sum(p.numel() for t in tables for p in t.parameters())


def train(args, inputs):
    import torch
    from transformers import DataCollatorWithPadding

    torch.manual_seed(0)
    tokenizer, model = load(inputs)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    collator = DataCollatorWithPadding(tokenizer)
    total = args.warmup + args.steps
    order = inputs["orders"][args.order][: total * args.batch_size]
    texts = [inputs["train_texts"][i] for i in order]
    labels = [inputs["train_label_ids"][i] for i in order]
    encoded = tokenizer(texts, truncation=True, max_length=inputs["sequence_length"])
    features = [
        {**{key: encoded[key][i] for key in encoded.keys()}, "labels": labels[i]}
        for i in range(len(texts))
    ]
    ends, cpu_ends, widths, real = [], [], [], []
    begin = time.perf_counter()
    for step in range(total):
        batch = collator(features[step * args.batch_size : (step + 1) * args.batch_size])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
        widths.append(int(batch["input_ids"].shape[1]))
        real.append(int(batch["attention_mask"].sum()))
    params, nonembedding = nonembedding_params(model)
    return {
        "seconds": ends[-1] - ends[args.warmup - 1],
        "cpu_seconds": cpu_ends[-1] - cpu_ends[args.warmup - 1],
        "warmup_seconds": ends[args.warmup - 1] - begin,
        "widths": widths[args.warmup :],
        "real_tokens": sum(real[args.warmup :]),
        "params": params,
        "nonembedding_params": nonembedding,
        "threads": {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "versions": versions(),
        "last_loss": float(loss),
    }


def infer(args, inputs):
    import torch

    tokenizer, model = load(inputs)
    model.eval()
    texts = inputs["test_texts"]

    def run(batch):
        with torch.inference_mode():
            encoded = tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=inputs["sequence_length"],
                return_tensors="pt",
            )
            return model(**encoded).logits.softmax(-1).numpy()

    from speed import time_inference  # benchmarks/ is this script's directory

    return {
        "versions": versions(),
        "threads": torch.get_num_threads(),
        **time_inference(run, texts, args),
    }


def versions():
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--order", choices=("random", "bucketed"), default="random")
    parser.add_argument("--infer", action="store_true", help="time inference instead of training")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--single-requests", type=int, default=200)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    inputs = json.loads((args.out / "inputs.json").read_text(encoding="utf-8"))
    result = infer(args, inputs) if args.infer else train(args, inputs)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
