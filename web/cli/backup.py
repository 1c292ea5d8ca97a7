"""`lipameter backup --to FILE` and `lipameter restore --from FILE` (see storage/backup.py)."""

from __future__ import annotations

from pathlib import Path

from storage.backup import BackupError, backup, restore
from web.cli.common import fail, load_settings


def cmd_backup(args) -> None:
    target = Path(args.to)
    if target.exists() and not args.force:
        fail(f"{target} exists; choose another file or pass --force")
    try:
        backup(load_settings().database_url, target)
    except BackupError as error:
        fail(str(error), exit_code=1)
    print(f"backup written to {target}")


def cmd_restore(args) -> None:
    if not args.yes:
        fail("restore replaces every row in the configured database; pass --yes to go ahead")
    try:
        restore(load_settings().database_url, Path(args.source))
    except BackupError as error:
        fail(str(error), exit_code=1)
    print(f"restored from {args.source}; run `lipameter migrate` then `lipameter audit`")


def add_parsers(sub) -> None:
    take = sub.add_parser("backup", help="copy the database to a file (SQLite online backup, or pg_dump)")
    take.add_argument("--to", required=True, metavar="FILE")
    take.add_argument("--force", action="store_true", help="overwrite FILE")
    take.set_defaults(func=cmd_backup)
    back = sub.add_parser("restore", help="replace the database's contents with a backup")
    back.add_argument("--from", dest="source", required=True, metavar="FILE")
    back.add_argument("--yes", action="store_true", help="confirm: the current rows are replaced")
    back.set_defaults(func=cmd_restore)
