"""``python -m noisybench.losses``: the loss registry as a table, read from the code.

``--presets`` lists the paper preset tables instead (what each covers, and where from).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import LOSSES
from .presets import presets


def _number(value) -> str:
    return f"{value:g}".replace("e-0", "e-").replace("e+0", "e+") if isinstance(value, float) else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, the last one unpadded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def registry_table() -> str:
    rows = []
    for name in LOSSES.names():
        meta = LOSSES.meta(name)
        values = lambda keys: ", ".join(f"{k}={_number(meta['defaults'][k])}" for k in keys)  # noqa: E731
        params = values(p for p in meta["params"] if p not in meta["settings"]) or "-"
        training = values(meta["settings"])
        if meta["weight_decay"] is not None:
            training = ", ".join(filter(None, [training, f"weight_decay={_number(meta['weight_decay'])}"]))
        if training:
            params += f"; training: {training}"
        rows.append((name, meta["family"], "yes" if meta["bounded"] else "no", params, "; ".join(meta["papers"])))
    return table(("name", "family", "bounded", "parameters (defaults)", "papers"), rows)


def presets_table() -> str:
    """One block per preset: its source, base, and the settings its own rows cover."""
    blocks = []
    for name, preset in presets().items():
        rows = preset.rows
        noise = sorted({n for row in rows for n in row.noise or ("any",)})
        lines = [f"{name}{f' (base: {preset.base})' if preset.base else ''}: {preset.description}",
                 f"  datasets: {', '.join(sorted({d for row in rows for d in row.datasets}))}",
                 f"  noise:    {', '.join(noise)}",
                 f"  losses:   {', '.join(sorted({loss for row in rows for loss in row.losses}))}"]
        if preset.constants:
            lines.append(f"  constants: {', '.join(f'{k}={_number(v)}' for k, v in preset.constants.items())}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisybench.losses", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", action="store_true", help="list the paper preset tables")
    args = parser.parse_args(argv)
    print(presets_table() if args.presets else registry_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
