from engine.pipeline.processes import take_interrupts

take_interrupts()  # first: a job process the app started takes its SIGINT as Ctrl-C

from sert_tui.cli import main  # noqa: E402

raise SystemExit(main())
