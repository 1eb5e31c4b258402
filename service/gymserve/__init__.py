"""gymserve: Gymnasium environments served over HTTP.

Importing it changes nothing in the process: what a server process needs for renders (headless.py) is set where
a server starts, not here.
"""

__version__ = "0.1.0"
