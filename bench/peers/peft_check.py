"""Loads the adapters that `sift-ft export-peft` wrote (see bench/peft-export.ts) with Hugging Face
PEFT on their base model and compares PEFT's logits with sift-ft's own (the run applied by sift-ft).

    python bench/peers/peft_check.py DIR

Prints one JSON line per adapter: {"bench": "peft", "case", "peft_type", "status", "max_abs_diff",
"max_abs_change"}, where max_abs_change is how far the adapter moved the logits (a check that the
adapter was really applied). Exits 1 when a comparison fails, 0 when all pass or were skipped
(a PEFT without the SUPERTUNING method skips those cases and says so).
"""
import json
import sys

import torch


def main():
    d = sys.argv[1]
    with open(f"{d}/expected.json") as f:
        exp = json.load(f)
    import peft
    import transformers
    from peft import PeftModel

    have_super = hasattr(peft, "SupertuningConfig")
    ids = torch.tensor(exp["input_ids"], dtype=torch.long)
    failed = 0
    for case in exp["cases"]:
        row = {"bench": "peft", "case": case["name"], "peft_type": case["peft_type"], "peft": peft.__version__, "transformers": transformers.__version__}
        if case["peft_type"] == "SUPERTUNING" and not have_super:
            row["status"] = "skipped: this PEFT has no SupertuningConfig"
            print(json.dumps(row), flush=True)
            continue
        try:
            if case["task"] == "classify":
                base = transformers.AutoModelForSequenceClassification.from_pretrained(exp["base"], num_labels=2, torch_dtype=torch.float32)
            else:
                base = transformers.AutoModelForCausalLM.from_pretrained(exp["base"], torch_dtype=torch.float32)
            base.eval()
            model = PeftModel.from_pretrained(base, case["adapter"])
            model.eval()
            with torch.no_grad():
                got = model(input_ids=ids).logits.float()
                merged = model.merge_and_unload()(input_ids=ids).logits.float()
            want = torch.tensor(case["logits"]["data"], dtype=torch.float32).reshape(case["logits"]["shape"])
            diff = (got - want).abs().max().item()
            diff_merged = (merged - want).abs().max().item()
            row["max_abs_diff"] = diff
            row["max_abs_diff_merged"] = diff_merged
            if case.get("base_logits"):
                before = torch.tensor(case["base_logits"]["data"], dtype=torch.float32).reshape(case["base_logits"]["shape"])
                row["max_abs_change"] = (want - before).abs().max().item()
            tol = 1e-4 * max(1.0, want.abs().max().item())
            ok = diff <= tol and diff_merged <= tol
            row["status"] = "ok" if ok else f"mismatch (tolerance {tol:.2e})"
            failed += 0 if ok else 1
        except Exception as e:  # one line per failing case, the others still run
            row["status"] = f"error: {type(e).__name__}: {e}"
            failed += 1
        print(json.dumps(row), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
