"""``edge tools ...``: the tracked instruments' definitions and their printable marker sheet."""

from __future__ import annotations

import argparse

from edge.cli.options import add_config, config_from


def register(subparsers: argparse._SubParsersAction) -> None:
    tools = subparsers.add_parser(
        "tools", help="tracked instruments: list them, print their marker sheet"
    )
    sub = tools.add_subparsers(dest="tools_command", metavar="COMMAND", required=True)

    p = sub.add_parser("print", help="render the tools' markers at true scale (PNG or PDF)")
    p.add_argument(
        "names", nargs="*", help="tool names (in tools.dir) or .toml files (default: tools.names)"
    )
    p.add_argument("--out", required=True, help="output .png (with DPI) or .pdf")
    p.add_argument("--dpi", type=int, default=300)
    add_config(p)
    p.set_defaults(func=_print)

    p = sub.add_parser("list", help="the tools configured, their markers and tips")
    add_config(p)
    p.set_defaults(func=_list)


def _print(args: argparse.Namespace) -> int:
    from edge.tools.definition import load_tools
    from edge.tools.sheet import render_tool_sheet

    cfg = config_from(args).tools
    specs = load_tools(tuple(args.names) or cfg.names, cfg.dir)
    out = render_tool_sheet(specs, args.out, dpi=args.dpi)
    count = sum(len(s.markers) for s in specs)
    print(f"wrote {out}: {count} markers of {', '.join(s.name for s in specs)}; print at 100 %")
    return 0


def _list(args: argparse.Namespace) -> int:
    from edge.tools.definition import load_tools

    cfg = config_from(args).tools
    for s in load_tools(cfg.names, cfg.dir):
        sizes = sorted({round(m.size_m * 1000.0, 1) for m in s.markers})
        tip = ", ".join(f"{v:.1f}" for v in s.tip_m * 1000.0)
        print(
            f"{s.name}: {len(s.markers)} markers {s.marker_ids} of {s.dictionary}, "
            f"{'/'.join(f'{x:g}' for x in sizes)} mm; tip [{tip}] mm ({s.tip_source}, "
            f"RMS {s.tip_rms_mm:.2f} mm)"
        )
    return 0
