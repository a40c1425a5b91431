"""One Ray Train run: the TorchTrainer of one config on one fold, and the loop every DDP worker runs."""
