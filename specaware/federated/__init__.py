"""Federated fine-tuning on Flower: a frozen pretrained encoder, shared and private prompt tokens,
baselines, clients that differ by label skew and sensor (docs/FEDERATED.md).

`specaware federated` is the entry point (`specaware.cli.federated`); the Flower apps are
`specaware.federated.client:app` and `specaware.federated.server:app`. Flower is the optional
`federated` extra: nothing here is imported by the rest of specaware.
"""
