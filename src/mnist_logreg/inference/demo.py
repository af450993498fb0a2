"""Draw a digit: a local web page that shows what the model sees and why it answers.

On every stroke the page (Gradio) sends the canvas, or an uploaded photo, here. The answer shows the 28x28
image after the same preprocessing as predict.py, the ten probabilities, and evidence maps: each pixel's ink
times a class's weight. A class's logit is exactly the sum of its evidence map plus its bias, so for this
model the maps are the whole explanation, not an approximation of one.

Nothing leaves the machine: Gradio's analytics are off, its default theme's fonts are served by the app
itself, and the server listens on loopback unless `server_name` says otherwise.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from omegaconf import DictConfig

from mnist_logreg.callbacks.figures import WEIGHTS_CMAP
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.model import MNIST_SHAPE, LogisticRegression
from mnist_logreg.errors import UserError, require_extra
from mnist_logreg.inference.preprocess import SIZE, ImageError, to_mnist
from mnist_logreg.outputs import read_record
from mnist_logreg.plotting import render

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

log = logging.getLogger(__name__)

RUNS = "logs/runs/*/checkpoints/best.ckpt"
ZOOM = 10  # each of the model's pixels is shown as a ZOOM x ZOOM square, sharp at any browser zoom
CANVAS = (400, 400)  # width, height
# A white page rather than no image: on a page the brush is the selected tool, so drawing starts at once.
BLANK = {"background": np.full((*CANVAS[::-1], 3), 255, dtype=np.uint8), "layers": [], "composite": None}
RUNNER_UP = "runner-up"
COLUMNS = ["digit", "probability", "logit", "ink times weights", "bias"]


class DemoError(UserError):
    """gradio is not installed, there is no checkpoint to show, or the address cannot be served."""


def require_gradio() -> ModuleType:
    """Import gradio, or say how to install it: the demo is an extra, not a dependency of training."""
    require_extra("demo", "gradio", needed_by="the demo")
    import gradio

    return gradio


def latest_checkpoint(root: Path) -> Path:
    """The best checkpoint of the latest run under `root`: the newest `logs/runs/*/checkpoints/best.ckpt`."""
    found = list(root.glob(RUNS))
    if not found:
        raise DemoError(
            f"no {RUNS} under {root}: run `python train.py` first, or pass ckpt_path=PATH/best.ckpt"
        )
    return max(found, key=lambda path: path.stat().st_mtime)


@dataclass
class Reading:
    """What the model makes of one image."""

    pixels: torch.Tensor  # 28 x 28: the image the model sees, ink in [0, 1]
    evidence: torch.Tensor  # 10 x 28 x 28: the ink times each class's weights
    bias: torch.Tensor  # 10
    logits: torch.Tensor  # 10: the model's own output for the image
    probabilities: torch.Tensor  # 10

    def ranking(self) -> list[int]:
        return self.probabilities.argsort(descending=True, stable=True).tolist()


def read(model: LogisticRegression, image: Image.Image) -> Reading:
    """Preprocess `image` as predict.py does, classify it, and split each logit into its pixels' parts.

    The image the model sees, and the evidence maps, are those after the model's input transform (the
    deskew, for a model trained on deskewed images).
    """
    pixels = to_mnist(image)  # 1 x 28 x 28
    with torch.no_grad():
        logits = model(pixels.unsqueeze(0))[0]
        seen = model.transform(pixels.unsqueeze(0))[0]
        net = linear_net(model)
        evidence = seen * net.weight.reshape(-1, SIZE, SIZE)
    return Reading(seen[0], evidence, net.bias.detach().clone(), logits, logits.softmax(0))


def linear_model(model: LogisticRegression, ckpt_path: Path) -> LogisticRegression:
    """The demo's evidence maps are a linear model's exact explanation of a digit drawn on its 28 x 28 canvas:
    another network, or a model of other images, is refused."""
    if model.input_shape != MNIST_SHAPE:
        raise DemoError(
            f"{ckpt_path} reads {' x '.join(map(str, model.input_shape))} images: the demo explains "
            "1 x 28 x 28 digit models; pass ckpt_path= a checkpoint trained on MNIST-shaped data"
        )
    if not isinstance(model.net, torch.nn.Linear):
        raise DemoError(
            f"{ckpt_path} holds a {type(model.net).__name__} network: the demo explains a linear model's "
            "weights; pass ckpt_path= a checkpoint trained with model/net=linear"
        )
    return model


def linear_net(model: LogisticRegression) -> torch.nn.Linear:
    """The model's network, one `nn.Linear`: `linear_model` refuses any other before the demo starts."""
    return cast(torch.nn.Linear, model.net)


