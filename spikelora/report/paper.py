"""Published numbers of the SpikeLoRA paper (cited constants for the "paper vs ours" tables).

Units as in our tables: MCC, accuracy and sparsity in percent; losses and gaps raw.
Source: the paper's Tables 1–4 and Appendix A (``shared/paper/spikelora-paper.txt``).
"""

from __future__ import annotations

RANKS = (1, 2, 4, 8, 16, 32, 64)
LRS = (1e-4, 3e-4, 5e-4, 7e-4, 9e-4)
VTHS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DROPOUTS = (0.0, 0.025, 0.05, 0.075, 0.1)
GLUE = ("cola", "sst2", "mrpc", "stsb", "mnli", "qnli", "rte", "qqp")

# Table 1: {method: {metric: {r: value}}}
TABLE1 = {
    "lora": {
        "mcc": dict(zip(RANKS, (67.68, 67.01, 68.40, 68.07, 67.30, 68.75, 57.93))),
        "gen_gap": dict(zip(RANKS, (0.75, 0.83, 0.85, 0.80, 1.13, 1.14, 1.44))),
    },
    "spike": {
        "mcc": dict(zip(RANKS, (67.37, 67.22, 67.47, 68.37, 68.65, 69.43, 67.71))),
        "gen_gap": dict(zip(RANKS, (0.71, 0.81, 0.93, 0.77, 1.04, 1.08, 1.14))),
        "sparsity": dict(zip(RANKS, (33.47, 43.67, 52.75, 69.74, 73.83, 80.87, 92.69))),
    },
}

# Table 2
TABLE2 = {
    "lora": {
        "mcc": dict(zip(LRS, (66.75, 68.07, 67.94, 67.02, 65.78))),
        "gen_gap": dict(zip(LRS, (0.66, 0.80, 1.08, 1.15, 1.17))),
    },
    "spike": {
        "mcc": dict(zip(LRS, (68.16, 68.37, 68.04, 67.39, 67.46))),
        "gen_gap": dict(zip(LRS, (0.65, 0.77, 1.06, 1.02, 1.04))),
        "sparsity": dict(zip(LRS, (51.56, 69.74, 77.88, 82.58, 85.49))),
    },
}

# Table 3: {method: {column: value}}; MRPC as accuracy and F1, STS-B as one correlation.
TABLE3 = {
    "lora": {
        "cola": 68.07,
        "sst2": 95.55,
        "mrpc_acc": 89.41,
        "mrpc_f1": 92.47,
        "stsb": 91.36,
        "mnli_m": 90.44,
        "qnli": 94.17,
        "rte": 86.07,
        "qqp": 91.83,
        "avg": 88.36,
    },
    "spike": {
        "cola": 68.37,
        "sst2": 95.73,
        "mrpc_acc": 89.56,
        "mrpc_f1": 92.55,
        "stsb": 91.13,
        "mnli_m": 90.21,
        "qnli": 93.91,
        "rte": 86.28,
        "qqp": 91.57,
        "avg": 88.35,
    },
    "sparsity": {
        "cola": 69.74,
        "sst2": 83.39,
        "mrpc": 84.85,
        "stsb": 67.26,
        "mnli": 77.91,
        "qnli": 77.13,
        "rte": 89.97,
        "qqp": 76.23,
        "avg": 78.31,
    },
}

# Table 4 (SpikeGPT-216M on Subj, accuracy %). * = published by Zhu et al. (2024).
TABLE4_PUBLISHED = {"SpikeGPT (from scratch)*": 89.10, "Full FT*": 95.30}
TABLE4 = {"lora": 90.70, "spike": 91.10}

