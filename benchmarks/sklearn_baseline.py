"""The accuracy bar `experiment=tuned` is held to: scikit-learn's `LogisticRegression` on the same pixels.

    pip install scikit-learn && python benchmarks/sklearn_baseline.py

Its defaults (lbfgs, 100 iterations, L2 with C=1) on all 60,000 training images scaled to [0, 1]; scored on
the official 10,000 test images. scikit-learn is not a dependency of this project, hence the install.
"""

import json
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from torchvision.datasets import MNIST

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def main() -> None:
    train, test = MNIST(str(DATA_DIR), train=True), MNIST(str(DATA_DIR), train=False)
    x, y = train.data.reshape(len(train.data), -1).numpy() / 255.0, train.targets.numpy()
    x_test, y_test = test.data.reshape(len(test.data), -1).numpy() / 255.0, test.targets.numpy()
    started = time.perf_counter()
    model = LogisticRegression().fit(x, y)  # lbfgs stops at its 100-iteration limit and warns so
    fit = time.perf_counter() - started
    print(json.dumps({"fit_time_s": round(fit, 1), "test/acc": round(model.score(x_test, y_test), 4)}))


if __name__ == "__main__":
    main()
