"""ashat: carry a release from ALPHA through PUBLIC and approval to OMEGA and its fleet."""

__version__ = "0.1.0"
