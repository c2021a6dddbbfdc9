"""Held-out evaluation: nDCG@10, Recall@10/100 and MRR@10 per retrieval system, with ranx."""