def zoom(image: np.ndarray) -> np.ndarray:
    return image.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


def ink_image(pixels: torch.Tensor) -> np.ndarray:
    """Dark ink on white, as the figures draw digits."""
    return zoom(255 - (pixels.numpy() * 255).round().astype(np.uint8))


def evidence_image(evidence: torch.Tensor, limit: float) -> np.ndarray:
    """Red where the ink raised the class's logit, blue where it lowered it, white where there is no ink.

    `limit` is the largest weight in absolute value, the weight-template figure's scale: ink is at most 1,
    so a saturated pixel is full ink on the class's strongest weight, and maps of two classes compare.
    """
    from matplotlib import colormaps

    scaled = (evidence.numpy() / limit + 1) / 2  # [-limit, limit] to the colour map's [0, 1]
    return zoom(colormaps[WEIGHTS_CMAP](scaled, bytes=True)[..., :3])


def colour_bar(limit: float) -> np.ndarray:
    """The evidence maps' colour scale, drawn once."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 0.95), dpi=100)
    ax = fig.add_axes((0.03, 0.62, 0.94, 0.3))
    mappable = ScalarMappable(Normalize(-limit, limit), WEIGHTS_CMAP)
    fig.colorbar(mappable, cax=ax, orientation="horizontal")
    ax.set_xlabel("ink times weight: red raises the class's logit, blue lowers it", fontsize=9)
    ax.tick_params(labelsize=8)
    return render(fig)


def caption(reading: Reading, digit: int, question: str) -> str:
    total = float(reading.evidence[digit].sum())
    bias, logit = float(reading.bias[digit]), float(reading.logits[digit])
    return f"{question} {digit}: ink times weights {total:+.2f}, bias {bias:+.2f}, logit {logit:.2f}"


def numbers(reading: Reading) -> list[list[float]]:
    """One row per class: the logit next to the two parts it is the sum of."""
    sums = reading.evidence.sum(dim=(1, 2))
    columns = torch.stack((reading.probabilities, reading.logits, sums, reading.bias), dim=1)
    return [[digit, *row] for digit, row in enumerate(columns.tolist())]


def model_summary(ckpt_path: Path) -> str:
    """The checkpoint's path, and its test accuracy when its run recorded one."""
    accuracy = read_record(ckpt_path.parent.parent).get("test/acc")
    if not isinstance(accuracy, (int, float)):
        return f"Model: `{ckpt_path}`"
    return f"Model: `{ckpt_path}`, {accuracy:.1%} right on MNIST's 10,000 test digits"


