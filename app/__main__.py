"""`python -m app` is the `agent-sessions` command."""

from app.cli import main

raise SystemExit(main())
