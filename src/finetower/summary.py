"""What a model is made of: a Keras-style summary table and an architecture diagram.

Rows are the model's own modules (`user_tower.0`, ...), so a row names the weights it
counts in `model.state_dict()`; the element-wise product and the inputs, which hold no
weights, are rows too, as in Keras' functional-model summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from finetower.artifacts import atomic_path
from finetower.model import TwoTowerModel


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary: a layer, its output shape, its weights, its inputs."""

    name: str
    kind: str
    output_shape: tuple[int | None, ...]
    parameters: int
    trainable: int
    connected_to: tuple[str, ...]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_shape"] = list(self.output_shape)
        data["connected_to"] = list(self.connected_to)
        return data


def _tower_rows(model: TwoTowerModel, side: str, input_name: str, width: int) -> list[LayerRow]:
    """The rows of one tower, each fed by the row before it (its output width tracked)."""
    rows = []
    previous = input_name
    tower: nn.Sequential = getattr(model, f"{side}_tower")
    for index, module in enumerate(tower):
        if isinstance(module, nn.Linear):
            width = module.out_features
        name = f"{side}_tower.{index}"
        rows.append(_row(name, module, (None, width), (previous,)))
        previous = name
    return rows


def _row(name: str, module: nn.Module, shape: tuple, inputs: tuple[str, ...]) -> LayerRow:
    params = list(module.parameters())
    return LayerRow(
        name=name,
        kind=type(module).__name__,
        output_shape=shape,
        parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        connected_to=inputs,
    )


def summary_rows(model: TwoTowerModel) -> list[LayerRow]:
    """The model's layers in data-flow order: inputs, user tower, item tower, product, output."""
    config = model.config
    user = LayerRow("user", "Input", (None, config.user_dim), 0, 0, ())
    item = LayerRow("item", "Input", (None, config.item_dim), 0, 0, ())
    user_rows = _tower_rows(model, "user", user.name, config.user_dim)
    item_rows = _tower_rows(model, "item", item.name, config.item_dim)
    user_out = user_rows[-1] if user_rows else user
    item_out = item_rows[-1] if item_rows else item
    product = LayerRow(
        "multiply", "Multiply", user_out.output_shape, 0, 0, (user_out.name, item_out.name)
    )
    output = _row("output", model.output, (None, model.output.out_features), (product.name,))
    return [user, item, *user_rows, *item_rows, product, output]


def parameter_totals(model: nn.Module) -> dict[str, int]:
    """`total`, `trainable` and `non_trainable` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def summary_table(model: TwoTowerModel) -> str:
    """A Keras-style table: Layer (type), Output Shape, Param #, Connected to; then totals."""
    header = ("Layer (type)", "Output Shape", "Param #", "Connected to")
    cells = [
        (
            f"{row.name} ({row.kind})",
            _shape_text(row.output_shape),
            f"{row.parameters:,}",
            ", ".join(row.connected_to) or "-",
        )
        for row in summary_rows(model)
    ]
    widths = [max(len(line[col]) for line in [header, *cells]) + 3 for col in range(4)]
    widths[-1] -= 3

    def line(values: tuple[str, ...]) -> str:
        return " " + "".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule_width = sum(widths) + 1
    totals = parameter_totals(model)
    config = model.config
    lines = [
        f'Model: "two_tower" (tower {list(config.tower)}, {config.activation}, '
        f"dropout {config.dropout}; output: sigmoid of the logit)",
        "_" * rule_width,
        line(header),
        "=" * rule_width,
    ]
    for index, cell in enumerate(cells):
        lines.append(line(cell))
        lines.append("_" * rule_width if index < len(cells) - 1 else "=" * rule_width)
    lines += [
        f"Total params: {totals['total']:,}",
        f"Trainable params: {totals['trainable']:,}",
        f"Non-trainable params: {totals['non_trainable']:,}",
    ]
    return "\n".join(lines)


# --- the diagram --------------------------------------------------------------------------

_COLOURS = {"input": "#dde8f5", "dense": "#fbe3c8", "merge": "#e4f2dc", "output": "#f6d5d5"}
_BOX_W, _BOX_H, _STEP = 3.0, 0.8, 1.25


def _tower_blocks(tower: nn.Sequential, side: str) -> list[str]:
    """One two-line label per Linear layer, naming the activation and dropout after it."""
    titles: list[str] = []
    details: list[list[str]] = []
    for index, module in enumerate(tower):
        if isinstance(module, nn.Linear):
            titles.append(
                f"{side}_tower.{index}: Linear {module.in_features} → {module.out_features}"
            )
            count = sum(p.numel() for p in module.parameters())
            details.append([f"{count:,} params"])
        elif isinstance(module, nn.Dropout):
            details[-1].insert(-1, f"dropout {module.p:g}")
        else:
            details[-1].insert(-1, type(module).__name__.lower())
    return [f"{t}\n{', '.join(d)}" for t, d in zip(titles, details, strict=True)]


def _box(ax, x: float, y: float, text: str, colour: str) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - _BOX_W / 2, y - _BOX_H / 2),
            _BOX_W,
            _BOX_H,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=colour,
            edgecolor="#444444",
            linewidth=1.2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=10, linespacing=1.4)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.3, "shrinkA": 0, "shrinkB": 0},
    )


def plot_model(model: TwoTowerModel, path_png: str | Path) -> Path:
    """Draw the architecture (inputs → towers → multiply → output) as a PNG; return its path."""
    path_png = Path(path_png)
    config = model.config
    towers = {
        side: _tower_blocks(getattr(model, f"{side}_tower"), side) for side in ("user", "item")
    }
    depth = max(len(blocks) for blocks in towers.values())
    columns = {"user": -2.1, "item": 2.1}
    # y runs downwards from the inputs (0) to the probability at the bottom.
    merge_y = -_STEP * (depth + 1)
    output_y = merge_y - _STEP
    prob_y = output_y - _STEP

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only when drawing
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 0.95 * (depth + 4)), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(-4.0, 4.0)
    ax.set_ylim(prob_y - 0.5, 0.7)
    ax.axis("off")

    half = _BOX_H / 2
    for side, x in columns.items():
        dim = config.user_dim if side == "user" else config.item_dim
        _box(ax, x, 0.0, f"{side} input\n(None, {dim})", _COLOURS["input"])
        y = 0.0
        for block in towers[side]:
            _arrow(ax, (x, y - half), (x, y - _STEP + half))
            y -= _STEP
            _box(ax, x, y, block, _COLOURS["dense"])
        # the top tower layer feeds the product from its side
        _arrow(ax, (x, y - half), (x * 0.45, merge_y + half * 0.6))

    _box(
        ax,
        0.0,
        merge_y,
        f"multiply (element-wise)\n(None, {config.embedding_dim})",
        _COLOURS["merge"],
    )
    _arrow(ax, (0.0, merge_y - half), (0.0, output_y + half))
    params = model.output.weight.numel() + model.output.bias.numel()
    _box(
        ax,
        0.0,
        output_y,
        f"output: Linear {config.embedding_dim} → 1, sigmoid\n{params:,} params",
        _COLOURS["output"],
    )
    _arrow(ax, (0.0, output_y - half), (0.0, prob_y + 0.25))
    ax.text(0.0, prob_y, "click probability (None, 1)", ha="center", va="center", fontsize=10)

    with atomic_path(path_png) as tmp:
        figure.savefig(tmp, format="png")
    return path_png
