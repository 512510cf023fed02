"""The ``acn`` command line: the parser and exit codes (:mod:`~acn.cli.parser`) over the
commands (:mod:`~acn.cli.commands`), which import the library only when they run, so that
``acn --help`` and ``acn config`` start without torch. Nothing in the library imports this."""

from acn.cli.parser import main

__all__ = ["main"]
