"""Black-box membership-inference audit (entropy, modified entropy, LiRA with shadow models) of
fine-tuned classifiers; `specaware audit` (docs/FEDERATED.md "Audit")."""
