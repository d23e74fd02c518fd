from sert_tui.cli import main

raise SystemExit(main())
