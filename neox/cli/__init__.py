"""The ``neox`` command line: one module per subcommand, registered in :mod:`neox.cli.main`."""
