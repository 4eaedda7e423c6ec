"""Train a LoRA adapter on a datakit build in a plain PyTorch loop.

usage: python examples/train_lora.py BUILD_DIR MODEL_DIR [--steps 50]

This is the "import it into your own script" path: datakit.load gives a DatasetDict with
input_ids / attention_mask / labels (-100 = not trained), ready for any causal LM.
"""
import argparse

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import datakit

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("model")
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--batch", type=int, default=4)
args = ap.parse_args()

ds = datakit.load(args.data)["train"].with_format("torch")
pad_id = datakit.load_manifest(args.data)["tokenizer"]["eos_id"]  # pads are masked, so EOS is safe


def collate(rows):
    """Right-pad to the longest row: input_ids with pad_id, attention 0, labels -100."""
    n = max(len(r["input_ids"]) for r in rows)
    def pad(key, value):
        return torch.stack([torch.nn.functional.pad(r[key].long(), (0, n - len(r[key])), value=value) for r in rows])
    return {"input_ids": pad("input_ids", pad_id), "attention_mask": pad("attention_mask", 0), "labels": pad("labels", -100)}


model = AutoModelForCausalLM.from_pretrained(args.model)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, collate_fn=collate)

model.train()
step = 0
while step < args.steps:
    for batch in loader:
        loss = model(**batch).loss  # the model shifts labels itself; -100 positions are ignored
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % 10 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.4f}")
        if step == args.steps:
            break
model.save_pretrained("lora-adapter")
print("saved lora-adapter/")
