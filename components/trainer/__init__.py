"""Trainer's module file: the recipe's DSSM, its training, and the tower exports."""
