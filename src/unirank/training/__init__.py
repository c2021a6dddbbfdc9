"""Fine-tuning: training data (pseudo-queries, labels, hard negatives), trainers, and the train job."""
