"""dltool: the textbook neural-network training recipe as one readable YAML config."""

__version__ = "0.1.0"
