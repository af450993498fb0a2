"""REFERENCE BASELINE, kept unchanged: the classic tutorial's plain-PyTorch logistic regression on MNIST.

This is the well-known GeeksforGeeks-style script that `python train.py` reproduces (`transforms.ToTensor()`
only, batch 100, SGD lr 0.001, 5 epochs, about 82% test accuracy). `benchmarks/bench.py` times it against
`train.py`; it is not part of the project and is not to be optimised. Differences from the original, none of
which changes what it computes or how fast: it reads the `data/` directory shipped with this repository (so
it runs offline), `Variable` (a no-op since PyTorch 0.4) is gone and `loss.data[0]` is `loss.item()`, a seed
makes its runs repeatable, and its last line is its results as JSON for the benchmark to read.

    python benchmarks/tutorial.py
"""

import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torchvision.datasets as dsets
import torchvision.transforms as transforms

torch.manual_seed(0)
DATA_DIR = str(Path(__file__).resolve().parents[1] / "data")

# MNIST Dataset (Images and Labels)
train_dataset = dsets.MNIST(root=DATA_DIR, train=True, transform=transforms.ToTensor(), download=True)
test_dataset = dsets.MNIST(root=DATA_DIR, train=False, transform=transforms.ToTensor())

# Hyper Parameters
input_size = 784
num_classes = 10
num_epochs = 5
batch_size = 100
learning_rate = 0.001

# Dataset Loader (Input Pipeline)
train_loader = torch.utils.data.DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True)
test_loader = torch.utils.data.DataLoader(dataset=test_dataset, batch_size=batch_size, shuffle=False)


# Model
class LogisticRegression(nn.Module):
    def __init__(self, input_size, num_classes):
        super().__init__()
        self.linear = nn.Linear(input_size, num_classes)

    def forward(self, x):
        out = self.linear(x)
        return out


model = LogisticRegression(input_size, num_classes)

# Loss and Optimizer
# Softmax is internally computed.
# Set parameters to be updated.
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)

# Training the Model
fit_started = time.perf_counter()
for epoch in range(num_epochs):
    for i, (images, labels) in enumerate(train_loader):
        images = images.view(-1, 28 * 28)

        # Forward + Backward + Optimize
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()

        if (i + 1) % 100 == 0:
            print(
                "Epoch: [% d/% d], Step: [% d/% d], Loss: %.4f"  # noqa: UP031 (the tutorial's own line)
                % (epoch + 1, num_epochs, i + 1, len(train_dataset) // batch_size, loss.item())
            )
fit_time = time.perf_counter() - fit_started

# Test the Model
correct = 0
total = 0
for images, labels in test_loader:
    images = images.view(-1, 28 * 28)
    outputs = model(images)
    _, predicted = torch.max(outputs.data, 1)
    total += labels.size(0)
    correct += (predicted == labels).sum()

print("Accuracy of the model on the 10000 test images: % d %%" % (100 * correct / total))  # noqa: UP031
print(json.dumps({"fit_time_s": fit_time, "test/acc": correct.item() / total}))
