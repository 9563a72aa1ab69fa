from smartmon.cli import main

main()
