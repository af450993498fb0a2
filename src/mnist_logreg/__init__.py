"""Multinomial logistic regression on MNIST with PyTorch Lightning and Hydra."""
