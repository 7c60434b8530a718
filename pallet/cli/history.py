"""`pallet history IMAGE` (also `pallet image history`): docker's table of the steps
that made an image, newest first, with -q, --no-trunc, -H/--human and --format.

Parses and prints only; the rows are pallet.image.history's.
"""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
           "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}
DEFAULT = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"


def add_parsers(sub: Any) -> None:
    from pallet.cli.containers import add_bool_flag

    p = sub.add_parser("history", help="show the history of an image",
                       description="show the steps that made an image, newest first")
    p.add_argument("--format", default="", help="table (the default), json, 'table "
                   "TEMPLATE' or a Go template, e.g. '{{.ID}}: {{.CreatedBy}}'")
    add_bool_flag(p, "-H", "--human", default=True,
                  help="print sizes and dates in human readable format (default true)")
    add_bool_flag(p, "--no-trunc", help="don't truncate output")
    add_bool_flag(p, "-q", "--quiet", help="only show image IDs")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=cmd_history)


def _ellipsis(s: str, width: int) -> str:
    return s if len(s) <= width else s[:width - 1] + "…"


def _rfc3339(created: str) -> str:
    """docker's CreatedAt: seconds, in the local zone (Z for UTC)."""
    from datetime import datetime

    try:
        head = created.split(".")[0].removesuffix("Z")
        offset = created[len(head):].lstrip(".0123456789") or "Z"
        when = datetime.fromisoformat(head + ("+00:00" if offset == "Z" else offset))
    except ValueError:
        return created
    text = when.astimezone().isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def rows(entries: list[Any], human: bool, no_trunc: bool) -> list[dict[str, str]]:
    import time

    from pallet.cli.images import _human, created_since

    now = time.time()
    out = []
    for e in entries:
        ident = e.id if no_trunc or e.id.startswith("<") else e.id.split(":", 1)[1][:12]
        created_by = e.created_by.replace("\t", " ")
        created_at = _rfc3339(e.created) if e.created else ""
        out.append({
            "ID": ident,
            "CreatedSince": (created_since(e.created, now) if e.created else "N/A")
            if human else created_at,
            "CreatedAt": created_at,
            "CreatedBy": created_by if no_trunc else _ellipsis(created_by, 45),
            "Size": _human(e.size) if human else str(e.size),
            "Comment": e.comment,
        })
    return out


def cmd_history(args: argparse.Namespace) -> int:
    from pallet.cli.template import Template, align, render_table
    from pallet.errors import NotFound, PalletError
    from pallet.image.history import image_history
    from pallet.image.store import ImageStore

    store = ImageStore(args.root)
    try:
        image = store.get(args.image)
    except (NotFound, PalletError):
        print(f"Error: No such image: {args.image}", file=sys.stderr)
        return 1
    table = rows(image_history(store, image), args.human, args.no_trunc)
    fmt = args.format
    if args.quiet and fmt in ("", "table"):
        fmt = "{{.ID}}"
    if fmt in ("", "table"):
        lines = [[HEADERS[k] for k in ("ID", "CreatedSince", "CreatedBy", "Size", "Comment")]]
        lines += [[r[k] for k in ("ID", "CreatedSince", "CreatedBy", "Size", "Comment")]
                  for r in table]
        print(align("\n".join("\t".join(line) for line in lines)))
    elif fmt == "json":
        import json

        for r in table:
            print(json.dumps(r, separators=(",", ":"), ensure_ascii=False))
    elif fmt.startswith(("table ", "table\t")):
        print(render_table(fmt[6:], table, HEADERS))
    else:
        tmpl = Template(fmt, strict=True)
        for r in table:
            print(tmpl.render(r))
    return 0
