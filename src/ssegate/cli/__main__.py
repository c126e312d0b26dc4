"""``python -m ssegate.cli``: the ``ssegate`` command."""

from . import main

main()
