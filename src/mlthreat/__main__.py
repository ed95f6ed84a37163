"""``python -m mlthreat`` runs the command line."""

from mlthreat.cli import main

main()