# Appendix Table 2 (V_θ on CoLA, r = 8, lr 5e-4): {vth: (sparsity %, MCC %, loss, relative drop)}
VTH_TABLE = {
    0.0: (23.8, 66.6, 1.156, 0.018),
    0.01: (27.9, 66.5, 1.170, 0.019),
    0.05: (35.2, 65.7, 1.183, 0.031),
    0.1: (46.1, 66.8, 1.124, 0.015),
    0.25: (67.1, 66.6, 1.129, 0.018),
    0.5: (83.5, 65.3, 1.150, 0.037),
    0.75: (94.3, 66.3, 0.942, 0.022),
    1.0: (97.2, 65.2, 0.720, 0.038),
    1.5: (98.9, 61.4, 0.484, 0.094),
    2.0: (99.7, 35.1, 0.502, 0.482),
}
VTH_LORA = (67.8, 1.096)  # (MCC %, loss)

# Appendix Table 3 (dropout on CoLA): {(dropout, method): (MCC %, gen gap)}
DROPOUT_TABLE = {
    (0.0, "lora"): (68.07, 0.7993),
    (0.0, "spike"): (68.37, 0.7698),
    (0.025, "lora"): (68.67, 0.8199),
    (0.025, "spike"): (68.11, 0.7984),
    (0.05, "lora"): (68.08, 0.8299),
    (0.05, "spike"): (68.71, 0.7817),
    (0.075, "lora"): (69.09, 0.7797),
    (0.075, "spike"): (68.50, 0.7155),
    (0.1, "lora"): (68.12, 0.8485),
    (0.1, "spike"): (67.99, 0.7515),
}

GRADNORM_PEARSON = (0.678, 2.488e-8)  # Appendix A: Pearson r and p of the per-step gradient norms

# Appendix Table 2 standard deviations: {vth: (sparsity %, MCC %, loss)}; LoRA row (MCC %, loss).
VTH_TABLE_STD = {
    0.0: (1.3, 1.3, 0.037),
    0.01: (1.7, 1.5, 0.049),
    0.05: (1.1, 1.0, 0.030),
    0.1: (0.5, 0.6, 0.014),
    0.25: (1.0, 0.8, 0.020),
    0.5: (0.7, 0.6, 0.029),
    0.75: (0.5, 1.3, 0.093),
    1.0: (0.5, 1.3, 0.070),
    1.5: (0.4, 3.2, 0.061),
    2.0: (0.3, 16.8, 0.051),
}
VTH_LORA_STD = (0.9, 0.029)

# Appendix Table 3 standard deviations, and its pooled "> 0.0" rows (every positive rate):
# {(dropout, method): (MCC %, gen gap)}
DROPOUT_TABLE_STD = {
    (0.0, "lora"): (0.82, 0.0467),
    (0.0, "spike"): (1.16, 0.0174),
    (0.025, "lora"): (1.30, 0.0313),
    (0.025, "spike"): (0.84, 0.0480),
    (0.05, "lora"): (0.95, 0.0496),
    (0.05, "spike"): (0.65, 0.0185),
    (0.075, "lora"): (0.67, 0.0451),
    (0.075, "spike"): (1.01, 0.0270),
    (0.1, "lora"): (0.54, 0.0539),
    (0.1, "spike"): (1.61, 0.0442),
}
DROPOUT_POSITIVE = {"lora": (68.49, 0.8195), "spike": (68.33, 0.7618)}  # mean (MCC %, gap)
DROPOUT_POSITIVE_STD = {"lora": (1.00, 0.0522), "spike": (1.13, 0.0483)}

# §4.1.1: with V_θ = 0.1, training starts at a global sparsity of 0.71 ± 0.04 (here in %).
STARTING_SPARSITY = (71.0, 4.0)

# §4.2.2: per-step gradient norm, mean ± std.
GRADNORM_MEAN_STD = {"lora": (1.592, 1.418), "spike": (1.554, 1.292)}

# §4.2.3: training time on CoLA in minutes, mean ± std; the overhead in % follows from them (+11.6 %).
TRAINING_MINUTES = {"lora": (19.42, 0.02), "spike": (21.68, 0.12)}
TRAINING_OVERHEAD = 100.0 * (TRAINING_MINUTES["spike"][0] / TRAINING_MINUTES["lora"][0] - 1.0)

# §4.1.4: "the resulting low-rank activations were at least 67% sparse".
GLUE_MIN_SPARSITY = 67.0
