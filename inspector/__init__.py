"""The Deployment Inspector application: command line, main window, workers, report export."""

__version__ = "0.1.0"