def build_app(model: LogisticRegression, ckpt_path: Path) -> gr.Blocks:
    """The page: a canvas (or a photo) in, what the model sees and why it answers out."""
    gr = require_gradio()
    net = linear_net(model)
    limit = float(net.weight.detach().abs().max()) or 1.0

    def answer(canvas: dict[str, Any] | None, other: str) -> tuple[Any, ...]:
        image = canvas["composite"] if canvas else None
        try:
            reading = read(model, image) if image is not None else None
        except ImageError:  # a blank canvas or photo: nothing to answer yet
            reading = None
        if reading is None:
            return (
                None,
                "Draw a digit",
                gr.Image(None, label="Why the top class"),
                gr.Image(None, label="Why not another"),
                None,
            )
        top, runner_up = reading.ranking()[:2]
        second = runner_up if other == RUNNER_UP else int(other)
        probabilities = {str(d): float(p) for d, p in enumerate(reading.probabilities)}
        return (
            ink_image(reading.pixels),
            probabilities,
            gr.Image(evidence_image(reading.evidence[top], limit), label=caption(reading, top, "Why")),
            gr.Image(
                evidence_image(reading.evidence[second], limit),
                label=caption(reading, second, "Why" if second == top else "Why not"),
            ),
            numbers(reading),
        )

    with gr.Blocks(title="Draw a digit", analytics_enabled=False) as app:
        gr.Markdown(f"## Draw a digit\n{model_summary(ckpt_path)}")
        with gr.Row():
            canvas = gr.ImageEditor(
                value=BLANK,
                label="Draw a digit with the mouse or a finger, or upload a photo of one",
                interactive=True,
                type="pil",
                sources=("upload", "clipboard"),
                brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=14),
                layers=False,
                transforms=("crop",),
                canvas_size=CANVAS,
                fixed_canvas=True,  # a photo is scaled to fit: any camera's picture draws and sends quickly
                height=520,
                scale=3,
                elem_id="canvas",
            )
            with gr.Column(scale=2):
                seen = gr.Image(
                    label="What the model sees (28 x 28)", format="png", height=300, elem_id="seen"
                )
                probabilities = gr.Label(label="Probabilities", num_top_classes=10, elem_id="probabilities")
        with gr.Row():
            why = gr.Image(label="Why the top class", format="png", height=300, elem_id="why")
            why_not = gr.Image(label="Why not another", format="png", height=300, elem_id="why-not")
            with gr.Column():
                other = gr.Radio(
                    [RUNNER_UP, *(str(digit) for digit in range(net.out_features))],
                    value=RUNNER_UP,
                    label="Why not… (the second map)",
                    elem_id="other",
                )
                gr.Image(
                    colour_bar(limit),
                    show_label=False,
                    format="png",
                    interactive=False,
                    buttons=[],
                    container=False,
                )
        with gr.Accordion("The numbers: each logit is the sum of its evidence map plus the bias", open=False):
            table = gr.Dataframe(headers=COLUMNS, datatype="number", interactive=False)
        # `input` fires on each stroke, an undo and a clear; `upload` on a photo; neither when the app sets
        # the canvas, as after a clear.
        canvas.clear(lambda: BLANK, outputs=canvas, show_progress="hidden", api_visibility="private")
        gr.on(
            [canvas.input, canvas.upload, other.change],
            answer,
            inputs=[canvas, other],
            outputs=[seen, probabilities, why, why_not, table],
            api_name="answer",
            show_progress="hidden",
            trigger_mode="always_last",  # strokes drawn while an answer is computed: answer only the last
        )
    return app


def check_address(server_name: str) -> None:
    """Refuse an address that is not this machine's: Gradio would try a hundred ports on it, one by one."""
    try:
        family, _, _, _, address = socket.getaddrinfo(server_name, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(address)
    except OSError as error:
        raise DemoError(
            f"server_name={server_name} is not an address of this machine ({error.strerror or error}): "
            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every network it is on)"
        ) from None


def start(app: gr.Blocks, server_name: str, server_port: int | None) -> str:
    """Serve `app` in the background; the address to open. Nothing on the page calls out of the machine."""
    try:
        _, url, _ = app.launch(
            server_name=server_name,
            server_port=server_port,
            prevent_thread_lock=True,
            quiet=True,  # its hints are about public share links, which this demo never makes
            footer_links=[],  # the footer links to gradio.app and to the API page, not part of the demo
            run_history=False,  # nothing kept in the browser, nowhere to upload it
            enable_monitoring=False,
        )
    except OSError:  # the address is checked: the port is taken
        taken = f"port {server_port} is in use" if server_port else "no port from 7860 on is free"
        raise DemoError(
            f"{taken} on {server_name}: pass server_port= a free port, "
            "or server_port=null for the first free one from 7860"
        ) from None
    return url


def serve(cfg: DictConfig) -> None:
    """Load the checkpoint, serve the page until Ctrl+C."""
    require_gradio()
    check_address(cfg.server_name)
    # Gradio checks at start-up that its address answers, and httpx logs each request it makes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ckpt_path = cfg.get("ckpt_path")
    ckpt_path = Path(ckpt_path) if ckpt_path else latest_checkpoint(Path(cfg.paths.root_dir))
    model = linear_model(load_model(ckpt_path), ckpt_path)
    app = build_app(model, ckpt_path)
    url = start(app, cfg.server_name, cfg.server_port)
    log.info("Model: %s", ckpt_path)
    log.info("Open %s in a browser; Ctrl+C stops the demo", url)
    app.block_thread()
