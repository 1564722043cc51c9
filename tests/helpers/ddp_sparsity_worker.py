"""Run under torchrun (2 CPU processes, gloo): each rank counts its own shard; the report sums them."""

import peft
import torch
import torch.distributed as dist
from transformers import DebertaV2ForSequenceClassification

import spikelora
from spikelora.experiment.backbones import deberta_v3_config

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
m = DebertaV2ForSequenceClassification(
    deberta_v3_config(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        position_buckets=16,
    )
).eval()
m = peft.get_peft_model(
    m, spikelora.SpikeLoraConfig(r=4, target_modules=["query_proj", "value_proj"], task_type="SEQ_CLS")
)
ids = torch.randint(0, 100, (2, 6 + rank))  # rank 0: 2x6 tokens, rank 1: 2x7
with torch.no_grad():
    m(input_ids=ids)
rep = spikelora.sparsity_report(m)
if rank == 0:
    print("TOKENS", sorted(set(rep.tokens.values())))
dist.destroy_process_group()
