"""One module per `dltool` command; cli.py imports them lazily."""
