"""Edge process of the AR heads-up surgical assistant.

One frame flows one way: source -> tracking -> registration -> overlay -> transport.
"""

__version__ = "0.1.0"
