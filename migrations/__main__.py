"""The alembic command line without an alembic.ini: `python -m migrations <command> ...`.

For developers: `python -m migrations revision --autogenerate -m "add x"` writes a
date-named revision against DATABASE_URL; `current`, `history`, `upgrade` and
`downgrade` work as in alembic. The service itself migrates with app.db.engine.
"""

from __future__ import annotations

import sys

from alembic.config import CommandLine

from app.db.engine import alembic_config


def main(argv: list[str] | None = None) -> None:
    cli = CommandLine(prog="python -m migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    config = alembic_config()
    config.cmd_opts = options
    cli.run_cmd(config, options)


if __name__ == "__main__":
    main(sys.argv[1:])
